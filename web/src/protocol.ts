/**
 * The llmrtc data-message protocol (topic "llmrtc"), mirrored from worker/protocol.py and docs/protocol.md.
 *
 * Every message is one JSON object with `v` (the protocol version) and `type`. The worker sends the
 * ServerEvent shapes; clients send the ClientMessage shapes. `parseServerEvent` checks a payload against this
 * schema and throws a ProtocolError (with a stable code) for anything else.
 */

export const PROTOCOL_VERSION = 1;
export const TOPIC = 'llmrtc';
/** LiveKit's own text-stream topic for transcriptions (user speech and the agent's words). */
export const TOPIC_TRANSCRIPTION = 'lk.transcription';
/** The agent participant's attribute holding its state. */
export const ATTR_AGENT_STATE = 'lk.agent.state';
export const ATTR_SEGMENT_ID = 'lk.segment_id';
export const ATTR_TRACK_ID = 'lk.transcribed_track_id';
export const ATTR_FINAL = 'lk.transcription_final';
/** LiveKit's own text-stream topic for chat (what LiveKit's agents and playground send and read). */
export const TOPIC_CHAT = 'lk.chat';
/** The longest typed text input the worker accepts. */
export const MAX_TEXT_CHARS = 4000;

export type AgentState = 'initializing' | 'listening' | 'thinking' | 'speaking';
export const AGENT_STATES: readonly AgentState[] = ['initializing', 'listening', 'thinking', 'speaking'];

export type CancelReason = 'barge_in' | 'stop_request' | 'participant_left' | 'shutdown';

interface Wire {
  v: 1;
}

export interface TranscriptMsg extends Wire {
  type: 'transcript';
  turn_id?: string;
  participant_identity: string;
  participant_name: string;
  text: string;
  final: boolean;
  source: 'speech' | 'text';
  /** Interim results and the final one of one utterance share it. */
  segment_id?: string;
}

export type TurnSource = 'speech' | 'text' | 'greeting';
export type TurnOutcome = 'completed' | 'cancelled' | 'error';

export interface TurnStartMsg extends Wire {
  type: 'turn_start';
  turn_id: string;
  participant_identities: string[];
  source: TurnSource;
}

/** The one terminal event of every turn. */
export interface TurnEndMsg extends Wire {
  type: 'turn_end';
  turn_id: string;
  outcome: TurnOutcome;
  reason?: string;
  heard_text?: string;
  usage?: Record<string, number>;
}

export interface LLMChunkMsg extends Wire {
  type: 'llm_chunk';
  turn_id: string;
  content: string;
}

export interface LLMMsg extends Wire {
  type: 'llm';
  turn_id: string;
  text: string;
}

export interface TTSStartMsg extends Wire {
  type: 'tts_start';
  turn_id: string;
}

export interface TTSCompleteMsg extends Wire {
  type: 'tts_complete';
  turn_id: string;
}

export interface TTSCancelledMsg extends Wire {
  type: 'tts_cancelled';
  turn_id: string;
  reason: CancelReason;
  by?: string;
  /** What the listeners heard of the answer; the rest was never spoken. */
  heard_text: string;
}

export interface BargeInMsg extends Wire {
  type: 'barge_in';
  turn_id: string;
  participant_identity: string;
}

export interface SpeechStartMsg extends Wire {
  type: 'speech_start';
  participant_identity: string;
}

export interface SpeechEndMsg extends Wire {
  type: 'speech_end';
  participant_identity: string;
  duration_ms: number;
}

export interface StageChangeMsg extends Wire {
  type: 'stage_change';
  turn_id: string;
  from_stage: string;
  to_stage: string;
  transition_id: string;
  reason?: string;
}

export interface ToolCallMsg extends Wire {
  type: 'tool_call';
  turn_id: string;
  call_id: string;
  name: string;
  arguments: Record<string, unknown>;
}

export interface ToolResultMsg extends Wire {
  type: 'tool_result';
  turn_id: string;
  call_id: string;
  name: string;
  success: boolean;
  error?: string;
  duration_ms: number;
}

