"""A local Deepgram API on the real wire: the live ``/v1/listen`` WebSocket and Aura ``POST /v1/speak``.

Live transcription (``GET /v1/listen`` upgraded to a WebSocket, ``Authorization: Token <key>``; a bad key is
refused at the handshake with 401 as the service does): binary messages are ``linear16`` audio at the
``sample_rate`` query; text messages are ``KeepAlive``, ``Finalize`` and ``CloseStream``. The fake "hears" a
scripted transcript in step with the audio it has received: every :class:`Utterance` has words with times,
and once the received audio passes a word's end it sends an interim ``Results`` (``is_final: false``) with
the words so far; once it passes the utterance end plus ``endpointing`` it sends the final ``Results``
(``is_final: true``, ``speech_final: true``), or, with ``speech_final=False``, a final without it and an
``UtteranceEnd`` after ``utterance_end_ms``. ``CloseStream`` finalizes what is pending, sends ``Metadata``
and closes with 1000. Messages have the shapes of Deepgram's docs (``channel.alternatives[0].words`` with
``word``/``start``/``end``/``confidence``/``punctuated_word``; ``metadata.model_info``; ``channel_index``).

Aura (``POST /v1/speak?model=...&encoding=linear16&container=none&sample_rate=...``, body ``{"text"}``)
answers chunked raw PCM: a 440 Hz tone of 10 ms per character. Errors use ``{"err_code", "err_msg",
"request_id"}``. The Aura socket (``GET /v1/speak`` upgraded, ``model``/``encoding``/``sample_rate`` in the
query) opens with ``Metadata``, buffers ``{"type": "Speak", "text"}`` and speaks every complete sentence at
once as binary frames; ``Flush`` speaks the rest and answers ``{"type": "Flushed", "sequence_id"}``;
``Close`` closes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from tests.providers.fakes._audio import sine_pcm16
from tests.providers.fakes._base import (
    Recorded,
    ScriptedServer,
    byte_pieces,
    cut,
    retry_after_headers,
    stream,
)

MS_PER_CHAR = 10


def tone(n_chars: int, rate: int) -> bytes:
    """The PCM16 Aura speaks in the fake for ``n_chars`` characters at ``rate``."""
    return sine_pcm16(n_chars * MS_PER_CHAR * rate // 1000, rate, freq=440, amplitude=8000)


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class Utterance:
    """What the fake hears: words with times (seconds from the start of the stream)."""

    words: list[Word]
    speech_final: bool = True
    """End with ``speech_final: true`` (endpointing); ``False``: a plain final, then ``UtteranceEnd``."""

    @classmethod
    def of(cls, text: str, start: float, word_s: float = 0.3, **kw: Any) -> Utterance:
        words = [
            Word(w, round(start + i * word_s, 3), round(start + (i + 1) * word_s - 0.05, 3))
            for i, w in enumerate(text.split())
        ]
        return cls(words, **kw)

    @property
    def end(self) -> float:
        return self.words[-1].end


@dataclass
class Failure:
    status: int
    message: str = "failure"
    retry_after: str | None = None


@dataclass
class Listen:
    """What one live connection received and sent."""

    query: dict[str, str]
    headers: CIMultiDict[str]
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_by_client: bool = False


class FakeDeepgram(ScriptedServer[Failure | None]):
    def __init__(self, api_key: str = "dg-test-key", chunk_bytes: int = 960) -> None:
        super().__init__()
        self.api_key = api_key
        self.chunk_bytes = chunk_bytes
        self.utterances: list[Utterance] = []
        self.sessions: list[Listen] = []
        self.speak_requests: list[Recorded] = []
        self.speak_sessions: list[Listen] = []
        self.speak_drop_after_frames: int | None = None
        """Drop the Aura socket (no close frame) after this many audio frames."""
        self.reject_status: list[int] = []
        """Refuse the next handshakes with these HTTP statuses (one per connection)."""
        self.close_after_s: tuple[float, int, str] | None = None
        """After this much audio, close with (code, reason), e.g. ``(1.0, 1011, "NET-0001")``."""
        self.drop_after_s: float | None = None
        """After this much audio, drop the connection without a close frame."""
        self.ws_base_url = ""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)
        app.router.add_post("/v1/speak", self._speak)
        app.router.add_get("/v1/speak", self._speak_socket)

    async def start(self) -> str:
        base_url = await super().start()
        self.ws_base_url = "ws://" + base_url.removeprefix("http://")
        return base_url

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Token {self.api_key}"

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}
        return web.json_response(body, status=status, headers=headers)

    # ------------------------------------------------------------------------------------------ live STT

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        if self.reject_status:
            status = self.reject_status.pop(0)
            return self._error(status, "REJECTED", f"refused with {status}")
        if not self._authorized(request):
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        session = Listen(dict(request.query), CIMultiDict(request.headers))
        self.sessions.append(session)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        rate = int(request.query.get("sample_rate", "16000"))
        endpointing = int(request.query.get("endpointing", "10")) / 1000
        utterance_end = int(request.query.get("utterance_end_ms", "1000")) / 1000
        interim = request.query.get("interim_results") == "true"
        request_id = str(uuid.uuid4())
        heard = _Hearing(self.utterances, endpointing, utterance_end, interim)

        async def send(message: dict[str, Any]) -> None:
            session.sent.append(message)
            await ws.send_str(json.dumps(message))

        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                session.audio_bytes += len(msg.data)
                now = session.audio_bytes / 2 / rate
                if self.drop_after_s is not None and now >= self.drop_after_s:
                    await cut(request)
                    return ws
                if self.close_after_s is not None and now >= self.close_after_s[0]:
                    _, code, reason = self.close_after_s
                    await ws.close(code=code, message=reason.encode())
                    return ws
                for event in heard.advance(now):
                    await send(_render(event, request_id, request.query.get("model", "nova-3")))
            elif msg.type == WSMsgType.TEXT:
                control = json.loads(msg.data).get("type", "")
                session.controls.append(control)
                if control in ("Finalize", "CloseStream"):
                    for event in heard.finalize():
                        await send(_render(event, request_id, request.query.get("model", "nova-3")))
                if control == "CloseStream":
                    duration = session.audio_bytes / 2 / rate
                    await send(_metadata(request_id, duration))
                    await ws.close()
                    return ws
        session.closed_by_client = True
        return ws

    # ------------------------------------------------------------------------------------------ Aura TTS

    async def _speak_socket(self, request: web.Request) -> web.StreamResponse:
        if self.reject_status:
            status = self.reject_status.pop(0)
            return self._error(status, "REJECTED", f"refused with {status}")
        if not self._authorized(request):
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        session = Listen(dict(request.query), CIMultiDict(request.headers))
        self.speak_sessions.append(session)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        rate = int(request.query.get("sample_rate", "24000"))
        model = request.query.get("model", "aura-2-thalia-en")
        metadata = {"type": "Metadata", "request_id": str(uuid.uuid4()), "model_name": model}
        await ws.send_str(
            json.dumps({**metadata, "model_version": "2025-01-01", "model_uuid": str(uuid.uuid4())})
        )
        buffered = ""
        frames = 0
        flushes = 0

        async def speak(text: str) -> bool:
            nonlocal frames
            for frame in byte_pieces(tone(len(text), rate), self.chunk_bytes):
                await ws.send_bytes(frame)
                frames += 1
                if self.speak_drop_after_frames is not None and frames >= self.speak_drop_after_frames:
                    await cut(request)
                    return False
            return True

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            session.sent.append(data)
            kind = data.get("type")
            session.controls.append(kind)
            if kind == "Speak":
                buffered += data["text"]
                cut_at = max(buffered.rfind(ch) for ch in ".!?")
                if cut_at >= 0:
                    sentence, buffered = buffered[: cut_at + 1], buffered[cut_at + 1 :]
                    if not await speak(sentence):
                        return ws
            elif kind == "Flush":
                if buffered and not await speak(buffered):
                    return ws
                buffered = ""
                await ws.send_str(json.dumps({"type": "Flushed", "sequence_id": flushes}))
                flushes += 1
            elif kind == "Clear":
                buffered = ""
                await ws.send_str(json.dumps({"type": "Cleared", "sequence_id": flushes}))
            elif kind == "Close":
                await ws.close()
                return ws
        session.closed_by_client = True
        return ws

    async def _speak(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.speak_requests.append(Recorded.of(request, body))
        reply = self.next_reply(None)
        if isinstance(reply, Failure):
            headers = retry_after_headers(reply.retry_after, "retry-after")
            return self._error(reply.status, "FAILED", reply.message, headers)
        if not self._authorized(request):
            return self._error(401, "INVALID_AUTH", "Invalid credentials.")
        if request.query.get("encoding") != "linear16" or request.query.get("container") != "none":
            return self._error(400, "UNSUPPORTED", "the fake speaks only linear16 without a container")
        if not body.get("text"):
            return self._error(400, "INVALID_TEXT", "text must not be empty")
        rate = int(request.query.get("sample_rate", "24000"))
        audio = tone(len(body["text"]), rate)
        headers = {"dg-model-name": request.query.get("model", ""), "dg-char-count": str(len(body["text"]))}
        return await stream(
            request, byte_pieces(audio, self.chunk_bytes), content_type="audio/l16", headers=headers
        )


@dataclass
class _Event:
    kind: str  # "interim", "final", "utterance_end"
    words: list[Word]
    start: float
    duration: float
    speech_final: bool = False
    from_finalize: bool = False


class _Hearing:
    """Replays the scripted utterances in step with the audio time received."""

    def __init__(self, utterances: list[Utterance], endpointing: float, utterance_end: float, interim: bool):
        self.todo = list(utterances)
        self.endpointing = endpointing
        self.utterance_end = utterance_end
        self.interim = interim
        self.interim_sent = 0
        self.pending_end: float | None = None
        self.last_final_end = 0.0

    def advance(self, now: float) -> list[_Event]:
        out: list[_Event] = []
        if self.pending_end is not None and now >= self.pending_end + self.utterance_end:
            out.append(_Event("utterance_end", [], self.pending_end, 0.0))
            self.pending_end = None
        while self.todo:
            utt = self.todo[0]
            heard = [w for w in utt.words if w.end <= now]
            if self.interim and len(heard) > self.interim_sent and len(heard) < len(utt.words):
                self.interim_sent = len(heard)
                out.append(_Event("interim", heard, utt.words[0].start, heard[-1].end - utt.words[0].start))
            if now < utt.end + self.endpointing:
                break
            out.append(self._final(utt))
        return out

    def _final(self, utt: Utterance, from_finalize: bool = False) -> _Event:
        self.todo.pop(0)
        self.interim_sent = 0
        start = self.last_final_end
        self.last_final_end = utt.end
        if not utt.speech_final:
            self.pending_end = utt.end
        return _Event("final", utt.words, start, utt.end - start, utt.speech_final, from_finalize)

    def finalize(self) -> list[_Event]:
        out: list[_Event] = []
        if self.todo and self.interim_sent:
            utt = self.todo[0]
            heard = utt.words[: self.interim_sent]
            self.todo[0] = Utterance(heard, speech_final=False)
            out.append(self._final(self.todo[0], from_finalize=True))
            self.pending_end = None
        return out


def _render(event: _Event, request_id: str, model: str) -> dict[str, Any]:
    if event.kind == "utterance_end":
        return {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": event.start}
    transcript = " ".join(w.word for w in event.words)
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(event.duration, 3),
        "start": round(event.start, 3),
        "is_final": event.kind == "final",
        "speech_final": event.speech_final,
        "from_finalize": event.from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": 0.98,
                    "words": [
                        {
                            "word": w.word.lower().strip(".,!?"),
                            "start": w.start,
                            "end": w.end,
                            "confidence": 0.98,
                            "punctuated_word": w.word,
                        }
                        for w in event.words
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": request_id,
            "model_info": {"name": f"2-general-{model}", "version": "2024-01-01.0", "arch": model},
            "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, model)),
        },
    }


def _metadata(request_id: str, duration: float) -> dict[str, Any]:
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": "0" * 64,
        "created": "2026-01-01T00:00:00.000Z",
        "duration": round(duration, 3),
        "channels": 1,
        "models": [str(uuid.uuid4())],
        "model_info": {},
    }
