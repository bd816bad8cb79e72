/** The web app: a join form, then the call view wired to an LLMRTCClient. */

import { Captions } from './captions';
import {
  type ChatMessage,
  type ConnectionStateName,
  type DeviceKind,
  LLMRTCClient,
  type LLMRTCError,
  type NetworkQuality,
  type ParticipantView,
} from './client';
import { audioContext, LevelMeter, VoiceVisualiser } from './meter';
import type { AgentState, TranscriptMsg } from './protocol';
import { TranscriptView } from './transcript';

/** The token service's rule (signalling/service/validation.py ROOM_NAME). */
export const ROOM_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

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

const AGENT_TEXT: Record<AgentState | 'absent' | 'offline', string> = {
  absent: 'Waiting for the assistant to join…',
  offline: 'Not connected',
  initializing: 'Getting ready…',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Speaking',
};

const NETWORK_TEXT: Record<NetworkQuality['level'], string> = {
  excellent: 'Network: excellent',
  good: 'Network: good',
  poor: 'Network: poor',
  lost: 'Network: connection lost',
  unknown: 'Network: checking…',
};

/** What a person reads for an agent error, by component; `message` (already safe) is the fallback. */
function agentProblem(error: LLMRTCError): string {
  const again = error.detail?.retryable === false ? '' : ' Try again in a moment.';
  switch (error.detail?.component) {
    case 'stt':
      return `The assistant couldn’t hear that: speech recognition isn’t working right now.${again} You can also type.`;
    case 'llm':
      return `The assistant couldn’t answer: its language model isn’t responding.${again}`;
    case 'tts':
      return 'The assistant’s voice isn’t working right now; its answers still appear here as text.';
    default:
      return error.message;
  }
}

