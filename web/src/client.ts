/**
 * LLMRTCClient: a small client on top of livekit-client that joins a room with the llmrtc agent and emits the
 * events of the reference LLMRTCWebClient (transcript, llmChunk, llm, ttsStart, ttsComplete, ttsCancelled,
 * speechStart, speechEnd, stateChange, reconnecting, error) from the worker's data messages, so an app written
 * for LLMRTC keeps its handlers. It also reads LiveKit's own `lk.transcription` text streams and the
 * `lk.agent.state` attribute.
 */

import {
  ConnectionQuality,
  ConnectionState,
  DisconnectReason,
  type Participant,
  type ReconnectContext,
  type ReconnectPolicy,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  Room,
  RoomEvent,
  type RoomOptions,
  Track,
  type TextStreamReader,
} from 'livekit-client';
import { ConnectionHealth, type NetworkQuality } from './network';

import { Emitter } from './emitter';
import {
  ATTR_AGENT_STATE,
  ATTR_FINAL,
  ATTR_SEGMENT_ID,
  type AgentState,
  type BargeInMsg,
  type ClientMessage,
  encodeClientMessage,
  isAgentState,
  type LLMChunkMsg,
  type LLMMsg,
  parseServerEvent,
  ProtocolError,
  type ServerEvent,
  type SpeechEndMsg,
  type SpeechStartMsg,
  type StageChangeMsg,
  stopSpeaking,
  textInput,
  TOPIC,
  TOPIC_CHAT,
  TOPIC_TRANSCRIPTION,
  type ToolCallMsg,
  type ToolResultMsg,
  type TranscriptMsg,
  type TTSCancelledMsg,
  type TTSCompleteMsg,
  type TTSStartMsg,
  type TurnEndMsg,
  type TurnStartMsg,
  type VisionMsg,
} from './protocol';

export type { NetworkQuality } from './network';

/** The connection states of the reference client. */
export type ConnectionStateName = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed';

export type ErrorCode =
  | 'token_failed'
  | 'connect_failed'
  | 'media_failed'
  | 'send_failed'
  | 'protocol'
  | 'agent'
  | 'disconnected';

export interface ErrorDetail {
  /** The worker's error code (`agent` errors). */
  agentCode?: string;
  turnId?: string;
  /** Where the agent's error came from: stt, llm, tts, tool, worker, protocol. */
  component?: string;
  /** Whether trying again (saying it again) may work. */
  retryable?: boolean;
  /** The token service's `error.field` (the request field it refused) and HTTP status. */
  field?: string;
  status?: number;
  /** livekit-client's disconnect reason, for logs (never shown as such). */
  reason?: string;
  cause?: unknown;
}

/** Every error the client reports: a stable `code` and a message a person can act on. */
export class LLMRTCError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: ErrorDetail,
  ) {
    super(message);
    this.name = 'LLMRTCError';
  }
}

export interface ReconnectionOptions {
  /** Reconnect after a dropped connection (default true). */
  enabled?: boolean;
  maxRetries?: number;
  /** First delay in ms; doubles each attempt up to maxDelay. */
  baseDelay?: number;
  maxDelay?: number;
}

export interface LLMRTCClientOptions {
  /** Where `join` asks for a room token (default `/api/token`, the token service). */
  tokenEndpoint?: string;
  /** Extra headers for the token request (for example a session cookie's CSRF header). */
  tokenHeaders?: Record<string, string>;
  reconnection?: ReconnectionOptions;
  /** Element that holds the hidden <audio> elements of remote participants (default document.body). */
  audioContainer?: HTMLElement;
  /**
   * Publish camera and screen in simulcast layers (default false: the agent takes one layer, and the
   * development server forwards no simulcast). Turn on for big rooms on a real LiveKit server.
   */
  simulcast?: boolean;
  /** Passed to livekit-client's Room. */
  roomOptions?: RoomOptions;
}

