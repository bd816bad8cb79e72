"""A code-first agent on your own STT, LLM and TTS services (the reference's "own services at :3456").

Three provider classes call the services of ``SERVICES_URL`` (default ``http://localhost:3456/api/v1``):

- :class:`MySTT` posts the utterance's WAV as a multipart ``file`` to ``/audio/transcriptions`` and reads
  ``{"text"}``;
- :class:`MyLLM` posts OpenAI-format ``messages`` to ``/chat/completions`` and reads the SSE stream;
- :class:`MyTTS` posts ``{"text", "voice", "speed"}`` to ``/audio/speech`` and streams the WAV it answers.

Each maps HTTP failures to :mod:`llmrtc.errors` (5xx and dropped connections are retryable) and retries
them with the framework's one retry layer (:mod:`llmrtc.providers.resilience`). Run the demo services and
the agent::

    python examples/own_services/services.py &          # or your real services on :3456
    python examples/own_services/agent.py dev            # joins rooms of LIVEKIT_URL
    python examples/own_services/agent.py console        # or talk to it in the terminal
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx

from llmrtc.errors import (
    InvalidRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
)
from llmrtc.providers.base import LLMCapabilities, LLMProvider, STTProvider, TTSCapabilities, TTSProvider
from llmrtc.providers.resilience import RetryPolicy, call_with_retries, stream_with_retries
from llmrtc.types import LLMChunk, LLMRequest, LLMResult, STTConfig, STTResult, TTSChunk, TTSConfig
from worker import Agent

SERVICES_URL = os.environ.get("SERVICES_URL", "http://localhost:3456/api/v1")
RETRY = RetryPolicy(max_attempts=3, base_delay=0.3)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=SERVICES_URL, timeout=httpx.Timeout(15.0, connect=5.0))


def _check(provider: str, response: httpx.Response) -> None:
    """Raise the :mod:`llmrtc.errors` class for a failed answer (5xx: retryable)."""
    if response.status_code < 400:
        return
    kind = ProviderServerError if response.status_code >= 500 else InvalidRequestError
    raise kind(
        f"{response.request.url.path} answered {response.status_code}",
        provider=provider,
        status_code=response.status_code,
    )


@contextmanager
def _transport(provider: str) -> Iterator[None]:
    """Network failures as retryable :mod:`llmrtc.errors`."""
    try:
        yield
    except ProviderError:
        raise
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(f"no answer in time: {exc}", provider=provider) from exc
    except httpx.HTTPError as exc:
        raise ProviderConnectionError(f"cannot reach {SERVICES_URL}: {exc}", provider=provider) from exc


class MySTT(STTProvider):
    """Your Whisper service: multipart WAV in, ``{"text"}`` out."""

    name = "my-stt"

    def __init__(self, model: str = "base") -> None:
        self.model = model
        self._http = _client()

    async def transcribe(self, audio: bytes, config: STTConfig | None = None) -> STTResult:
        async def once() -> STTResult:
            with _transport(self.name):
                files = {"file": ("speech.wav", audio, "audio/wav")}
                response = await self._http.post(
                    "/audio/transcriptions", files=files, data={"model": self.model}
                )
                _check(self.name, response)
                text = response.json().get("text")
            if not isinstance(text, str):
                raise ProviderResponseError("the answer has no 'text'", provider=self.name)
            return STTResult(text=text.strip())

        return await call_with_retries(once, RETRY)

    async def aclose(self) -> None:
        await self._http.aclose()


class MyLLM(LLMProvider):
    """Your LangGraph (or any OpenAI-format) service: ``messages`` in, SSE ``delta.content`` out."""

    name = "my-llm"
    capabilities = LLMCapabilities(streaming=True, tools=False)

    def __init__(self) -> None:
        self._http = _client()

    @staticmethod
    def _messages(request: LLMRequest) -> list[dict[str, str]]:
        out = []
        for m in request.messages:
            if m.role in ("system", "user", "assistant") and m.content:
                entry = {"role": m.role, "content": m.content}
                if m.name:
                    entry["name"] = m.name
                out.append(entry)
        return out

    async def complete(self, request: LLMRequest) -> LLMResult:
        text = "".join([chunk.content async for chunk in self.stream(request)])
        return LLMResult(full_text=text)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        body = {"messages": self._messages(request), "stream": True}
        async for piece in stream_with_retries(lambda: self._sse(body), RETRY):
            yield LLMChunk(content=piece)
        yield LLMChunk(done=True, stop_reason="end_turn")

    async def _sse(self, body: dict[str, object]) -> AsyncIterator[str]:
        with _transport(self.name):
            async with self._http.stream("POST", "/chat/completions", json=body) as response:
                _check(self.name, response)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    try:
                        delta = json.loads(line[6:])["choices"][0].get("delta", {})
                    except (ValueError, KeyError, IndexError) as exc:
                        raise ProviderResponseError(
                            f"bad SSE line: {line[:80]!r}", provider=self.name
                        ) from exc
                    if delta.get("content"):
                        yield str(delta["content"])

    async def aclose(self) -> None:
        await self._http.aclose()


class MyTTS(TTSProvider):
    """Your Kokoro service: ``{"text", "voice", "speed"}`` in, a WAV out (streamed as it is made)."""

    name = "my-tts"
    capabilities = TTSCapabilities(streaming=True)
    sample_rate = 24000

    def __init__(self, voice: str = "default", speed: float = 1.0) -> None:
        self.voice = voice
        self.speed = speed
        self._http = _client()

    def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        body = {"text": text, "voice": self.voice, "speed": self.speed}
        return stream_with_retries(lambda: self._wav(body), RETRY)

    async def _wav(self, body: dict[str, object]) -> AsyncIterator[TTSChunk]:
        with _transport(self.name):
            async with self._http.stream("POST", "/audio/speech", json=body) as response:
                _check(self.name, response)
                reader = _WavReader(self.name)
                async for data in response.aiter_bytes():
                    pcm = reader.feed(data)
                    if pcm:
                        yield TTSChunk(pcm=pcm, sample_rate=reader.rate)
                tail = reader.end()
                if tail:
                    yield TTSChunk(pcm=tail, sample_rate=reader.rate)

    async def aclose(self) -> None:
        await self._http.aclose()


class _WavReader:
    """PCM16 mono samples of a WAV arriving in pieces: the header is read first, then whole samples."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._buf = bytearray()
        self._in_data = False
        self.rate = 0

    def feed(self, data: bytes) -> bytes:
        self._buf.extend(data)
        if not self._in_data and not self._header():
            return b""
        whole = len(self._buf) - len(self._buf) % 2
        pcm, self._buf = bytes(self._buf[:whole]), self._buf[whole:]
        return pcm

    def end(self) -> bytes:
        if not self._in_data:
            raise ProviderResponseError("the speech service answered no WAV audio", provider=self._provider)
        return b""

    def _header(self) -> bool:
        buf = self._buf
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise ProviderResponseError(
                "the speech service answered something that is not a WAV", provider=self._provider
            )
        at = 12
        while len(buf) >= at + 8:
            chunk, size = bytes(buf[at : at + 4]), struct.unpack("<I", buf[at + 4 : at + 8])[0]
            if chunk == b"fmt ":
                if len(buf) < at + 24:
                    return False
                _fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", buf[at + 8 : at + 24])
                if channels != 1 or bits != 16:
                    raise ProviderResponseError("expected 16-bit mono WAV", provider=self._provider)
                self.rate = rate
            elif chunk == b"data":
                if not self.rate:
                    raise ProviderResponseError("WAV data before its format", provider=self._provider)
                del buf[: at + 8]
                self._in_data = True
                return True
            at += 8 + size + size % 2
        return False


agent = Agent(
    stt=MySTT,
    llm=MyLLM,
    tts=MyTTS,
    instructions="You are a helpful voice assistant. Answer briefly; your words are spoken aloud.",
)

if __name__ == "__main__":
    agent.run()  # python examples/own_services/agent.py dev | start | console
