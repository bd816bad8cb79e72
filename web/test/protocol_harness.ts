/**
 * Test harness for tests/e2e/test_protocol_mirror.py: reads a JSON request from stdin, runs the web client's
 * protocol functions on it, and prints the results as JSON, so the Python side can check that web/src/protocol.ts
 * and worker/protocol.py agree.
 */
import { encodeClientMessage, parseServerEvent, ProtocolError, stopSpeaking, textInput } from '../src/protocol';

interface Request {
  parse: string[];
  texts: string[];
}

async function main(): Promise<void> {
  let raw = '';
  for await (const chunk of process.stdin) raw += chunk;
  const request = JSON.parse(raw) as Request;
  const parsed = request.parse.map((payload) => {
    try {
      return { ok: true, value: parseServerEvent(new TextEncoder().encode(payload)) };
    } catch (err) {
      return { ok: false, code: err instanceof ProtocolError ? err.code : `unexpected:${String(err)}` };
    }
  });
  const encoded = request.texts.map((text) => {
    try {
      return { ok: true, payload: new TextDecoder().decode(encodeClientMessage(textInput(text))) };
    } catch (err) {
      return { ok: false, error: (err as Error).name };
    }
  });
  const stop = new TextDecoder().decode(encodeClientMessage(stopSpeaking()));
  process.stdout.write(JSON.stringify({ parsed, encoded, stop }));
}

void main();