export interface JoinOptions {
  room: string;
  name?: string;
  identity?: string;
  metadata?: string;
  /** Publish the microphone right after joining (default true). */
  microphone?: boolean;
}

/** The token service's answer (POST /api/token). */
export interface TokenResponse {
  url: string;
  token: string;
  room: string;
  identity: string;
  expires_in: number;
}

export interface ParticipantView {
  identity: string;
  name: string;
  isLocal: boolean;
  isAgent: boolean;
  speaking: boolean;
  microphoneMuted: boolean;
  agentState?: AgentState;
}

/** A chat message on LiveKit's `lk.chat` text stream (another app, a plain LiveKit agent, another person). */
export interface ChatMessage {
  id: string;
  identity: string;
  text: string;
  fromAgent: boolean;
}

export type DeviceKind = 'audioinput' | 'videoinput' | 'audiooutput';

/** A LiveKit `lk.transcription` segment; `text` is the whole segment so far. */
export interface TranscriptionSegment {
  segmentId: string;
  identity: string;
  text: string;
  final: boolean;
  fromAgent: boolean;
}

export interface LLMRTCEvents {
  transcript: (text: string, event: TranscriptMsg) => void;
  llmChunk: (content: string, event: LLMChunkMsg) => void;
  llm: (text: string, event: LLMMsg) => void;
  ttsStart: (event: TTSStartMsg) => void;
  ttsComplete: (event: TTSCompleteMsg) => void;
  ttsCancelled: (event: TTSCancelledMsg) => void;
  bargeIn: (event: BargeInMsg) => void;
  speechStart: (identity: string, event: SpeechStartMsg) => void;
  speechEnd: (identity: string, event: SpeechEndMsg) => void;
  stageChange: (event: StageChangeMsg) => void;
  toolCall: (event: ToolCallMsg) => void;
  toolResult: (event: ToolResultMsg) => void;
  turnStart: (event: TurnStartMsg) => void;
  /** The one terminal event of every turn: completed, cancelled (with `heard_text`) or error. */
  turnEnd: (event: TurnEndMsg) => void;
  /** The agent looked at someone's camera or screen. */
  vision: (event: VisionMsg) => void;
  /** Every valid worker message, before the specific event; `sender` is the agent's identity. */
  message: (event: ServerEvent, sender: string) => void;
  /** A message on LiveKit's `lk.chat` text stream from another participant. */
  chat: (message: ChatMessage) => void;
  /** The local connection's quality: LiveKit's own when the server reports it, else measured here. */
  networkQuality: (quality: NetworkQuality) => void;
  stateChange: (state: ConnectionStateName) => void;
  agentState: (state: AgentState) => void;
  reconnecting: (attempt: number, maxAttempts: number) => void;
  reconnected: () => void;
  /** The agent's audio (the reference's ttsTrack): already playing; use the stream for meters. */
  ttsTrack: (stream: MediaStream, track: RemoteTrack) => void;
  participants: (participants: ParticipantView[]) => void;
  transcription: (segment: TranscriptionSegment) => void;
  /** False when the browser blocked autoplay: call `startAudio()` from a click. */
  audioPlayback: (playing: boolean) => void;
  error: (error: LLMRTCError) => void;
}

// 12 attempts over about 18 s, never more than 2 s apart: back within ~2 s of the server.
const DEFAULT_RECONNECTION: Required<ReconnectionOptions> = {
  enabled: true,
  maxRetries: 12,
  baseDelay: 300,
  maxDelay: 2000,
};

/** Backoff policy that also tells the client which attempt is next. */
class CountingReconnectPolicy implements ReconnectPolicy {
  constructor(
    private readonly options: Required<ReconnectionOptions>,
    private readonly onAttempt: (attempt: number, max: number) => void,
  ) {}

  nextRetryDelayInMs(context: ReconnectContext): number | null {
    const { enabled, maxRetries, baseDelay, maxDelay } = this.options;
    if (!enabled || context.retryCount >= maxRetries) return null;
    this.onAttempt(context.retryCount + 1, maxRetries);
    return context.retryCount === 0 ? 0 : Math.min(maxDelay, baseDelay * 2 ** (context.retryCount - 1));
  }
}

