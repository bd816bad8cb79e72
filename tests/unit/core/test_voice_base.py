"""VoiceOrchestratorBase: the turn lifecycle shared by both orchestrators, used through a small subclass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from llmrtc.errors import ConfigError
from llmrtc.events import (
    ErrorEvent,
    LLMChunkEvent,
    LLMFinalEvent,
    TranscriptEvent,
    TTSAudioEvent,
    TTSCompleteEvent,
    TurnCompleteEvent,
    TurnEvent,
)
from llmrtc.hooks import HookContext, Hooks, Timing
from llmrtc.metrics import InMemoryMetrics, MetricNames
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.playbooks import Playbook, Stage, VoicePlaybookOrchestrator
from llmrtc.speech import StreamingSpeaker
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM, tone_wav
from llmrtc.turns import SpeechTurn, TurnEmitter
from llmrtc.types import LLMResult, Message
from llmrtc.voice_base import VoiceOrchestratorBase


class TurnEnds(Hooks):
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def on_turn_end(self, ctx: HookContext, timing: Timing) -> None:
        self.outcomes.append(str(ctx.metadata["outcome"]))


class Echo(VoiceOrchestratorBase[SpeechTurn]):
    """Answers every turn with its own words, twice (two sentences, so barge-in can cut between them)."""

    def __init__(self, *, fail: bool = False, **kwargs: Any) -> None:
        providers = ConversationProviders(llm=ScriptedLLM([]), stt=FakeSTT(["hello there"]), tts=FakeTTS())
        super().__init__(providers, OrchestratorConfig(), turn_type=SpeechTurn, **kwargs)
        self.fail = fail
        self.recorded: list[Message] = []
        self.settled: list[tuple[str, str]] = []
        self.amended: list[tuple[str, str | None]] = []

    @property
    def history(self) -> list[Message]:
        return list(self.recorded)

    def add_context_note(self, text: str) -> None:
        self.recorded.append(Message.system(text))

    def reset(self) -> None:
        self.recorded.clear()

    def _replace_history(self, messages: Sequence[Message]) -> None:
        self.recorded = list(messages)

    async def _produce(
        self, turn: SpeechTurn, message: Message, emitter: TurnEmitter, speaker: StreamingSpeaker | None
    ) -> None:
        if self.fail:
            raise RuntimeError("a bug in the brain")
        answer = f"You said {message.content}. I repeat: {message.content}."
        emitter.emit(LLMChunkEvent(turn.id, answer))
        turn.final_text = answer
        if speaker is not None:
            for sentence in answer.split(". "):
                speaker.say(sentence, 0)
            await speaker.finish()
            emitter.emit(TTSCompleteEvent(turn.id))
        emitter.emit(LLMFinalEvent(turn.id, LLMResult(full_text=answer)))
        emitter.emit(TurnCompleteEvent(turn.id, answer))

    def _settle(self, turn: SpeechTurn) -> None:
        self.settled.append((turn.id, turn.outcome))
        if turn.message is not None and turn.outcome in ("completed", "running"):
            self.recorded.append(turn.message)
            interrupted = turn.outcome == "running"
            text = turn.spoken_text() if interrupted else turn.final_text
            self.recorded.append(Message.assistant(text, interrupted=interrupted))

    def _interrupt_finished(self, turn_id: str, spoken_text: str | None) -> bool:
        self.amended.append((turn_id, spoken_text))
        return turn_id == "known"


async def collect(stream: Any) -> list[TurnEvent]:
    return [event async for event in stream]


def test_the_base_is_abstract_and_both_orchestrators_build_on_it() -> None:
    with pytest.raises(TypeError):
        VoiceOrchestratorBase(  # type: ignore[abstract]
            ConversationProviders(llm=ScriptedLLM([])), OrchestratorConfig(), turn_type=SpeechTurn
        )
    providers = ConversationProviders(llm=ScriptedLLM([]))
    playbook = Playbook(id="p", initial_stage="a", stages=[Stage(id="a")])
    assert isinstance(ConversationOrchestrator(providers), VoiceOrchestratorBase)
    assert isinstance(VoicePlaybookOrchestrator(providers, playbook), VoiceOrchestratorBase)


async def test_a_subclass_gets_the_whole_turn_api() -> None:
    metrics = InMemoryMetrics()
    ends = TurnEnds()
    echo = Echo(metrics=metrics, hooks=ends, session_id="s1")
    outcome = await echo.run_turn(tone_wav(0.2), speaker="alice", turn_id="t1")
    assert outcome.transcript == "hello there" and outcome.completed
    assert outcome.text == "You said hello there. I repeat: hello there."
    assert outcome.audio and outcome.sample_rate
    assert isinstance(outcome.events[0], TranscriptEvent) and outcome.events[0].speaker == "alice"
    assert echo.settled == [("t1", "completed")] and ends.outcomes == ["completed"]
    assert [m.role for m in echo.history] == ["user", "assistant"] and echo.history[0].name == "alice"
    assert metrics.counter(MetricNames.TURNS) == 1

    silent = await echo.run_text_turn("typed", speak=False)
    assert silent.completed and not silent.audio and silent.text.startswith("You said typed")

    empty = await collect(echo.run_text_turn_stream("   ", turn_id="e"))
    assert isinstance(empty[-1], TurnCompleteEvent) and empty[-1].metadata == {"empty_transcript": True}
    assert echo.settled[-1] == ("e", "empty")


async def test_running_turn_rules() -> None:
    echo = Echo()
    stream = echo.run_text_turn_stream("hi", turn_id="busy")
    await anext(stream)  # the transcript: the turn is running now
    with pytest.raises(ConfigError, match="already running"):
        await anext(echo.run_text_turn_stream("again", turn_id="busy"))
    with pytest.raises(ConfigError, match="load_history cannot run while a turn is running"):
        echo.load_history([Message.user("old")])
    await stream.aclose()
    echo.load_history([Message.user("old")])
    assert echo.history == [Message.user("old")]


async def test_a_bug_in_produce_fails_the_turn_without_crashing() -> None:
    ends = TurnEnds()
    echo = Echo(fail=True, hooks=ends)
    events = await collect(echo.run_text_turn_stream("hi", turn_id="bug"))
    assert isinstance(events[-1], ErrorEvent) and events[-1].component == "orchestrator"
    assert "a bug in the brain" in str(events[-1].error)
    assert echo.settled == [("bug", "error")] and ends.outcomes == ["error"] and echo.history == []
    echo.fail = False
    assert (await echo.run_text_turn("again")).completed


async def test_interrupt_running_and_finished_turns() -> None:
    echo = Echo()
    seen: list[TurnEvent] = []
    async for event in echo.run_text_turn_stream("stop me", turn_id="r"):
        seen.append(event)
        if isinstance(event, TTSAudioEvent):
            assert echo.interrupt("r", "You said")
    assert sum(isinstance(e, TTSAudioEvent) for e in seen) == 1  # nothing after the interrupt
    assert echo.settled == [("r", "running")]
    assert echo.history[-1] == Message.assistant("You said", interrupted=True)
    assert echo.interrupt("known", "x") and not echo.interrupt("other")
    assert echo.amended == [("known", "x"), ("other", None)]


async def test_when_a_segment_counts_as_taken() -> None:
    """One rule without a playout: a sentence counts as heard once its last audio event was handed over."""
    echo = Echo()
    stream = echo.run_text_turn_stream("cut", turn_id="c")
    async for event in stream:
        if isinstance(event, TTSAudioEvent) and event.last_in_segment:
            break  # the consumer stops holding the first sentence's last audio
    await stream.aclose()
    assert echo.history[-1] == Message.assistant("You said cut", interrupted=True)
