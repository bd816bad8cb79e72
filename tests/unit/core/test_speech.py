"""The public speech pipeline (llmrtc.speech) and turn plumbing (llmrtc.turns), used without an orchestrator."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from llmrtc import orchestrator
from llmrtc.chunking import SentenceChunker
from llmrtc.errors import CodecError, ConfigError, GuardrailError, LLMRTCError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TTSStartEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookContext, HookRunner, Hooks, Stopwatch
from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.orchestrator import ConversationProviders, OrchestratorConfig
from llmrtc.speech import SpeechPipeline
from llmrtc.testing import FakeSTT, FakeTTS, FakeVision, ScriptedLLM
from llmrtc.turns import (
    END_OF_TURN,
    EndOfTurn,
    QueueItem,
    SpeechTurn,
    TurnEmitter,
    TurnFailed,
    TurnOutcome,
    collect_outcome,
)
from llmrtc.types import LLMRequest, LLMResult, Message, TTSChunk, VisionAttachment

ANSWER = (
    "The museum opens at nine in the morning. Tickets cost twelve euros for adults. "
    "Children under six go in for free."
)
IMAGE = VisionAttachment(data=base64.b64encode(b"\xff\xd8\xff fake jpeg").decode())


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def on_stt_error(self, ctx: HookContext, error: Exception) -> None:
        self.calls.append(("on_stt_error", ctx.component))

    def on_error(self, ctx: HookContext, error: Exception) -> None:
        self.calls.append(("on_error", ctx.component))


class Blocker(Hooks):
    def on_llm_end(self, ctx: HookContext, result: LLMResult, timing: Any) -> None:
        raise GuardrailError("blocked")


def new_turn(turn_id: str = "t1", *, speak: bool = True, speaker: str | None = "Alice") -> SpeechTurn:
    ctx = HookContext(session_id="s1", turn_id=turn_id, participant=speaker)
    return SpeechTurn(id=turn_id, speaker=speaker, ctx=ctx, watch=Stopwatch(), speak=speak)


def pipeline(
    *, llm: ScriptedLLM | None = None, hooks: Any = None, metrics: InMemoryMetrics | None = None, **kw: Any
) -> SpeechPipeline:
    providers = ConversationProviders(
        llm=llm or ScriptedLLM([ANSWER]),
        stt=kw.pop("stt", None),
        tts=kw.pop("tts", None),
        vision=kw.pop("vision", None),
    )
    chunker = kw.pop("chunker", None)
    config = OrchestratorConfig(**kw)
    return SpeechPipeline(providers, config, hooks=HookRunner(hooks), metrics=metrics, chunker=chunker)


async def minimal_turn(
    speech: SpeechPipeline, turn: SpeechTurn, text: str
) -> AsyncGenerator[TurnEvent, None]:
    """The smallest orchestrator on the public API: stream the LLM, speak while it streams, yield events."""
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()

    async def produce() -> None:
        emitter = TurnEmitter(queue, speech.hold_output())
        speaker = speech.speaker(turn, emitter)
        chunker = speech.stream_chunker(speaker)
        try:
            request = LLMRequest(messages=[await speech.user_message(turn, text, None)])
            async for chunk in speech.providers.llm.stream(request):
                if chunk.content:
                    emitter.emit(LLMChunkEvent(turn.id, chunk.content), 0)
                    if speaker is not None and chunker is not None:
                        for piece in chunker.push(chunk.content):
                            speaker.say(piece, 0)
            if speaker is not None and chunker is not None:
                for piece in chunker.flush():
                    speaker.say(piece, 0)
            emitter.release(0)
            emitter.emit(LLMFinalEvent(turn.id, LLMResult(full_text=ANSWER)))
            if speaker is not None:
                await speaker.finish()
                if speaker.started:
                    emitter.emit(TTSCompleteEvent(turn.id))
            emitter.emit(TurnCompleteEvent(turn.id, ANSWER))
        finally:
            if speaker is not None:
                await speaker.aclose()
            queue.put_nowait(END_OF_TURN)

    turn.producer = asyncio.create_task(produce())
    try:
        while not isinstance(event := await queue.get(), EndOfTurn):
            turn.consumed(event)
            yield event
    finally:
        turn.producer.cancel()
        await asyncio.gather(turn.producer, return_exceptions=True)


async def test_a_custom_turn_speaks_sentence_by_sentence_while_the_llm_streams() -> None:
    tts = FakeTTS()
    metrics = InMemoryMetrics()
    speech = pipeline(llm=ScriptedLLM([ANSWER], tokens_per_s=200), tts=tts, metrics=metrics)
    turn = new_turn()
    outcome = await collect_outcome(minimal_turn(speech, turn, "when does it open?"))
    kinds = [type(e) for e in outcome.events]
    assert kinds.index(TTSStartEvent) < kinds.index(TTSAudioEvent)
    first_audio = kinds.index(TTSAudioEvent)
    last_text = max(i for i, k in enumerate(kinds) if k is LLMChunkEvent)
    assert first_audio < last_text  # the first sentence is heard before the LLM is done
    audio = [e for e in outcome.events if isinstance(e, TTSAudioEvent)]
    segments = {e.segment: e.text for e in audio}
    assert segments[0] == "The museum opens at nine in the morning."
    assert " ".join(segments[i] for i in sorted(segments)) == ANSWER
    assert [e.segment for e in audio if e.last_in_segment] == sorted(segments)
    assert tts.calls == [segments[i] for i in sorted(segments)]
    assert outcome.completed and outcome.text == ANSWER
    assert outcome.audio_duration_s == pytest.approx(sum(tts.duration_for(t) for t in tts.calls), abs=0.05)
    assert turn.spoken_text() == ANSWER  # every segment was delivered
    assert turn.first_audio and metrics.timings(MetricNames.TURN_FIRST_AUDIO)


async def test_without_streaming_tts_there_is_no_chunker_and_silent_turns_have_no_speaker() -> None:
    speech = pipeline(tts=FakeTTS(), streaming_tts=False)
    emitter = TurnEmitter(asyncio.Queue(), hold=False)
    speaker = speech.speaker(new_turn(), emitter)
    assert speaker is not None and speech.stream_chunker(speaker) is None
    await speaker.aclose()
    assert speech.speaker(new_turn(speak=False), emitter) is None
    assert pipeline().speaker(new_turn(), emitter) is None  # no TTS provider


def test_spoken_text_counts_only_delivered_segments_or_shown_text() -> None:
    turn = new_turn()
    pcm = TTSChunk(pcm=FakeTTS().render("x"), sample_rate=24000)
    turn.consumed(TTSAudioEvent("t1", pcm, "First one.", 0, False))
    assert turn.spoken_text() == ""  # a segment counts once its last audio was delivered
    turn.consumed(TTSAudioEvent("t1", pcm, "First one.", 0, True))
    turn.consumed(LLMChunkEvent("t1", "ignored while speaking"))
    assert turn.spoken_text() == "First one."
    turn.spoken_override = "  First  "
    assert turn.spoken_text() == "First"
    silent = new_turn(speak=False)
    silent.consumed(LLMChunkEvent("t1", "Hello "))
    silent.consumed(LLMChunkEvent("t1", "there."))
    assert silent.spoken_text() == "Hello there."


def test_emitter_holds_a_round_until_released_and_drops_a_withheld_one() -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    emitter = TurnEmitter(queue, hold=True)
    emitter.emit(LLMChunkEvent("t", "a"), 0)
    emitter.emit(LLMChunkEvent("t", "b"), 1)
    emitter.emit(TurnCompleteEvent("t", ""))  # no round: never held
    assert queue.qsize() == 1
    emitter.release(0)
    emitter.emit(LLMChunkEvent("t", "c"), 0)  # after release: at once
    emitter.drop(1)
    emitter.emit(LLMChunkEvent("t", "d"), 1)
    emitter.release(1)  # too late: dropped stays dropped
    got = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [getattr(e, "content", type(e).__name__) for e in got] == ["TurnCompleteEvent", "a", "c"]
    assert emitter.dropped(1) and not emitter.dropped(0)
    passthrough: asyncio.Queue[QueueItem] = asyncio.Queue()
    TurnEmitter(passthrough, hold=False).emit(LLMChunkEvent("t", "x"), 0)
    assert passthrough.qsize() == 1


async def test_a_tts_failure_is_reported_and_stops_the_rest_of_the_speech() -> None:
    tts = FakeTTS(fail_on="broken")
    metrics = InMemoryMetrics()
    speech = pipeline(tts=tts, metrics=metrics)
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    speaker = speech.speaker(new_turn(), TurnEmitter(queue, hold=False))
    assert speaker is not None
    speaker.say("This one works.", 0)
    speaker.say("This one is broken.", 0)
    speaker.say("This one is never tried.", 0)
    await speaker.finish()
    await speaker.aclose()
    events = [queue.get_nowait() for _ in range(queue.qsize())]
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].component == "tts" and errors[0].error.retryable
    assert {e.text for e in events if isinstance(e, TTSAudioEvent)} == {"This one works."}
    assert speaker.failed and tts.calls == ["This one works.", "This one is broken."]
    assert metrics.counter(MetricNames.ERRORS, {"component": "tts", "code": errors[0].error.code}) == 1


async def test_pieces_of_a_dropped_round_are_not_synthesized() -> None:
    tts = FakeTTS(latency_s=0.05)
    speech = pipeline(tts=tts)
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    emitter = TurnEmitter(queue, hold=True)
    speaker = speech.speaker(new_turn(), emitter)
    assert speaker is not None
    speaker.say("Kept answer.", 0)
    speaker.say("Withheld answer.", 1)
    emitter.drop(1)
    emitter.release(0)
    await speaker.finish()
    events = [queue.get_nowait() for _ in range(queue.qsize())]
    assert tts.calls == ["Kept answer."]
    assert {e.text for e in events if isinstance(e, TTSAudioEvent)} == {"Kept answer."}


async def test_transcribe_failures_are_reported_and_raised_as_turn_failed() -> None:
    hooks, metrics = Recorder(), InMemoryMetrics()
    no_stt = pipeline(hooks=hooks, metrics=metrics)
    with pytest.raises(TurnFailed) as missing:
        await no_stt.transcribe(new_turn(), b"RIFF")
    assert isinstance(missing.value.error, ConfigError) and missing.value.component == "stt"
    assert hooks.calls == [("on_stt_error", "stt"), ("on_error", "stt")]
    bad_audio = pipeline(stt=FakeSTT(["never"]), metrics=metrics)
    with pytest.raises(TurnFailed) as broken:
        await bad_audio.transcribe(new_turn(), b"not a wav")
    assert isinstance(broken.value.error, CodecError)
    assert metrics.counter(MetricNames.ERRORS, {"component": "stt", "code": broken.value.error.code}) == 1


async def test_user_message_describes_images_for_a_blind_llm_and_rejects_bad_attachments() -> None:
    vision = FakeVision("A red bicycle.")
    speech = pipeline(vision=vision, vision_prompt="What is it?")
    message = await speech.user_message(new_turn(), "what is this?", [IMAGE])
    assert message == Message.user("what is this?\n\n[Attached image: A red bicycle.]", name="Alice")
    assert vision.calls[0].prompt == "What is it?"
    seeing = pipeline(llm=ScriptedLLM(["ok"], vision=True))
    assert (await seeing.user_message(new_turn(), "look", [IMAGE])).attachments == [IMAGE]
    blind = await pipeline().user_message(new_turn(), "look", [IMAGE])
    assert blind.content == "look" and blind.attachments == []  # dropped with a warning
    failing = pipeline(vision=FakeVision(error=LLMRTCError("down", code="vision_down")))
    assert (await failing.user_message(new_turn(), "look", [IMAGE])).content == "look"
    with pytest.raises(TurnFailed) as bad:
        await speech.user_message(new_turn(), "look", [{"data": "%%% not base64"}])  # type: ignore[list-item]
    assert bad.value.error.code == "invalid_attachment" and bad.value.component == "vision"


def test_hold_output_follows_the_setting_or_the_presence_of_a_guardrail() -> None:
    assert not pipeline().hold_output()
    assert pipeline(hooks=Blocker()).hold_output()
    assert not pipeline(hooks=Blocker(), hold_output_for_guardrail=False).hold_output()
    assert pipeline(hold_output_for_guardrail=True).hold_output()


def test_new_chunker_starts_each_round_empty() -> None:
    shared = SentenceChunker()
    speech = pipeline(chunker=shared)
    shared.push("Half a sentence left over from a cancelled round")
    fresh = speech.new_chunker()
    assert fresh is shared and fresh.flush() == []
    split = pipeline(chunker=lambda text: [p for p in text.split("|") if p])
    chunker = split.new_chunker()
    assert chunker.push("one|two") == ["one"] and chunker.flush() == ["two"]
    assert isinstance(pipeline().new_chunker(), SentenceChunker)


def test_bad_providers_are_a_config_error_and_old_names_still_import() -> None:
    with pytest.raises(ConfigError):
        SpeechPipeline(ConversationProviders(llm=object()), OrchestratorConfig())  # type: ignore[arg-type]
    assert orchestrator.TurnOutcome is TurnOutcome
