"""A local OpenAI Realtime API transcription session (``GET /v1/realtime?intent=transcription``) on the wire.

``Authorization: Bearer <key>``; a bad key is refused at the handshake with 401 and OpenAI's error body. The
server opens with ``session.created``; ``session.update`` (``session.type == "transcription"``) is answered with
``session.updated``. ``input_audio_buffer.append`` carries base64 PCM16 at the session's rate (24 kHz). The
fake's "VAD" hears scripted :class:`Speech` in step with the audio received: ``input_audio_buffer.
speech_started`` (``audio_start_ms``, ``item_id``) once the audio passes its start, ``speech_stopped`` once it
passes its end plus ``silence_duration_ms``; then, as the service does, ``input_audio_buffer.committed`` and
the transcription of the committed item: one ``conversation.item.input_audio_transcription.delta`` per word
and ``...completed`` with the transcript and ``usage``. ``input_audio_buffer.commit`` commits speech in
progress; with nothing to commit it answers the ``input_audio_buffer_commit_empty`` error event.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from tests.providers.fakes._base import FakeServer, cut


@dataclass
class Speech:
    text: str
    start: float
    end: float
    fail: bool = False
    """Answer ``...transcription.failed`` for this utterance instead of a transcript."""


@dataclass
class Session:
    query: dict[str, str]
    headers: CIMultiDict[str]
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    closed_by_client: bool = False

    def types_received(self) -> list[str]:
        return [m["type"] for m in self.received]


class FakeOpenAIRealtime(FakeServer):
    base_path = "/v1"

    def __init__(self, api_key: str = "sk-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.speech: list[Speech] = []
        self.sessions: list[Session] = []
        self.reject_status: list[int] = []
        self.error_after_s: tuple[float, str, str, str] | None = None
        """After this much audio send an ``error`` event (type, code, message)."""
        self.drop_after_s: float | None = None
        self.ws_base_url = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/realtime", self._realtime)

    async def start(self) -> str:
        base_url = await super().start()
        self.ws_base_url = "ws://" + base_url.removeprefix("http://")
        return base_url

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        if self.reject_status:
            status = self.reject_status.pop(0)
            error = {"message": f"refused with {status}", "type": "server_error", "code": None, "param": None}
            return web.json_response({"error": error}, status=status)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            error = {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
            return web.json_response({"error": error}, status=401)
        session = Session(dict(request.query), CIMultiDict(request.headers))
        self.sessions.append(session)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        config: dict[str, Any] = {"type": "transcription", "id": f"sess_{uuid.uuid4().hex[:12]}"}
        vad = _Vad(list(self.speech))

        async def send(event: dict[str, Any]) -> None:
            event = {"event_id": f"event_{uuid.uuid4().hex[:12]}", **event}
            session.sent.append(event)
            await ws.send_str(json.dumps(event))

        async def transcribe(speech: Speech, item_id: str, end_ms: int) -> None:
            previous = vad.last_item
            vad.last_item = item_id
            await send(
                {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous}
            )
            if speech.fail:
                error = {
                    "type": "server_error",
                    "code": "transcription_failed",
                    "message": "could not transcribe",
                }
                await send(
                    {
                        "type": "conversation.item.input_audio_transcription.failed",
                        "item_id": item_id,
                        "content_index": 0,
                        "error": error,
                    }
                )
                return
            words = speech.text.split(" ")
            for i, word in enumerate(words):
                await send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": word if i == 0 else " " + word,
                    }
                )
            await send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": speech.text,
                    "usage": {"type": "duration", "seconds": round((speech.end - speech.start), 3)},
                }
            )

        await send({"type": "session.created", "session": config})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            session.received.append(event)
            kind = event.get("type")
            if kind == "session.update":
                config.update(event["session"])
                await send({"type": "session.updated", "session": config})
            elif kind == "input_audio_buffer.append":
                session.audio_bytes += len(base64.b64decode(event["audio"]))
                rate = config.get("audio", {}).get("input", {}).get("format", {}).get("rate", 24000)
                silence = (
                    config.get("audio", {})
                    .get("input", {})
                    .get("turn_detection", {})
                    .get("silence_duration_ms", 500)
                )
                now = session.audio_bytes / 2 / rate
                if self.drop_after_s is not None and now >= self.drop_after_s:
                    await cut(request)
                    return ws
                if self.error_after_s is not None and now >= self.error_after_s[0]:
                    _, error_type, code, message = self.error_after_s
                    self.error_after_s = None
                    await send(
                        {"type": "error", "error": {"type": error_type, "code": code, "message": message}}
                    )
                    continue
                for step in vad.advance(now, silence / 1000):
                    if step[0] == "started":
                        await send(
                            {
                                "type": "input_audio_buffer.speech_started",
                                "audio_start_ms": int(step[1].start * 1000),
                                "item_id": step[2],
                            }
                        )
                    else:
                        end_ms = int(step[1].end * 1000)
                        await send(
                            {
                                "type": "input_audio_buffer.speech_stopped",
                                "audio_end_ms": end_ms,
                                "item_id": step[2],
                            }
                        )
                        await transcribe(step[1], step[2], end_ms)
            elif kind == "input_audio_buffer.commit":
                if vad.current is None:
                    error = {
                        "type": "invalid_request_error",
                        "code": "input_audio_buffer_commit_empty",
                        "message": "Error committing input audio buffer: buffer too small.",
                        "event_id": event.get("event_id"),
                    }
                    await send({"type": "error", "error": error})
                else:
                    speech, item_id = vad.current
                    vad.current = None
                    heard = [w for w in speech.text.split(" ")][: max(1, vad.words_heard(speech))]
                    await transcribe(Speech(" ".join(heard), speech.start, speech.end), item_id, 0)
        session.closed_by_client = True
        return ws


class _Vad:
    def __init__(self, speech: list[Speech]) -> None:
        self.todo = speech
        self.current: tuple[Speech, str] | None = None
        self.last_item: str | None = None
        self.now = 0.0

    def words_heard(self, speech: Speech) -> int:
        words = speech.text.split(" ")
        span = (speech.end - speech.start) / len(words)
        return int((self.now - speech.start) / span)

    def advance(self, now: float, silence: float) -> list[tuple[str, Speech, str]]:
        self.now = now
        out: list[tuple[str, Speech, str]] = []
        while True:
            if self.current is None:
                if not self.todo or now < self.todo[0].start:
                    return out
                speech = self.todo.pop(0)
                self.current = (speech, f"item_{uuid.uuid4().hex[:12]}")
                out.append(("started", *self.current))
            speech, item_id = self.current
            if now < speech.end + silence:
                return out
            out.append(("stopped", speech, item_id))
            self.current = None