export interface ErrorMsg extends Wire {
  type: 'error';
  code: string;
  /** Safe to show as it is. */
  message: string;
  turn_id?: string;
  /** stt, llm, tts, tool, worker or protocol. */
  component?: string;
  retryable?: boolean;
}

export interface VisionMsg extends Wire {
  type: 'vision';
  turn_id?: string;
  participant_identity: string;
  source: 'camera' | 'screen_share';
  via: 'turn' | 'tool';
}

export type ServerEvent =
  | TranscriptMsg
  | LLMChunkMsg
  | LLMMsg
  | TTSStartMsg
  | TTSCompleteMsg
  | TTSCancelledMsg
  | BargeInMsg
  | SpeechStartMsg
  | SpeechEndMsg
  | StageChangeMsg
  | ToolCallMsg
  | ToolResultMsg
  | ErrorMsg
  | TurnStartMsg
  | TurnEndMsg
  | VisionMsg;

export type ServerEventType = ServerEvent['type'];

export interface TextInput extends Wire {
  type: 'text';
  text: string;
}

export interface StopSpeaking extends Wire {
  type: 'stop_speaking';
}

export type ClientMessage = TextInput | StopSpeaking;

/** A payload that is not a valid protocol message; `code` is stable. */
export class ProtocolError extends Error {
  constructor(
    readonly code: 'invalid_json' | 'unsupported_version' | 'invalid_message' | 'message_too_large',
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

type FieldKind = 'string' | 'boolean' | 'number' | 'object' | 'array';
interface FieldSpec {
  kind: FieldKind;
  optional?: boolean;
  oneOf?: readonly string[];
  /** The JSON type of every element (arrays) or value (objects). */
  items?: 'string' | 'number';
}

const S: FieldSpec = { kind: 'string' };
const OS: FieldSpec = { kind: 'string', optional: true };
const B: FieldSpec = { kind: 'boolean' };
const N: FieldSpec = { kind: 'number' };

/** Required and optional fields per event type, with their defaults (as the worker's pydantic models). */
const SCHEMA: Record<ServerEventType, { fields: Record<string, FieldSpec>; defaults?: Record<string, unknown> }> = {
  transcript: {
    fields: {
      turn_id: OS,
      participant_identity: S,
      participant_name: S,
      text: S,
      final: { ...B, optional: true },
      source: { kind: 'string', optional: true, oneOf: ['speech', 'text'] },
      segment_id: OS,
    },
    defaults: { final: true, source: 'speech' },
  },
  turn_start: {
    fields: {
      turn_id: S,
      participant_identities: { kind: 'array', optional: true, items: 'string' },
      source: { kind: 'string', optional: true, oneOf: ['speech', 'text', 'greeting'] },
    },
    defaults: { participant_identities: [], source: 'speech' },
  },
  turn_end: {
    fields: {
      turn_id: S,
      outcome: { kind: 'string', oneOf: ['completed', 'cancelled', 'error'] },
      reason: OS,
      heard_text: OS,
      usage: { kind: 'object', optional: true, items: 'number' },
    },
  },
  llm_chunk: { fields: { turn_id: S, content: S } },
  llm: { fields: { turn_id: S, text: S } },
  tts_start: { fields: { turn_id: S } },
  tts_complete: { fields: { turn_id: S } },
  tts_cancelled: {
    fields: {
      turn_id: S,
      reason: {
        kind: 'string',
        optional: true,
        oneOf: ['barge_in', 'stop_request', 'participant_left', 'shutdown'],
      },
      by: OS,
      heard_text: { ...S, optional: true },
    },
    defaults: { reason: 'barge_in', heard_text: '' },
  },
  barge_in: { fields: { turn_id: S, participant_identity: S } },
  speech_start: { fields: { participant_identity: S } },
  speech_end: { fields: { participant_identity: S, duration_ms: { ...N, optional: true } }, defaults: { duration_ms: 0 } },
  stage_change: { fields: { turn_id: S, from_stage: S, to_stage: S, transition_id: S, reason: OS } },
  tool_call: {
    fields: { turn_id: S, call_id: S, name: S, arguments: { kind: 'object', optional: true } },
    defaults: { arguments: {} },
  },
  tool_result: {
    fields: {
      turn_id: S,
      call_id: S,
      name: S,
      success: B,
      error: OS,
      duration_ms: { ...N, optional: true },
    },
    defaults: { duration_ms: 0 },
  },
  error: { fields: { code: S, message: S, turn_id: OS, component: OS, retryable: { ...B, optional: true } } },
  vision: {
    fields: {
      turn_id: OS,
      participant_identity: S,
      source: { kind: 'string', oneOf: ['camera', 'screen_share'] },
      via: { kind: 'string', optional: true, oneOf: ['turn', 'tool'] },
    },
    defaults: { via: 'turn' },
  },
};

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** Parse and check one worker event (bytes or text). Unknown fields are ignored for forward compatibility. */
export function parseServerEvent(payload: Uint8Array | string): ServerEvent {
  let data: unknown;
  try {
    const text = typeof payload === 'string' ? payload : new TextDecoder('utf-8', { fatal: true }).decode(payload);
    data = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError('invalid_json', `message is not valid UTF-8 JSON (${(err as Error).name})`);
  }
  if (kindOf(data) !== 'object') throw new ProtocolError('invalid_message', 'message must be a JSON object');
  const obj = data as Record<string, unknown>;
  const version = obj.v ?? PROTOCOL_VERSION;
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      'unsupported_version',
      `unsupported protocol version ${JSON.stringify(version)}; this client speaks v${PROTOCOL_VERSION}`,
    );
  }
  const type = obj.type;
  if (typeof type !== 'string' || !(type in SCHEMA)) {
    throw new ProtocolError('invalid_message', `unknown message type ${JSON.stringify(type)}`);
  }
  const spec = SCHEMA[type as ServerEventType];
  const out: Record<string, unknown> = { v: PROTOCOL_VERSION, type, ...structuredClone(spec.defaults ?? {}) };
  for (const [name, field] of Object.entries(spec.fields)) {
    const value = obj[name];
    if (value === undefined || value === null) {
      if (!field.optional) throw new ProtocolError('invalid_message', `${type}.${name}: field required`);
      continue;
    }
    if (kindOf(value) !== field.kind) {
      throw new ProtocolError('invalid_message', `${type}.${name}: expected ${field.kind}, got ${kindOf(value)}`);
    }
    if (field.oneOf && !field.oneOf.includes(value as string)) {
      throw new ProtocolError('invalid_message', `${type}.${name}: ${JSON.stringify(value)} is not allowed`);
    }
    if (field.items) {
      const items = Array.isArray(value) ? value : Object.values(value as Record<string, unknown>);
      const bad = items.find((item) => kindOf(item) !== field.items);
      if (bad !== undefined) {
        throw new ProtocolError('invalid_message', `${type}.${name}: expected ${field.items} items, got ${kindOf(bad)}`);
      }
    }
    out[name] = value;
  }
  return out as unknown as ServerEvent;
}

/** Encode a client message as UTF-8 JSON bytes. */
export function encodeClientMessage(message: ClientMessage): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(message));
}

/** A typed text input; throws RangeError when empty or longer than MAX_TEXT_CHARS. */
export function textInput(text: string): TextInput {
  const trimmed = text.trim();
  if (!trimmed) throw new RangeError('the message is empty');
  if (trimmed.length > MAX_TEXT_CHARS) throw new RangeError(`the message is longer than ${MAX_TEXT_CHARS} characters`);
  return { v: PROTOCOL_VERSION, type: 'text', text: trimmed };
}

export function stopSpeaking(): StopSpeaking {
  return { v: PROTOCOL_VERSION, type: 'stop_speaking' };
}

export function isAgentState(value: string | undefined): value is AgentState {
  return value !== undefined && (AGENT_STATES as readonly string[]).includes(value);
}
