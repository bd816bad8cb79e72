"""The public scripted fakes behave like real providers."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from llmrtc.audio.wav import pcm16_to_wav
from llmrtc.errors import CodecError, InvalidRequestError, ProviderServerError, RateLimitError
from llmrtc.testing import FakeSTT, FakeTTS, FakeVision, ScriptedLLM, ScriptedReply, tokenize, tone_wav
from llmrtc.types import LLMRequest, Message, STTConfig, VisionAttachment, VisionRequest

REQ = LLMRequest(messages=[Message.user("hi")])


async def test_scripted_llm_streams_with_ttft_and_token_rate() -> None:
    text = "one two three four five six seven eight nine ten"
    llm = ScriptedLLM([text], ttft_s=0.2, tokens_per_s=20)
    t0 = time.perf_counter()
    stamps = []
    content = ""
    async for chunk in llm.stream(REQ):
        stamps.append(time.perf_counter() - t0)
        content += chunk.content
    assert content == text
    assert stamps[0] >= 0.19
    assert stamps[-1] >= 0.2 + 9 / 20 - 0.02  # 10 tokens at 20/s after the first
    assert llm.requests == [REQ]


async def test_scripted_llm_tool_calls_stream_as_deltas() -> None:
    llm = ScriptedLLM([ScriptedReply("ok", tool_calls=[{"name": "f", "arguments": {"a": "x" * 40}}])])
    chunks = [c async for c in llm.stream(REQ)]
    deltas = [d for c in chunks for d in c.tool_call_deltas]
    assert len(deltas) > 2 and deltas[0].name == "f"
    final = chunks[-1]
    assert final.done and final.stop_reason == "tool_use" and final.tool_calls[0].arguments == {"a": "x" * 40}
    assert final.tool_calls[0].call_id == "call_0"


async def test_scripted_llm_errors_and_exhaustion() -> None:
    boom = RateLimitError("slow down", provider="scripted")
    llm = ScriptedLLM(
        [ScriptedReply(error=boom), ScriptedReply("abcdefghij klm", error=boom, error_after_chars=5)]
    )
    with pytest.raises(RateLimitError):
        await llm.complete(REQ)
    got = ""
    with pytest.raises(RateLimitError):
        async for c in llm.stream(REQ):
            got += c.content
    assert 5 <= len(got) < len("abcdefghij klm")
    with pytest.raises(InvalidRequestError, match="no reply left"):
        await llm.complete(REQ)


async def test_scripted_llm_callable_script_and_tool_choice_none() -> None:
    llm = ScriptedLLM(
        lambda r: ScriptedReply(f"n={len(r.messages)}", tool_calls=[{"name": "t"}]), vision=True
    )
    assert llm.capabilities.vision and llm.capabilities.tools
    res = await llm.complete(REQ.model_copy(update={"tool_choice": "none"}))
    assert res.full_text == "n=1" and res.tool_calls == [] and res.usage is not None


def test_tokenize_round_trips() -> None:
    text = " Hello, extraordinarily long words  and spaces."
    assert "".join(tokenize(text)) == text


async def test_fake_stt_parses_wav_and_scripts() -> None:
    stt = FakeSTT(["first", "second"], latency_s=0.01)
    wav = tone_wav(0.5)
    r = await stt.transcribe(wav, STTConfig(language="de"))
    assert (r.text, r.language, r.is_final) == ("first", "de", True)
    assert r.duration_s == pytest.approx(0.5, abs=0.01)
    assert (await stt.transcribe(wav)).text == "second"
    with pytest.raises(InvalidRequestError):
        await stt.transcribe(wav)
    with pytest.raises(CodecError):
        await FakeSTT(["x"]).transcribe(b"garbage")
    by_fn = FakeSTT(lambda audio: f"{len(audio)} bytes")
    assert (await by_fn.transcribe(pcm16_to_wav(b"\0\0" * 10, 16000))).text.endswith("bytes")
    assert len(stt.calls) == 3


async def test_fake_tts_yields_real_audible_pcm_of_plausible_duration() -> None:
    tts = FakeTTS(sample_rate=16000, chars_per_second=10, chunk_ms=20)
    chunks = [c async for c in tts.speak_stream("Hello world, this is")]  # 20 chars -> 2 s
    assert all(c.sample_rate == 16000 for c in chunks)
    assert all(len(c.pcm) == 640 for c in chunks[:-1])
    pcm = np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")
    assert len(pcm) / 16000 == pytest.approx(2.0, abs=0.01)
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 1000  # clearly audible
    assert abs(int(pcm[0])) < 200 and abs(int(pcm[-1])) < 200  # envelope: no clicks
    result = await tts.speak("Hi")
    assert result.format == "pcm" and result.duration_s == pytest.approx(0.2, abs=0.01)
    assert tts.calls == ["Hello world, this is", "Hi"]


async def test_fake_tts_pacing_latency_and_failure() -> None:
    tts = FakeTTS(chars_per_second=100, realtime_factor=1.0, latency_s=0.05)
    t0 = time.perf_counter()
    await tts.speak("x" * 20)  # 0.2 s of audio, paced in real time
    assert time.perf_counter() - t0 >= 0.2
    with pytest.raises(ProviderServerError):
        await FakeTTS(fail_on="bad").speak("a bad text")
    with pytest.raises(InvalidRequestError):
        await tts.speak("   ")


async def test_fake_vision() -> None:
    att = VisionAttachment.from_bytes(b"img")
    v = FakeVision(lambda r: f"{len(r.attachments)} image(s)")
    assert (await v.describe(VisionRequest(attachments=[att]))).description == "1 image(s)"
    failing = FakeVision(error=ProviderServerError("down"))
    with pytest.raises(ProviderServerError):
        await failing.describe(VisionRequest(attachments=[att]))
    assert len(v.calls) == 1


async def test_fakes_are_cancellable() -> None:
    llm = ScriptedLLM(["a b c d e f g"], tokens_per_s=2)

    async def drain() -> None:
        async for _ in llm.stream(REQ):
            pass

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