const DEVICE_NAMES: Record<DeviceKind, string> = {
  audioinput: 'microphone',
  videoinput: 'camera',
  audiooutput: 'speaker',
};

/** What a person reads when the room connection ends without them leaving (the raw reason goes to detail). */
const DISCONNECT_TEXT: Record<string, string> = {
  default: 'Lost the connection to the room and could not get it back.',
  PARTICIPANT_REMOVED: 'You were removed from the room.',
  ROOM_DELETED: 'The room was closed.',
  DUPLICATE_IDENTITY: 'You joined this room from another tab or device, so this one was disconnected.',
  SERVER_SHUTDOWN: 'The server shut down.',
  JOIN_FAILURE: 'Could not rejoin the room.',
};

/** A participant's name; an agent without a name of its own (name empty or equal to its identity) is "Assistant". */
export function displayName(p: Participant): string {
  if (p.isAgent && (!p.name || p.name === p.identity)) return 'Assistant';
  return p.name || p.identity;
}

export class LLMRTCClient extends Emitter<LLMRTCEvents> {
  readonly room: Room;
  private readonly options: LLMRTCClientOptions;
  private _state: ConnectionStateName = 'disconnected';
  private _agentState: AgentState | undefined;
  private leaving = false;
  private readonly workerSpeaking = new Set<string>();
  private activeSpeakers = new Set<string>();
  private readonly audioElements = new Map<string, HTMLMediaElement>();
  private _agentIdentity: string | undefined;
  /** The last agent seen, kept across reconnects: the sender of packets that arrive before it is known again. */
  private lastAgent = '';
  private _lastSender = '';
  private readonly health: ConnectionHealth;

  constructor(options: LLMRTCClientOptions = {}) {
    super();
    this.options = options;
    const reconnection = { ...DEFAULT_RECONNECTION, ...(options.reconnection ?? {}) };
    this.room = new Room({
      adaptiveStream: true,
      dynacast: true,
      ...(options.roomOptions ?? {}),
      publishDefaults: { simulcast: options.simulcast ?? false, ...(options.roomOptions?.publishDefaults ?? {}) },
      reconnectPolicy: new CountingReconnectPolicy(reconnection, (attempt, max) =>
        this.emit('reconnecting', attempt, max),
      ),
    });
    this.health = new ConnectionHealth(this.room, (quality) => this.emit('networkQuality', quality));
    this.wireRoom();
  }

  /** The identity of the agent in the room (undefined while none is there). */
  get agentIdentity(): string | undefined {
    return this._agentIdentity;
  }

  /** The identity of the agent that sent the event being dispatched (key answers by it and `turn_id`). */
  get lastSender(): string {
    return this._lastSender;
  }

  /** The last network quality reported by `networkQuality`. */
  get networkQuality(): NetworkQuality {
    return this.health.current;
  }

  /** The connection state: disconnected, connecting, connected, reconnecting, failed or closed. */
  get state(): ConnectionStateName {
    return this._state;
  }

  /** The agent's state from its `lk.agent.state` attribute (undefined until an agent is in the room). */
  get agentState(): AgentState | undefined {
    return this._agentState;
  }

  get identity(): string {
    return this.room.localParticipant.identity;
  }

  get roomName(): string {
    return this.room.name;
  }

