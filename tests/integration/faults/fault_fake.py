"""A fault-injecting OpenAI-compatible server: :class:`OpenAIFake` that fails on demand, on the wire.

``fake.inject("llm", "hang")`` makes every chat request hang (until :meth:`FaultyOpenAI.clear` or the server
stops); ``"stt"`` is ``/v1/audio/transcriptions``, ``"tts"`` is ``/v1/audio/speech``. The faults:

- ``401``, ``429`` (with ``Retry-After: 1``), ``500``: an OpenAI-shaped error body whose message holds a fake
  secret key and an internal URL (:data:`SECRET`, :data:`INTERNAL_URL`), which must reach the log, never the room;
- ``hang``: the headers never come;
- ``cut``: the answer starts, then the connection is closed (a few SSE chunks for the LLM, some audio for the
  TTS, half a JSON body for the STT);
- ``malformed``: a 200 whose body is broken (truncated JSON for the STT, an SSE event that is not JSON for the
  LLM, an error document sent as ``audio/pcm`` for the TTS);
- ``content_type``: a 200 ``text/html`` error page (a proxy's "200 OK" page).

:attr:`FaultyOpenAI.hits` counts the requests each endpoint received (retries included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from tests.integration.worker.openai_fake import OpenAIFake, voiced_tone

SECRET = "sk-live-FAKE0123456789abcdefSECRET"
INTERNAL_URL = "http://llm-gateway.internal.corp.example:8443/v1/upstream"
FAULTS = ("401", "429", "500", "hang", "cut", "malformed", "content_type")


def _vendor_error(status: int, kind: str) -> web.Response:
    body = {
        "error": {
            "message": f"{kind}: key {SECRET} rejected by {INTERNAL_URL} (request req_abc123)",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status),
        }
    }
    headers = {"Retry-After": "1"} if status == 429 else {}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FaultyOpenAI(OpenAIFake):
    """:class:`OpenAIFake` with :meth:`inject`-able faults per endpoint."""

    faults: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    _release: asyncio.Event | None = None

    def inject(self, endpoint: str, fault: str) -> None:
        assert endpoint in ("stt", "llm", "tts") and fault in FAULTS
        self.faults = {endpoint: fault}
        self.hits.clear()

    def clear(self) -> None:
        self.faults = {}
        if self._release is not None:
            self._release.set()
            self._release = asyncio.Event()

    async def stop(self) -> None:
        if self._release is not None:
            self._release.set()
        await super().stop()

    async def start(self) -> FaultyOpenAI:
        self._release = asyncio.Event()
        await super().start()
        return self

    async def _hang(self) -> None:
        assert self._release is not None
        release = self._release
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 60)

    async def _fault(self, endpoint: str, request: web.Request) -> web.StreamResponse | None:
        fault = self.faults.get(endpoint)
        if fault is None:
            return None
        self.hits[endpoint] += 1
        await request.read()
        if fault in ("401", "429", "500"):
            return _vendor_error(int(fault), f"{endpoint} {fault}")
        if fault == "hang":
            await self._hang()
            raise ConnectionResetError("released")
        if fault == "content_type":
            page = f"<html><body><h1>200 OK</h1>Upstream error at {INTERNAL_URL}, key {SECRET}</body></html>"
            return web.Response(text=page, content_type="text/html")
        if fault == "malformed":
            if endpoint == "stt":
                return web.Response(body=b'{"text": "Hello th', content_type="application/json")
            if endpoint == "tts":
                body = json.dumps({"error": {"message": f"quota for {SECRET} at {INTERNAL_URL}"}})
                return web.Response(body=body.encode(), content_type="audio/pcm")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": \n\n')
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        # cut: the answer starts, then the connection drops
        if endpoint == "stt":
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "200"})
            await resp.prepare(request)
            await resp.write(b'{"text": "Hel')
        elif endpoint == "tts":
            resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
            await resp.prepare(request)
            pcm = voiced_tone(0.6)
            step = 24000 * 2 // 10
            for i in range(0, len(pcm), step):
                await resp.write(pcm[i : i + step])
        else:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for piece in ("Here is the start. ", "And then"):
                chunk = {
                    "id": "chatcmpl-x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "gpt-test",
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _transcribe(self, request: web.Request) -> web.Response:
        faulty = await self._fault("stt", request)
        if faulty is not None:
            return faulty  # type: ignore[return-value]
        return await super()._transcribe(request)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        faulty = await self._fault("llm", request)
        if faulty is not None:
            return faulty
        return await super()._chat(request)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        faulty = await self._fault("tts", request)
        if faulty is not None:
            return faulty
        return await super()._speech(request)


__all__ = ["FAULTS", "INTERNAL_URL", "SECRET", "FaultyOpenAI"]
