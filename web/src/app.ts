/** The web app: a join form, then the call view wired to an LLMRTCClient. */

import { type ConnectionStateName, LLMRTCClient, type LLMRTCError, type ParticipantView } from './client';
import { audioContext, LevelMeter } from './meter';
import type { AgentState } from './protocol';
import { TranscriptView } from './transcript';

const ROOM_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
}

const CONNECTION_TEXT: Record<ConnectionStateName, string> = {
  disconnected: 'Not connected',
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  failed: 'Connection failed',
  closed: 'Left the room',
};

const AGENT_TEXT: Record<AgentState | 'absent', string> = {
  absent: 'Waiting for the assistant to join…',
  initializing: 'Getting ready…',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Speaking',
};

class App {
  private client: LLMRTCClient | undefined;
  private readonly transcript = new TranscriptView($<HTMLOListElement>('transcript'));
  private agentMeter: LevelMeter | undefined;
  private micMeter: LevelMeter | undefined;
  private names = new Map<string, string>();
  private protocolSeen = false;
  private speakingTurn: string | undefined;
  private seq = 0;

  constructor() {
    const params = new URLSearchParams(location.search);
    const room = params.get('room');
    const name = params.get('name') ?? localStorage.getItem('llmrtc.name');
    if (room) $<HTMLInputElement>('room-input').value = room;
    if (name) $<HTMLInputElement>('name-input').value = name;
    $<HTMLFormElement>('join-form').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.join();
    });
    $('mic-button').addEventListener('click', () => void this.toggle('mic'));
    $('camera-button').addEventListener('click', () => void this.toggle('camera'));
    $('screen-button').addEventListener('click', () => void this.toggle('screen'));
    $('leave-button').addEventListener('click', () => void this.leave());
    $('stop-button').addEventListener('click', () => void this.client?.stopSpeaking().catch(() => undefined));
    $<HTMLFormElement>('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.sendText();
    });
  }

  private async join(): Promise<void> {
    const roomInput = $<HTMLInputElement>('room-input');
    const nameInput = $<HTMLInputElement>('name-input');
    const room = roomInput.value.trim();
    const name = nameInput.value.trim();
    if (!ROOM_PATTERN.test(room)) return this.formError('Enter a room name of letters, digits, “_”, “-” or “.”.', roomInput);
    if (!name) return this.formError('Enter your name so others know who is speaking.', nameInput);
    this.formError('');
    localStorage.setItem('llmrtc.name', name);
    audioContext(); // created inside the click, so the browser lets it play
    const button = $<HTMLButtonElement>('join-button');
    button.disabled = true;
    button.textContent = 'Joining…';
    const client = this.createClient();
    try {
      const microphone = $<HTMLInputElement>('mic-on-join').checked;
      await client.join({ room, name, microphone });
      await client.startAudio().catch(() => undefined);
      this.showCall(room);
      this.refreshControls();
    } catch (err) {
      this.formError((err as Error).message || 'Could not join the room.');
      this.disposeClient();
    } finally {
      button.disabled = false;
      button.textContent = 'Join room';
    }
  }

  private createClient(): LLMRTCClient {
    const client = new LLMRTCClient({ audioContainer: $('audio-sink') });
    this.client = client;
    (window as unknown as { llmrtc?: LLMRTCClient }).llmrtc = client;
    this.protocolSeen = false;
    this.transcript.clear();

    client.on('stateChange', (state) => this.onConnection(state));
    client.on('reconnecting', (attempt, max) => {
      $('reconnecting-text').textContent = `Connection lost. Reconnecting (attempt ${attempt} of ${max})…`;
    });
    client.on('error', (error) => this.onError(error));
    client.on('participants', (list) => this.renderParticipants(list));
    client.on('agentState', (state) => this.onAgentState(state));
    client.on('audioPlayback', (playing) => {
      if (!playing) this.toast('Your browser paused the assistant’s audio. Click anywhere to hear it.', 'info');
    });
    client.on('ttsTrack', (_stream, track) => {
      this.agentMeter?.stop();
      this.agentMeter = new LevelMeter(track.mediaStreamTrack, (level, peak) => {
        const core = $('agent-level');
        core.style.setProperty('--level', Math.min(1, level * 6).toFixed(3));
        core.dataset.peak = peak.toFixed(4);
      });
    });
    client.on('message', () => {
      this.protocolSeen = true;
    });

    client.on('transcript', (text, ev) => {
      this.names.set(ev.participant_identity, ev.participant_name);
      const opts = { final: ev.final, local: this.isLocal(ev.participant_identity), typed: ev.source === 'text' };
      const partialKey = `u:${ev.participant_identity}:partial`;
      const key = ev.turn_id ? `u:${ev.turn_id}` : ev.final ? `u:${ev.participant_identity}:${++this.seq}` : partialKey;
      if (ev.final && this.transcript.has(partialKey)) this.transcript.rekey(partialKey, key);
      this.transcript.user(key, ev.participant_name, text, opts);
    });
    client.on('llmChunk', (content, ev) => this.transcript.appendAssistant(ev.turn_id, this.agentName(), content));
    client.on('llm', (text, ev) => this.transcript.completeAssistant(ev.turn_id, this.agentName(), text));
    client.on('ttsStart', (ev) => {
      this.speakingTurn = ev.turn_id;
      this.transcript.speech(ev.turn_id, this.agentName(), 'speaking');
      this.ttsStatus('Speaking the answer…', 'speaking');
      $<HTMLButtonElement>('stop-button').disabled = false;
    });
    client.on('ttsComplete', (ev) => {
      this.transcript.speech(ev.turn_id, this.agentName(), 'spoken');
      this.ttsStatus('Finished speaking', 'complete');
      this.endSpeaking(ev.turn_id);
    });
    client.on('ttsCancelled', (ev) => {
      const who = ev.by ? this.displayName(ev.by) : '';
      const note =
        ev.reason === 'barge_in' ? `by ${who || 'someone speaking'}` : ev.reason === 'stop_request' ? `stopped${who ? ` by ${who}` : ''}` : ev.reason.replace('_', ' ');
      this.transcript.speech(ev.turn_id, this.agentName(), 'interrupted', note);
      this.ttsStatus(`Interrupted ${note}`, 'cancelled');
      this.endSpeaking(ev.turn_id);
    });
    client.on('bargeIn', (ev) => this.ttsStatus(`${this.displayName(ev.participant_identity)} is talking over the answer…`, 'barge-in'));
    client.on('stageChange', (ev) =>
      this.transcript.system(`Stage: ${ev.from_stage} → ${ev.to_stage}${ev.reason ? ` (${ev.reason})` : ''}`, 'stage'),
    );
    client.on('toolCall', (ev) => this.transcript.system(`Calling ${ev.name}(${formatArgs(ev.arguments)})`, 'tool', `t:${ev.call_id}`));
    client.on('toolResult', (ev) =>
      this.transcript.system(
        ev.success
          ? `${ev.name} finished in ${Math.round(ev.duration_ms)} ms`
          : `${ev.name} failed: ${ev.error ?? 'unknown error'}`,
        ev.success ? 'tool' : 'error',
        `t:${ev.call_id}`,
      ),
    );
    client.on('transcription', (seg) => {
      if (this.protocolSeen) return; // the llmrtc events already carry the same words
      const speaker = seg.fromAgent ? this.agentName() : this.displayName(seg.identity);
      if (seg.fromAgent) {
        this.transcript.completeAssistant(seg.segmentId, speaker, seg.text);
        if (!seg.final) this.transcript.speech(seg.segmentId, speaker, 'speaking');
      } else {
        this.transcript.user(`lk:${seg.segmentId}`, speaker, seg.text, { final: seg.final, local: this.isLocal(seg.identity), typed: false });
      }
    });
    return client;
  }

  private endSpeaking(turn: string): void {
    if (this.speakingTurn === turn) {
      this.speakingTurn = undefined;
      $<HTMLButtonElement>('stop-button').disabled = true;
    }
  }

  private isLocal(identity: string): boolean {
    return identity === this.client?.identity;
  }

  private agentName(): string {
    const agent = this.client?.participants().find((p) => p.isAgent);
    return agent?.name || 'Assistant';
  }

  private displayName(identity: string): string {
    const known = this.client?.participants().find((p) => p.identity === identity);
    return known?.name || this.names.get(identity) || identity;
  }

  private onConnection(state: ConnectionStateName): void {
    const conn = $('connection');
    conn.dataset.state = state;
    $('connection-text').textContent = CONNECTION_TEXT[state];
    $('reconnecting-banner').hidden = state !== 'reconnecting';
    if (state === 'reconnecting') $('reconnecting-text').textContent = 'Connection lost. Reconnecting…';
    if (state === 'failed' && !$('call-view').hidden) this.toast('The connection to the room was lost.', 'error');
  }

  private onAgentState(state: AgentState): void {
    $('agent').dataset.state = state;
    $('agent-state').textContent = AGENT_TEXT[state];
    $('agent-name').textContent = this.agentName();
  }

  private ttsStatus(text: string, kind: string): void {
    const el = $('tts-status');
    el.textContent = text;
    el.dataset.kind = kind;
  }

  private onError(error: LLMRTCError): void {
    if (error.code === 'token_failed' || error.code === 'connect_failed') return; // shown on the join form
    if (error.code === 'agent') this.transcript.system(`The assistant reported a problem: ${error.message}`, 'error');
    this.toast(error.message, 'error');
  }

  private renderParticipants(list: ParticipantView[]): void {
    const ul = $('participants');
    ul.replaceChildren(
      ...list.map((p) => {
        const li = document.createElement('li');
        li.className = 'participant';
        li.dataset.identity = p.identity;
        li.dataset.speaking = String(p.speaking);
        li.dataset.agent = String(p.isAgent);
        const avatar = document.createElement('span');
        avatar.className = 'avatar';
        avatar.setAttribute('aria-hidden', 'true');
        avatar.textContent = initials(p.name);
        const name = document.createElement('span');
        name.className = 'participant-name';
        name.textContent = p.isLocal ? `${p.name} (you)` : p.name;
        const status = document.createElement('span');
        status.className = 'participant-status';
        status.textContent = p.speaking
          ? 'speaking'
          : p.isAgent
            ? p.agentState ?? 'assistant'
            : p.microphoneMuted
              ? 'muted'
              : '';
        li.append(avatar, name, status);
        if (p.isAgent) this.names.set(p.identity, p.name);
        return li;
      }),
    );
    if (!list.some((p) => p.isAgent)) {
      $('agent').dataset.state = 'absent';
      $('agent-state').textContent = AGENT_TEXT.absent;
    }
  }

  private async toggle(what: 'mic' | 'camera' | 'screen'): Promise<void> {
    const client = this.client;
    if (!client) return;
    if (what === 'mic') await client.setMicrophoneEnabled(!client.microphoneEnabled);
    if (what === 'camera') await client.setCameraEnabled(!client.cameraEnabled);
    if (what === 'screen') await client.setScreenShareEnabled(!client.screenShareEnabled);
    this.refreshControls();
  }

  private refreshControls(): void {
    const client = this.client;
    if (!client) return;
    const mic = $('mic-button');
    mic.setAttribute('aria-pressed', String(client.microphoneEnabled));
    mic.querySelector('.ctl-label')!.textContent = client.microphoneEnabled ? 'Mute' : 'Unmute';
    $('camera-button').setAttribute('aria-pressed', String(client.cameraEnabled));
    $('screen-button').setAttribute('aria-pressed', String(client.screenShareEnabled));
    $('screen-button').querySelector('.ctl-label')!.textContent = client.screenShareEnabled ? 'Stop sharing' : 'Share screen';
    this.renderPreviews();
    this.micMeter?.stop();
    this.micMeter = undefined;
    const micTrack = client.room.localParticipant.getTrackPublications().find((p) => p.kind === 'audio')?.track;
    if (client.microphoneEnabled && micTrack) {
      this.micMeter = new LevelMeter(micTrack.mediaStreamTrack, (level) => {
        $('mic-level').style.setProperty('--level', Math.min(1, level * 8).toFixed(3));
      });
    } else {
      $('mic-level').style.setProperty('--level', '0');
    }
  }

  private renderPreviews(): void {
    const client = this.client;
    const box = $('previews');
    box.replaceChildren();
    if (!client) return;
    for (const pub of client.room.localParticipant.getTrackPublications()) {
      if (pub.kind !== 'video' || !pub.track || pub.isMuted) continue;
      const figure = document.createElement('figure');
      figure.className = 'preview';
      const video = pub.track.attach() as HTMLVideoElement;
      video.muted = true;
      video.setAttribute('aria-label', pub.source === 'screen_share' ? 'Your shared screen' : 'Your camera');
      const caption = document.createElement('figcaption');
      caption.textContent = pub.source === 'screen_share' ? 'Your screen' : 'Your camera';
      figure.append(video, caption);
      box.appendChild(figure);
    }
  }

  private async sendText(): Promise<void> {
    const input = $<HTMLInputElement>('text-input');
    const text = input.value;
    if (!text.trim() || !this.client) return;
    try {
      await this.client.sendText(text);
      input.value = '';
    } catch {
      /* reported through the client's error event */
    }
  }

  private async leave(): Promise<void> {
    await this.client?.leave();
    this.disposeClient();
    $('call-view').hidden = true;
    $('join-view').hidden = false;
    $('room-label').hidden = true;
  }

  private disposeClient(): void {
    this.agentMeter?.stop();
    this.micMeter?.stop();
    this.agentMeter = this.micMeter = undefined;
    this.client?.removeAllListeners();
    this.client = undefined;
  }

  private showCall(room: string): void {
    $('join-view').hidden = true;
    $('call-view').hidden = false;
    const label = $('room-label');
    label.textContent = room;
    label.hidden = false;
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    history.replaceState(null, '', url);
  }

  private formError(message: string, focus?: HTMLInputElement): void {
    const el = $('join-error');
    el.textContent = message;
    el.hidden = !message;
    focus?.focus();
  }

  private toast(message: string, kind: 'error' | 'info'): void {
    const box = $('toasts');
    const el = document.createElement('div');
    el.className = `toast toast-${kind}`;
    el.textContent = message;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    close.addEventListener('click', () => el.remove());
    el.appendChild(close);
    box.appendChild(el);
    while (box.children.length > 4) box.firstElementChild?.remove();
    window.setTimeout(() => el.remove(), 8000);
  }
}

function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : name.slice(0, 2)).toUpperCase();
}

function formatArgs(args: Record<string, unknown>): string {
  const text = Object.entries(args)
    .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

new App();