  /** Ask the token service for a room token. */
  async fetchToken(request: Omit<JoinOptions, 'microphone'>): Promise<TokenResponse> {
    const endpoint = this.options.tokenEndpoint ?? '/api/token';
    const body: Record<string, string> = { room: request.room };
    if (request.name) body.name = request.name;
    if (request.identity) body.identity = request.identity;
    if (request.metadata) body.metadata = request.metadata;
    let response: Response;
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(this.options.tokenHeaders ?? {}) },
        body: JSON.stringify(body),
      });
    } catch (err) {
      throw this.fail(
        'token_failed',
        `Can't reach the token service at ${endpoint}. Check that it is running (\`make dev\` starts it) and try again.`,
        err,
      );
    }
    if (!response.ok) {
      let message =
        response.status >= 500
          ? `The token service had a problem (HTTP ${response.status}). Try again in a moment; if it persists, check its log.`
          : `The token service refused the request (HTTP ${response.status}).`;
      let field: string | undefined;
      try {
        const data = (await response.json()) as { error?: { message?: string; field?: string } };
        if (data.error?.message) message = data.error.message;
        field = data.error?.field ?? undefined;
      } catch {
        /* a non-JSON error body: keep the status line */
      }
      if (response.status === 429) message = `${message.replace(/[.;]?\s*$/, '')}. Wait a few seconds, then join again.`;
      throw this.fail('token_failed', message, undefined, { field, status: response.status });
    }
    return (await response.json()) as TokenResponse;
  }

  /** Get a token for `options.room` from the token service, join, and (by default) publish the microphone. */
  async join(options: JoinOptions): Promise<TokenResponse> {
    this.setState('connecting');
    let token: TokenResponse;
    try {
      token = await this.fetchToken(options);
    } catch (err) {
      // A refused request (a field the service rejected) is not a connection failure.
      const refused = err instanceof LLMRTCError && err.detail?.field !== undefined;
      this.setState(refused ? 'disconnected' : 'failed');
      throw err;
    }
    await this.connect(token.url, token.token, { microphone: options.microphone ?? true });
    return token;
  }

  /** Join with a URL and token obtained elsewhere. */
  async connect(url: string, token: string, options: { microphone?: boolean } = {}): Promise<void> {
    this.leaving = false;
    this.setState('connecting');
    try {
      await this.room.connect(url, token);
    } catch (err) {
      this.setState('failed');
      throw this.fail('connect_failed', `Could not join the room: ${(err as Error).message}`, err);
    }
    this.setState('connected');
    for (const participant of this.room.remoteParticipants.values()) this.readAgentState(participant);
    this.emitParticipants();
    this.health.start();
    if (options.microphone ?? true) await this.setMicrophoneEnabled(true);
  }

  /** Leave the room and stop every local track. */
  async leave(): Promise<void> {
    this.leaving = true;
    this.health.stop();
    await this.room.disconnect(true);
    for (const el of this.audioElements.values()) el.remove();
    this.audioElements.clear();
    this.setState('closed');
  }

  /** Alias of `leave` (the reference's name). */
  close(): Promise<void> {
    return this.leave();
  }

  /** Let audio play after the browser blocked autoplay; call from a user gesture. */
  async startAudio(): Promise<void> {
    await this.room.startAudio();
  }

  get microphoneEnabled(): boolean {
    return this.room.localParticipant.isMicrophoneEnabled;
  }

  get cameraEnabled(): boolean {
    return this.room.localParticipant.isCameraEnabled;
  }

  get screenShareEnabled(): boolean {
    return this.room.localParticipant.isScreenShareEnabled;
  }

  /** Publish (or mute) the microphone; the first call asks for permission. */
  async setMicrophoneEnabled(enabled: boolean): Promise<boolean> {
    return this.media('microphone', () => this.room.localParticipant.setMicrophoneEnabled(enabled));
  }

  /** Publish or stop the camera (the agent sees it when its LLM has vision). */
  async setCameraEnabled(enabled: boolean): Promise<boolean> {
    return this.media('camera', () => this.room.localParticipant.setCameraEnabled(enabled));
  }

  /** Share or stop sharing the screen. */
  async setScreenShareEnabled(enabled: boolean): Promise<boolean> {
    return this.media('screen share', () => this.room.localParticipant.setScreenShareEnabled(enabled, { audio: false }));
  }

  /**
   * A typed message to the agent, answered like speech. With `chat` (default true) it also goes out on LiveKit's
   * `lk.chat` text stream, so people in other LiveKit apps see it; the agent reads only the llmrtc topic.
   */
  async sendText(text: string, options: { chat?: boolean } = {}): Promise<void> {
    let message: ClientMessage;
    try {
      message = textInput(text);
    } catch (err) {
      throw this.fail('send_failed', (err as Error).message, err);
    }
    await this.send(message);
    if (options.chat ?? true) {
      this.room.localParticipant.sendText(message.text, { topic: TOPIC_CHAT }).catch((err: unknown) => {
        console.warn('llmrtc: the lk.chat copy of a typed message was not sent', err);
      });
    }
  }

  /** The media devices of `kind` (labels once the browser granted access). */
  async listDevices(kind: DeviceKind): Promise<MediaDeviceInfo[]> {
    try {
      return await Room.getLocalDevices(kind, false);
    } catch (err) {
      this.fail('media_failed', `Could not list the ${DEVICE_NAMES[kind]}s: ${(err as Error).message}`, err);
      return [];
    }
  }

  /** The device in use for `kind` (its id; undefined: the browser's default). */
  activeDevice(kind: DeviceKind): string | undefined {
    return this.room.getActiveDevice(kind);
  }

  /** Switch the microphone, camera or speaker; false (and an `error` event) when the device fails. */
  async switchDevice(kind: DeviceKind, deviceId: string): Promise<boolean> {
    try {
      return await this.room.switchActiveDevice(kind, deviceId);
    } catch (err) {
      this.fail('media_failed', `Could not switch the ${DEVICE_NAMES[kind]}: ${(err as Error).message}`, err);
      return false;
    }
  }

  /** Ask the agent to stop its current answer. */
  async stopSpeaking(): Promise<void> {
    await this.send(stopSpeaking());
  }

  /** Everyone in the room, the local participant first. */
  participants(): ParticipantView[] {
    const all: Participant[] = [this.room.localParticipant, ...this.room.remoteParticipants.values()];
    return all.map((p) => ({
      identity: p.identity,
      name: displayName(p),
      isLocal: p === this.room.localParticipant,
      isAgent: p.isAgent,
      speaking: this.isSpeaking(p),
      microphoneMuted: !p.isMicrophoneEnabled,
      agentState: p.isAgent && isAgentState(p.attributes[ATTR_AGENT_STATE]) ? (p.attributes[ATTR_AGENT_STATE] as AgentState) : undefined,
    }));
  }

  private isSpeaking(p: Participant): boolean {
    if (p.isAgent) return p.attributes[ATTR_AGENT_STATE] === 'speaking';
    return this.activeSpeakers.has(p.identity) || this.workerSpeaking.has(p.identity);
  }

  private async media(what: string, op: () => Promise<unknown>): Promise<boolean> {
    try {
      await op();
      return true;
    } catch (err) {
      this.fail('media_failed', `the ${what} could not be started: ${(err as Error).message}`, err);
      return false;
    } finally {
      this.emitParticipants();
    }
  }

  private async send(message: ClientMessage): Promise<void> {
    if (this.room.state !== ConnectionState.Connected) {
      throw this.fail('send_failed', 'not connected to a room');
    }
    try {
      await this.room.localParticipant.publishData(encodeClientMessage(message), { reliable: true, topic: TOPIC });
    } catch (err) {
      throw this.fail('send_failed', `the message could not be sent: ${(err as Error).message}`, err);
    }
  }

  private fail(code: ErrorCode, message: string, cause?: unknown, extra: Omit<ErrorDetail, 'cause'> = {}): LLMRTCError {
    const error = new LLMRTCError(code, message, { ...extra, cause });
    console.warn(`llmrtc: ${code}: ${message}`);
    this.emit('error', error);
    return error;
  }

  private setState(state: ConnectionStateName): void {
    if (state === this._state) return;
    this._state = state;
    this.emit('stateChange', state);
  }

  private emitParticipants(): void {
    this.emit('participants', this.participants());
  }

  private readAgentState(participant: Participant): void {
    if (participant.isAgent) this._agentIdentity = this.lastAgent = participant.identity;
    const state = participant.attributes[ATTR_AGENT_STATE];
    if (!participant.isAgent || !isAgentState(state) || state === this._agentState) return;
    this._agentState = state;
    this.emit('agentState', state);
  }

  private wireRoom(): void {
    const room = this.room;
    room
      .on(RoomEvent.ConnectionStateChanged, (state: ConnectionState) => {
        if (state === ConnectionState.Reconnecting || state === ConnectionState.SignalReconnecting) {
          this.setState('reconnecting');
        } else if (state === ConnectionState.Connected && this._state !== 'connecting') {
          this.setState('connected');
        }
      })
      .on(RoomEvent.Reconnected, () => {
        this.setState('connected');
        this.emit('reconnected');
      })
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        this.workerSpeaking.clear();
        this.activeSpeakers.clear();
        this.health.stop();
        this.forgetAgent();
        this.emitParticipants();
        if (this.leaving || reason === DisconnectReason.CLIENT_INITIATED) {
          this.setState('closed');
          return;
        }
        if (this._state === 'connecting' || this._state === 'failed') return; // connect() reports it
        this.setState('failed');
        const why = DisconnectReason[reason ?? 0] ?? 'UNKNOWN_REASON';
        this.fail('disconnected', DISCONNECT_TEXT[why] ?? DISCONNECT_TEXT.default, undefined, { reason: why });
      })
      .on(RoomEvent.ParticipantConnected, (p: RemoteParticipant) => {
        this.readAgentState(p);
        this.emitParticipants();
      })
      .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => {
        this.workerSpeaking.delete(p.identity);
        if (p.identity === this._agentIdentity) this.forgetAgent();
        this.emitParticipants();
      })
      .on(RoomEvent.ConnectionQualityChanged, (quality: ConnectionQuality, p: Participant) => {
        if (p === this.room.localParticipant) this.health.fromServer(quality);
      })
      .on(RoomEvent.ParticipantNameChanged, () => this.emitParticipants())
      .on(RoomEvent.TrackMuted, () => this.emitParticipants())
      .on(RoomEvent.TrackUnmuted, () => this.emitParticipants())
      .on(RoomEvent.LocalTrackPublished, () => this.emitParticipants())
      .on(RoomEvent.LocalTrackUnpublished, () => this.emitParticipants())
      .on(RoomEvent.TrackPublished, () => this.emitParticipants())
      .on(RoomEvent.TrackUnpublished, () => this.emitParticipants())
      .on(RoomEvent.ParticipantAttributesChanged, (_changed: Record<string, string>, p: Participant) => {
        this.readAgentState(p);
        this.emitParticipants();
      })
      .on(RoomEvent.ActiveSpeakersChanged, (speakers: Participant[]) => {
        this.activeSpeakers = new Set(speakers.map((s) => s.identity));
        this.emitParticipants();
      })
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub: RemoteTrackPublication, p: RemoteParticipant) =>
        this.onTrackSubscribed(track, p),
      )
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
        for (const el of track.detach()) el.remove();
        if (track.sid) this.audioElements.delete(track.sid);
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => this.emit('audioPlayback', room.canPlaybackAudio))
      .on(RoomEvent.MediaDevicesError, (err: Error) =>
        this.fail('media_failed', `a media device failed: ${err.message}`, err),
      )
      .on(RoomEvent.DataReceived, (payload: Uint8Array, participant?: RemoteParticipant, _kind?: unknown, topic?: string) =>
        this.onData(payload, participant, topic),
      );
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, info) => {
      void this.readTranscription(reader, info.identity);
    });
    room.registerTextStreamHandler(TOPIC_CHAT, (reader, info) => {
      void this.readChat(reader, info.identity);
    });
  }

  private forgetAgent(): void {
    this._agentIdentity = undefined;
    this._agentState = undefined;
  }

  private async readChat(reader: TextStreamReader, identity: string): Promise<void> {
    try {
      const text = await reader.readAll();
      if (!text.trim()) return;
      const fromAgent = this.room.getParticipantByIdentity(identity)?.isAgent ?? false;
      this.emit('chat', { id: reader.info.id, identity, text, fromAgent });
    } catch (err) {
      console.warn('llmrtc: a chat message broke off', err);
    }
  }

  private onTrackSubscribed(track: RemoteTrack, participant: RemoteParticipant): void {
    if (track.kind !== Track.Kind.Audio) return;
    const element = track.attach();
    element.dataset.participant = participant.identity;
    element.dataset.agent = String(participant.isAgent);
    (this.options.audioContainer ?? document.body).appendChild(element);
    if (track.sid) this.audioElements.set(track.sid, element);
    if (participant.isAgent) this.emit('ttsTrack', new MediaStream([track.mediaStreamTrack]), track);
  }

  private onData(payload: Uint8Array, participant: RemoteParticipant | undefined, topic: string | undefined): void {
    if (topic !== TOPIC) return;
    // Only the agent speaks the protocol; another participant's message on the topic is not trusted.
    if (participant && !participant.isAgent) return;
    this._lastSender = participant?.identity ?? this._agentIdentity ?? this.lastAgent;
    if (participant) this._agentIdentity = this.lastAgent = participant.identity;
    let event: ServerEvent;
    try {
      event = parseServerEvent(payload);
    } catch (err) {
      const code = err instanceof ProtocolError ? err.code : 'invalid_message';
      this.fail('protocol', `ignored a malformed message from the agent (${code})`, err);
      return;
    }
    this.emit('message', event, this._lastSender);
    this.dispatch(event);
  }

  private dispatch(event: ServerEvent): void {
    switch (event.type) {
      case 'transcript':
        return this.emit('transcript', event.text, event);
      case 'llm_chunk':
        return this.emit('llmChunk', event.content, event);
      case 'llm':
        return this.emit('llm', event.text, event);
      case 'tts_start':
        return this.emit('ttsStart', event);
      case 'tts_complete':
        return this.emit('ttsComplete', event);
      case 'tts_cancelled':
        return this.emit('ttsCancelled', event);
      case 'barge_in':
        return this.emit('bargeIn', event);
      case 'speech_start':
        this.workerSpeaking.add(event.participant_identity);
        this.emitParticipants();
        return this.emit('speechStart', event.participant_identity, event);
      case 'speech_end':
        this.workerSpeaking.delete(event.participant_identity);
        this.emitParticipants();
        return this.emit('speechEnd', event.participant_identity, event);
      case 'stage_change':
        return this.emit('stageChange', event);
      case 'tool_call':
        return this.emit('toolCall', event);
      case 'tool_result':
        return this.emit('toolResult', event);
      case 'turn_start':
        return this.emit('turnStart', event);
      case 'turn_end':
        return this.emit('turnEnd', event);
      case 'vision':
        return this.emit('vision', event);
      case 'error':
        this.fail('agent', event.message, undefined, {
          agentCode: event.code,
          turnId: event.turn_id,
          component: event.component,
          retryable: event.retryable,
        });
        return;
    }
  }

  private async readTranscription(reader: TextStreamReader, identity: string): Promise<void> {
    const attributes = reader.info.attributes ?? {};
    const segmentId = attributes[ATTR_SEGMENT_ID] ?? reader.info.id;
    const fromAgent = this.room.getParticipantByIdentity(identity)?.isAgent ?? false;
    let text = '';
    try {
      for await (const delta of reader) {
        text += delta;
        this.emit('transcription', { segmentId, identity, text, final: false, fromAgent });
      }
      const final = (reader.info.attributes ?? {})[ATTR_FINAL] !== 'false';
      this.emit('transcription', { segmentId, identity, text, final, fromAgent });
    } catch (err) {
      console.warn('llmrtc: a transcription stream broke off', err);
    }
  }
}