class App {
  private client: LLMRTCClient | undefined;
  private readonly transcript = new TranscriptView($<HTMLOListElement>('transcript'));
  private readonly captions = new Captions($('captions'));
  private agentMeter: LevelMeter | undefined;
  private visualiser: VoiceVisualiser | undefined;
  private micMeter: LevelMeter | undefined;
  private names = new Map<string, string>();
  private protocolSeen = false;
  private turnEventsSeen = false;
  private speakingTurn: string | undefined;
  private seq = 0;
  private lastRoom = '';
  private lastName = '';
  /** Local typed messages whose turn has not started (transcript keys), oldest first. */
  private pendingTyped: string[] = [];
  /** Typed before the assistant was in the room: sent when it is. */
  private waitingTyped: { key: string; text: string }[] = [];
  /** Recent typed messages by "identity\ntext": the worker's echo and the lk.chat copy are one entry. */
  private readonly typedKeys = new Map<string, string>();
  private lastSpeechEnd: string | undefined;
  private visionTimer: number | undefined;
  private waitTimer: number | undefined;

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
    for (const id of ['room-input', 'name-input']) {
      $(id).addEventListener('input', () => $(id).removeAttribute('aria-invalid'));
    }
    $('mic-button').addEventListener('click', () => void this.toggle('mic'));
    $('mic-off-on').addEventListener('click', () => void this.toggle('mic'));
    $('camera-button').addEventListener('click', () => void this.toggle('camera'));
    $('screen-button').addEventListener('click', () => void this.toggle('screen'));
    $('devices-button').addEventListener('click', () => void this.toggleDevices());
    $('leave-button').addEventListener('click', () => void this.leave());
    $('rejoin-button').addEventListener('click', () => void this.join(true));
    $('change-room-button').addEventListener('click', () => this.showJoin());
    $('agent-problem-close').addEventListener('click', () => this.problem(''));
    $('stop-button').addEventListener('click', () => void this.stop());
    $<HTMLFormElement>('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      void this.sendText();
    });
    for (const kind of ['audioinput', 'videoinput', 'audiooutput'] as const) {
      $<HTMLSelectElement>(`device-${kind}`).addEventListener('change', (e) => {
        void this.client?.switchDevice(kind, (e.target as HTMLSelectElement).value).then(() => this.refreshControls());
      });
    }
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !$('devices-panel').hidden) {
        void this.toggleDevices(false);
        $('devices-button').focus();
      }
    });
  }

  // ------------------------------------------------------------------------------------------ joining

  private async join(rejoin = false): Promise<void> {
    const roomInput = $<HTMLInputElement>('room-input');
    const nameInput = $<HTMLInputElement>('name-input');
    const room = rejoin ? this.lastRoom : roomInput.value.trim();
    const name = rejoin ? this.lastName : nameInput.value.trim();
    if (!rejoin) {
      if (!ROOM_PATTERN.test(room)) {
        return this.formError(
          room
            ? `“${room}” can’t be a room name. Use 1–64 letters, digits, “_”, “-” or “.”, starting with a letter or digit (for example “team-standup”).`
            : 'Enter a room name, for example “team-standup”. Everyone who enters the same name joins the same room.',
          roomInput,
        );
      }
      if (!name) return this.formError('Enter your name, so others in the room know who is speaking.', nameInput);
    }
    this.formError('');
    localStorage.setItem('llmrtc.name', name);
    audioContext(); // created inside the click, so the browser lets it play
    const button = $<HTMLButtonElement>(rejoin ? 'rejoin-button' : 'join-button');
    const label = button.textContent;
    button.disabled = true;
    button.textContent = rejoin ? 'Rejoining…' : 'Joining…';
    const sameRoom = room === this.lastRoom;
    this.disposeClient();
    const client = this.createClient(!(rejoin || sameRoom));
    try {
      const microphone = $<HTMLInputElement>('mic-on-join').checked;
      await client.join({ room, name, microphone });
      await client.startAudio().catch(() => undefined);
      this.lastRoom = room;
      this.lastName = name;
      if (rejoin || sameRoom) this.transcript.system('Joined the room again', 'info');
      this.showCall(room);
      this.refreshControls();
      $('call-title').focus();
    } catch (err) {
      const error = err as LLMRTCError;
      this.disposeClient();
      if (rejoin) {
        $('ended-title').textContent = 'Could not rejoin';
        $('ended-text').textContent = error.message || 'Could not join the room. Try again in a moment.';
        $('ended-title').focus();
      } else {
        const field = error.detail?.field;
        const input = field === 'room' ? roomInput : field === 'name' ? nameInput : undefined;
        this.formError(error.message || 'Could not join the room. Try again in a moment.', input);
      }
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  private createClient(fresh: boolean): LLMRTCClient {
    const client = new LLMRTCClient({ audioContainer: $('audio-sink') });
    this.client = client;
    (window as unknown as { llmrtc?: LLMRTCClient }).llmrtc = client;
    this.protocolSeen = false;
    this.pendingTyped = [];
    this.waitingTyped = [];
    if (fresh) {
      this.transcript.clear();
      this.typedKeys.clear();
    }
    this.captions.clear();
    this.problem('');

    client.on('stateChange', (state) => this.onConnection(state));
    client.on('reconnecting', (attempt, max) => {
      $('reconnecting-text').textContent = `Connection lost. Reconnecting (attempt ${attempt} of ${max})…`;
    });
    client.on('error', (error) => this.onError(error));
    client.on('participants', (list) => this.renderParticipants(list));
    client.on('agentState', (state) => this.onAgentState(state));
    client.on('networkQuality', (quality) => this.onNetwork(quality));
    client.on('audioPlayback', (playing) => {
      if (!playing) this.toast('Your browser paused the assistant’s audio. Click anywhere to hear it.', 'info');
    });
    client.on('ttsTrack', (_stream, track) => {
      this.agentMeter?.stop();
      this.visualiser?.stop();
      this.agentMeter = new LevelMeter(track.mediaStreamTrack, (level, peak) => {
        const core = $('agent-level');
        core.style.setProperty('--level', Math.min(1, level * 6).toFixed(3));
        core.dataset.peak = peak.toFixed(4);
        this.captions.tick(level);
      });
      const bars = [...$('visualiser').children] as HTMLElement[];
      this.visualiser = new VoiceVisualiser(track.mediaStreamTrack, (bands) => {
        bands.forEach((v, i) => bars[i]?.style.setProperty('--band', v.toFixed(3)));
        $('visualiser').dataset.active = String(bands.some((v) => v > 0.05));
      });
    });
    client.on('message', (event) => {
      this.protocolSeen = true;
      if (event.type === 'turn_start' || event.type === 'turn_end') this.turnEventsSeen = true;
    });

    client.on('transcript', (_text, ev) => this.onTranscript(ev));
    client.on('turnStart', (ev) => {
      if (ev.source === 'text' && ev.participant_identities.includes(client.identity)) this.startPending();
    });
    client.on('llmChunk', (content, ev) => {
      const key = this.turnKey(ev.turn_id);
      this.transcript.appendAssistant(key, this.agentName(), content);
      this.captions.update(key, this.transcript.answer(key));
    });
    client.on('llm', (text, ev) => {
      const key = this.turnKey(ev.turn_id);
      this.transcript.completeAssistant(key, this.agentName(), text);
      this.captions.update(key, text);
      this.problem('');
    });
    client.on('ttsStart', (ev) => {
      const key = this.turnKey(ev.turn_id);
      this.speakingTurn = key;
      this.transcript.speech(key, this.agentName(), 'speaking');
      this.captions.update(key, this.transcript.answer(key));
      this.ttsStatus('Speaking the answer…', 'speaking');
      $<HTMLButtonElement>('stop-button').disabled = false;
    });
    client.on('ttsComplete', (ev) => {
      const key = this.turnKey(ev.turn_id);
      this.transcript.speech(key, this.agentName(), 'spoken');
      this.captions.finish(key);
      this.ttsStatus('Finished speaking', 'complete');
      this.endSpeaking(key);
    });
    client.on('ttsCancelled', (ev) => {
      const key = this.turnKey(ev.turn_id);
      const who = ev.by ? this.displayName(ev.by) : '';
      const note =
        ev.reason === 'barge_in'
          ? `by ${who || 'someone speaking'}`
          : ev.reason === 'stop_request'
            ? `stopped${who ? ` by ${who}` : ''}`
            : ev.reason.replace('_', ' ');
      this.transcript.speech(key, this.agentName(), 'interrupted', note);
      this.transcript.heard(key, this.agentName(), ev.heard_text);
      this.captions.finish(key, ev.heard_text);
      this.ttsStatus(ev.reason === 'stop_request' ? `Stopped${who ? ` by ${who}` : ''}` : `Interrupted ${note}`, 'cancelled');
      this.endSpeaking(key);
    });
    client.on('turnEnd', (ev) => {
      const key = this.turnKey(ev.turn_id);
      if (ev.outcome === 'cancelled' && ev.heard_text !== undefined) {
        this.transcript.heard(key, this.agentName(), ev.heard_text);
        this.captions.finish(key, ev.heard_text);
      } else if (ev.outcome === 'completed') {
        this.captions.finish(key);
        this.problem('');
      }
      this.endSpeaking(key);
    });
    client.on('bargeIn', (ev) =>
      this.ttsStatus(`${this.displayName(ev.participant_identity)} is talking over the answer…`, 'barge-in'),
    );
    client.on('speechEnd', (identity) => {
      this.lastSpeechEnd = identity;
    });
    client.on('vision', (ev) => {
      const local = ev.participant_identity === client.identity;
      const what = ev.source === 'screen_share' ? 'screen' : 'camera';
      const whose = local ? 'your' : `${this.displayName(ev.participant_identity)}’s`;
      const text = `The assistant looked at ${whose} ${what}`;
      const note = $('vision-note');
      note.textContent = text;
      note.dataset.source = ev.source;
      note.hidden = false;
      window.clearTimeout(this.visionTimer);
      this.visionTimer = window.setTimeout(() => (note.hidden = true), 8000);
      this.transcript.system(text, 'vision');
    });
    client.on('stageChange', (ev) =>
      this.transcript.system(`Stage: ${ev.from_stage} → ${ev.to_stage}${ev.reason ? ` (${ev.reason})` : ''}`, 'stage'),
    );
    client.on('toolCall', (ev) =>
      this.transcript.system(`Calling ${ev.name}(${formatArgs(ev.arguments)})`, 'tool', `t:${ev.call_id}`),
    );
    client.on('toolResult', (ev) =>
      this.transcript.system(
        ev.success ? `${ev.name} finished in ${Math.round(ev.duration_ms)} ms` : `${ev.name} failed: ${ev.error ?? 'unknown error'}`,
        ev.success ? 'tool' : 'error',
        `t:${ev.call_id}`,
      ),
    );
    client.on('chat', (msg) => this.onChat(msg));
    client.on('transcription', (seg) => {
      if (this.protocolSeen) return; // the llmrtc events already carry the same words
      const speaker = seg.fromAgent ? this.agentName() : this.displayName(seg.identity);
      if (seg.fromAgent) {
        const key = `${seg.identity}/${seg.segmentId}`;
        this.transcript.completeAssistant(key, speaker, seg.text);
        if (!seg.final) this.transcript.speech(key, speaker, 'speaking');
      } else {
        this.transcript.user(`lk:${seg.segmentId}`, speaker, seg.text, {
          final: seg.final,
          local: this.isLocal(seg.identity),
          typed: false,
        });
      }
    });
    return client;
  }

  /** Answers are keyed by the agent's identity and the turn id: a restarted agent's turn ids never collide. */
  private turnKey(turnId: string): string {
    return `${this.client?.lastSender ?? ''}/${turnId}`;
  }

  private onTranscript(ev: TranscriptMsg): void {
    this.names.set(ev.participant_identity, ev.participant_name);
    const local = this.isLocal(ev.participant_identity);
    const typed = ev.source === 'text';
    const opts = { final: ev.final, local, typed };
    if (typed) {
      const dedupe = `${ev.participant_identity}\n${ev.text}`;
      const known = this.typedKeys.get(dedupe);
      if (known && this.transcript.has(known)) {
        if (this.transcript.status(known) === 'waiting') this.transcript.setStatus(known, 'final');
        this.afterTypedEcho(known, local);
        return;
      }
      const key = `u:${ev.participant_identity}:${++this.seq}`;
      this.typedKeys.set(dedupe, key);
      this.transcript.user(key, ev.participant_name, ev.text, opts);
      this.afterTypedEcho(key, local);
      return;
    }
    // Interim results of one utterance share its segment id and replace each other; the final replaces them.
    const segment = ev.segment_id ?? `${ev.participant_identity}:open`;
    const interimKey = `u:seg:${segment}`;
    const key = ev.final ? (ev.turn_id ? `u:${this.turnKey(ev.turn_id)}:${segment}` : `u:${ev.participant_identity}:${++this.seq}`) : interimKey;
    if (ev.final && this.transcript.has(interimKey)) this.transcript.rekey(interimKey, key);
    this.transcript.user(key, ev.participant_name, ev.text, opts);
  }

  /** A local typed message reached the worker: queued when the assistant is busy with another turn. */
  private afterTypedEcho(key: string, local: boolean): void {
    if (!local) return;
    const busy = this.speakingTurn !== undefined || ['thinking', 'speaking'].includes(this.client?.agentState ?? '');
    if (busy || this.pendingTyped.length) {
      this.pendingTyped.push(key);
      this.transcript.setStatus(key, 'queued');
    }
  }

  /** A turn of the local participant's typed messages started: the oldest queued one is being answered. */
  private startPending(): void {
    const key = this.pendingTyped.shift();
    if (key && this.transcript.status(key) === 'queued') this.transcript.setStatus(key, 'final');
  }

  private onChat(msg: ChatMessage): void {
    const name = msg.fromAgent ? this.agentName() : this.displayName(msg.identity);
    const dedupe = `${msg.identity}\n${msg.text.trim()}`;
    const known = this.typedKeys.get(dedupe);
    if (known && this.transcript.has(known)) return; // the same words, already shown from the llmrtc topic
    const key = `c:${msg.id}`;
    this.typedKeys.set(dedupe, key);
    if (msg.fromAgent) this.transcript.completeAssistant(key, name, msg.text);
    else this.transcript.user(key, name, msg.text, { final: true, local: false, typed: true });
  }

  private endSpeaking(key: string): void {
    if (this.speakingTurn === key) {
      this.speakingTurn = undefined;
      $<HTMLButtonElement>('stop-button').disabled = true;
    }
  }

  private async stop(): Promise<void> {
    const client = this.client;
    if (!client) return;
    try {
      await client.stopSpeaking();
    } catch {
      return; // reported through the client's error event
    }
    // The worker drops the requester's queued turns with the answer: say so on each of them.
    for (const key of this.pendingTyped) this.transcript.setStatus(key, 'dropped', 'stopped');
    this.pendingTyped = [];
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

  // ------------------------------------------------------------------------------------------ states

  private onConnection(state: ConnectionStateName): void {
    const conn = $('connection');
    conn.dataset.state = state;
    this.renderPill();
    $('reconnecting-banner').hidden = state !== 'reconnecting';
    if (state === 'reconnecting') $('reconnecting-text').textContent = 'Connection lost. Reconnecting…';
    const inCall = !$('call-view').hidden;
    if ((state === 'failed' || state === 'closed') && inCall) this.ended(state === 'failed');
    if (state === 'failed' && inCall) {
      this.toast('Lost the connection to the room. Your transcript is kept; choose Rejoin to continue.', 'error');
    }
    $('network').hidden = state !== 'connected' && state !== 'reconnecting';
  }

  private renderPill(): void {
    const conn = $('connection');
    const state = (conn.dataset.state ?? 'disconnected') as ConnectionStateName;
    const degraded = state === 'connected' && conn.dataset.health === 'degraded';
    $('connection-text').textContent = degraded ? 'Connected · assistant has a problem' : CONNECTION_TEXT[state];
  }

  /** The call is over (left or lost): the transcript stays; controls give way to Rejoin. */
  private ended(failed: boolean): void {
    this.setAgent('offline');
    this.captions.clear();
    this.ttsStatus('', '');
    this.transcript.closeOpen(failed ? 'connection lost' : 'you left');
    this.speakingTurn = undefined;
    $<HTMLButtonElement>('stop-button').disabled = true;
    $<HTMLInputElement>('text-input').disabled = true;
    $<HTMLButtonElement>('send-button').disabled = true;
    $('wait-notice').hidden = true;
    $('mic-off').hidden = true;
    $('devices-panel').hidden = true;
    $('controls').hidden = true;
    $('ended').hidden = false;
    $('call-view').dataset.ended = failed ? 'failed' : 'left';
    $('ended-title').textContent = failed ? 'Connection lost' : 'You left the room';
    $('ended-text').textContent = failed
      ? 'The connection to the room could not be restored. Your transcript is kept; Rejoin when you are back online.'
      : 'Your transcript stays here until you join another room.';
    for (const key of [...this.pendingTyped, ...this.waitingTyped.map((w) => w.key)]) {
      this.transcript.setStatus(key, 'dropped', failed ? 'connection lost' : 'left');
    }
    this.pendingTyped = [];
    this.waitingTyped = [];
    this.renderParticipants([]);
    this.disposeMeters();
    this.problem('');
  }

  private setAgent(state: AgentState | 'absent' | 'offline'): void {
    $('agent').dataset.state = state;
    $('agent-state').textContent = AGENT_TEXT[state];
    if (state === 'offline' || state === 'absent') $('visualiser').dataset.active = 'false';
  }

  private onAgentState(state: AgentState): void {
    this.setAgent(state);
    $('agent-name').textContent = this.agentName();
    if (state === 'thinking' && !this.turnEventsSeen && this.pendingTyped.length && this.speakingTurn === undefined) {
      this.startPending(); // a worker without turn_start: the next turn is the oldest queued message
    }
    if (state === 'listening' || state === 'thinking' || state === 'speaking') {
      $('wait-notice').hidden = true;
      void this.flushWaiting();
    }
  }

  private onNetwork(quality: NetworkQuality): void {
    const el = $('network');
    el.dataset.level = quality.level;
    el.dataset.source = quality.source;
    const detail = quality.rttMs !== undefined ? ` (${quality.rttMs} ms round trip)` : '';
    $('network-text').textContent = NETWORK_TEXT[quality.level];
    el.title = `${NETWORK_TEXT[quality.level]}${detail}`;
  }

  private ttsStatus(text: string, kind: string): void {
    const el = $('tts-status');
    el.textContent = text;
    el.dataset.kind = kind;
  }

  private onError(error: LLMRTCError): void {
    if (error.code === 'token_failed' || error.code === 'connect_failed') return; // shown on the join form
    if (error.code === 'disconnected') return; // the failure screen and its one toast say it
    if (error.code === 'protocol') return; // logged by the client; nothing a person can do
    if (error.code === 'agent') return this.onAgentError(error);
    this.toast(error.message, 'error');
  }

  /** The agent's error: a friendly notice; the user's words stay; the turn's answer says it failed. */
  private onAgentError(error: LLMRTCError): void {
    const text = agentProblem(error);
    this.problem(text, error.detail?.component);
    const turn = error.detail?.turnId;
    if (turn) this.transcript.failed(this.turnKey(turn), this.agentName(), 'something went wrong');
    if (error.detail?.component === 'stt' && this.lastSpeechEnd) {
      const who = this.lastSpeechEnd;
      this.transcript.user(`u:lost:${++this.seq}`, this.displayName(who), '(not transcribed)', {
        final: true,
        local: this.isLocal(who),
        typed: false,
      });
      this.transcript.setStatus(`u:lost:${this.seq}`, 'failed', 'speech recognition failed');
      this.lastSpeechEnd = undefined;
    }
  }

  /** The assistant's problem notice (empty: none); the pill says the assistant has a problem meanwhile. */
  private problem(text: string, component?: string): void {
    const box = $('agent-problem');
    $('agent-problem-text').textContent = text;
    box.hidden = !text;
    box.dataset.component = component ?? '';
    $('connection').dataset.health = text ? 'degraded' : 'ok';
    this.renderPill();
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
        li.dataset.muted = String(!p.isAgent && p.microphoneMuted);
        const avatar = document.createElement('span');
        avatar.className = 'avatar';
        avatar.setAttribute('aria-hidden', 'true');
        avatar.textContent = initials(p.name);
        const name = document.createElement('span');
        name.className = 'participant-name';
        name.textContent = p.isLocal ? `${p.name} (you)` : p.name;
        name.title = name.textContent;
        const status = document.createElement('span');
        status.className = 'participant-status';
        status.textContent = p.speaking
          ? 'speaking'
          : p.isAgent
            ? (p.agentState ?? 'assistant')
            : p.microphoneMuted
              ? 'muted'
              : '';
        li.append(avatar, name, status);
        if (p.isAgent) this.names.set(p.identity, p.name);
        return li;
      }),
    );
    $('people-count').textContent = list.length ? `(${list.length})` : '';
    const connected = this.client?.state === 'connected' || this.client?.state === 'reconnecting';
    if (!connected) return;
    if (!list.some((p) => p.isAgent)) this.setAgent('absent');
    const me = list.find((p) => p.isLocal);
    if (me?.speaking && !list.some((p) => p.isAgent)) this.speakingWhileAbsent();
  }

  /** Speech while the assistant is not in the room would be lost: say so, and what to do. */
  private speakingWhileAbsent(): void {
    const note = $('wait-notice');
    note.textContent =
      'The assistant hasn’t joined yet, so it didn’t hear that. Wait until it says “Listening”, then speak again (typed messages are sent as soon as it joins).';
    note.hidden = false;
    window.clearTimeout(this.waitTimer);
    this.waitTimer = window.setTimeout(() => (note.hidden = true), 12000);
  }

  // ------------------------------------------------------------------------------------------ controls

  private async toggle(what: 'mic' | 'camera' | 'screen'): Promise<void> {
    const client = this.client;
    if (!client) return;
    if (what === 'mic') await client.setMicrophoneEnabled(!client.microphoneEnabled);
    if (what === 'camera') await client.setCameraEnabled(!client.cameraEnabled);
    if (what === 'screen') await client.setScreenShareEnabled(!client.screenShareEnabled);
    this.refreshControls();
  }

  private async toggleDevices(open?: boolean): Promise<void> {
    const panel = $('devices-panel');
    const show = open ?? panel.hidden;
    panel.hidden = !show;
    $('devices-button').setAttribute('aria-expanded', String(show));
    if (show) await this.fillDevices();
  }

  private async fillDevices(): Promise<void> {
    const client = this.client;
    if (!client) return;
    for (const kind of ['audioinput', 'videoinput', 'audiooutput'] as DeviceKind[]) {
      const select = $<HTMLSelectElement>(`device-${kind}`);
      const devices = (await client.listDevices(kind)).filter((d) => d.deviceId);
      const active = client.activeDevice(kind) ?? 'default';
      const options = devices.map((d, i) => {
        const option = document.createElement('option');
        option.value = d.deviceId;
        option.textContent = d.label || `${kind === 'audiooutput' ? 'Speaker' : kind === 'audioinput' ? 'Microphone' : 'Camera'} ${i + 1}`;
        option.selected = d.deviceId === active;
        return option;
      });
      if (!options.length) {
        const option = document.createElement('option');
        option.value = '';
        option.textContent = kind === 'audiooutput' ? 'System default (this browser cannot choose)' : 'None found';
        options.push(option);
      }
      select.replaceChildren(...options);
      select.disabled = devices.length === 0;
    }
  }

  private refreshControls(): void {
    const client = this.client;
    if (!client) return;
    const mic = $('mic-button');
    const on = client.microphoneEnabled;
    mic.setAttribute('aria-pressed', String(on));
    mic.dataset.muted = String(!on);
    mic.querySelector('.ctl-label')!.textContent = on ? 'Mute' : 'Unmute';
    $('mic-off').hidden = on || client.state !== 'connected';
    $('camera-button').setAttribute('aria-pressed', String(client.cameraEnabled));
    $('camera-button').querySelector('.ctl-label')!.textContent = client.cameraEnabled ? 'Stop camera' : 'Camera';
    $('screen-button').setAttribute('aria-pressed', String(client.screenShareEnabled));
    $('screen-button').querySelector('.ctl-label')!.textContent = client.screenShareEnabled ? 'Stop sharing' : 'Share screen';
    this.renderPreviews();
    this.micMeter?.stop();
    this.micMeter = undefined;
    const micTrack = client.room.localParticipant.getTrackPublications().find((p) => p.kind === 'audio')?.track;
    if (on && micTrack) {
      let loud = 0;
      this.micMeter = new LevelMeter(micTrack.mediaStreamTrack, (level) => {
        $('mic-level').style.setProperty('--level', Math.min(1, level * 8).toFixed(3));
        loud = level > 0.02 ? loud + 1 : 0;
        // About a quarter of a second of speech with no assistant in the room: it would be lost.
        if (loud === 3 && client.state === 'connected' && !client.agentIdentity) this.speakingWhileAbsent();
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
    const text = input.value.trim();
    const client = this.client;
    if (!text || !client) return;
    if (!client.agentIdentity) {
      // No assistant in the room yet: keep the message and send it when it joins.
      const key = `u:wait:${++this.seq}`;
      this.transcript.user(key, this.lastName, text, { final: true, local: true, typed: true });
      this.transcript.setStatus(key, 'waiting');
      this.typedKeys.set(`${client.identity}\n${text}`, key);
      this.waitingTyped.push({ key, text });
      input.value = '';
      return;
    }
    try {
      await client.sendText(text);
      input.value = '';
    } catch {
      /* reported through the client's error event */
    }
  }

  private async flushWaiting(): Promise<void> {
    const client = this.client;
    while (client && this.waitingTyped.length && client.state === 'connected') {
      const next = this.waitingTyped.shift()!;
      try {
        await client.sendText(next.text);
      } catch {
        this.transcript.setStatus(next.key, 'dropped', 'could not be sent');
      }
    }
  }

  private async leave(): Promise<void> {
    await this.client?.leave();
  }

  private disposeMeters(): void {
    this.agentMeter?.stop();
    this.visualiser?.stop();
    this.micMeter?.stop();
    this.agentMeter = this.visualiser = this.micMeter = undefined;
  }

  private disposeClient(): void {
    this.disposeMeters();
    this.client?.removeAllListeners();
    this.client = undefined;
  }

  private showCall(room: string): void {
    $('join-view').hidden = true;
    $('call-view').hidden = false;
    $('ended').hidden = true;
    $('controls').hidden = false;
    delete $('call-view').dataset.ended;
    $<HTMLInputElement>('text-input').disabled = false;
    $<HTMLButtonElement>('send-button').disabled = false;
    const label = $('room-label');
    label.textContent = room;
    label.title = room;
    label.hidden = false;
    $('call-title').textContent = `Conversation in room ${room}`;
    const url = new URL(location.href);
    url.searchParams.set('room', room);
    history.replaceState(null, '', url);
  }

  private showJoin(): void {
    this.disposeClient();
    $('call-view').hidden = true;
    $('join-view').hidden = false;
    $('room-label').hidden = true;
    $('connection').dataset.state = 'disconnected';
    this.renderPill();
    $('room-input').focus();
  }

  private formError(message: string, focus?: HTMLInputElement): void {
    const el = $('join-error');
    el.textContent = message;
    el.hidden = !message;
    for (const id of ['room-input', 'name-input']) {
      const input = $(id);
      const invalid = !!message && input === focus;
      if (invalid) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
      const described = (input.getAttribute('aria-describedby') ?? '').split(' ').filter((d) => d && d !== 'join-error');
      if (invalid) described.push('join-error');
      if (described.length) input.setAttribute('aria-describedby', described.join(' '));
      else input.removeAttribute('aria-describedby');
    }
    focus?.focus();
  }

  private toast(message: string, kind: 'error' | 'info'): void {
    const box = $('toasts');
    for (const old of box.children) if (old.firstChild?.textContent === message) old.remove(); // no duplicates
    const el = document.createElement('div');
    el.className = `toast toast-${kind}`;
    const text = document.createElement('span');
    text.textContent = message;
    el.appendChild(text);
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast-close';
    close.setAttribute('aria-label', 'Dismiss');
    close.textContent = '×';
    close.addEventListener('click', () => el.remove());
    el.appendChild(close);
    box.appendChild(el);
    while (box.children.length > 3) box.firstElementChild?.remove();
    window.setTimeout(() => el.remove(), kind === 'error' ? 12000 : 8000);
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
