"""Turn taking in the room session: preemptive replies, backchannels, interim transcripts, end of turn.

The session runs on the real orchestrator with scripted providers and an in-memory room (conftest); the
end-of-turn test runs the worker's own listener (Silero VAD, Smart Turn on its runner thread) on corpus clips.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmrtc.audio.wav import wav_to_pcm16
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM, ScriptedReply
from llmrtc.tools import ToolRegistry, define_tool
from llmrtc.types import STTResult
from tests.unit.worker.conftest import FakeListener, FakeRoom
from worker.config import WorkerSettings
from worker.conversation import OrchestratorConversation
from worker.listeners import SpeechCallbacks
from worker.room import ParticipantInfo
from worker.session import RoomSession

HALF = b"\x01\x00" * 8000  # 0.5 s: the words before a mid-sentence pause
FULL = b"\x01\x00" * 24000  # 1.5 s: the whole sentence
PARTIAL_TEXT = "I'd like to book a flight to"
FULL_TEXT = "I'd like to book a flight to Paris on Friday"


def by_length(wav: bytes) -> str:
    pcm, _, _ = wav_to_pcm16(wav)
    return PARTIAL_TEXT if len(pcm) < len(FULL) else FULL_TEXT


class Booked:
    def __init__(self) -> None:
        self.bookings: list[str] = []
        self.lookups: list[str] = []


def tools(record: Booked) -> ToolRegistry:
    @define_tool(side_effect_free=True)
    def find_flights(city: str) -> str:
        """Look up flights (changes nothing)."""
        record.lookups.append(city)
        return f"3 flights to {city}"

    @define_tool
    def book_flight(city: str) -> str:
        """Book a flight (a side effect)."""
        record.bookings.append(city)
        return f"booked {city}"

    return ToolRegistry([find_flights, book_flight])


async def session_with(
    replies: list[ScriptedReply | str],
    registry: ToolRegistry | None = None,
    stt: FakeSTT | None = None,
    **settings: Any,
) -> tuple[RoomSession, FakeRoom, ConversationOrchestrator, FakeSTT, ScriptedLLM]:
    values = {"PREEMPTIVE_GENERATION": True, **{k.upper(): v for k, v in settings.items()}}
    config = WorkerSettings(_env_file=None, **values)
    llm = ScriptedLLM(replies, ttft_s=0.05, tokens_per_s=200.0)
    stt = stt or FakeSTT(by_length)
    tts = FakeTTS(chars_per_second=15.0)
    orchestrator = ConversationOrchestrator(
        ConversationProviders(llm=llm, stt=stt, tts=tts),
        OrchestratorConfig(system_prompt="test"),
        tools=registry,
    )
    room = FakeRoom()

    def factory(identity: str, callbacks: SpeechCallbacks) -> FakeListener:
        return FakeListener(identity, callbacks)

    session = RoomSession(config, room, OrchestratorConversation(orchestrator, tts), factory, room_name="r")
    session.start()
    session.on_participant_joined(ParticipantInfo("alice", "Alice", {}))
    return session, room, orchestrator, stt, llm


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_preemptive_reply_is_dropped_unheard_and_unrecorded_when_the_user_goes_on() -> None:
    record = Booked()
    replies: list[ScriptedReply | str] = [
        ScriptedReply(
            tool_calls=[
                {"name": "find_flights", "arguments": {"city": "?"}, "call_id": "a"},
                {"name": "book_flight", "arguments": {"city": "?"}, "call_id": "b"},
            ]
        ),
        "Where to?",
        "Booked Paris for Friday.",
    ]
    session, room, orchestrator, _, llm = await session_with(replies, tools(record))
    try:
        session.on_speech_start("alice")
        session.on_turn_predicted("alice", HALF)  # the model thinks "...a flight to" is complete
        await until(lambda: len(llm.requests) == 1)  # the LLM started on the partial transcript
        assert PARTIAL_TEXT in str(llm.requests[0].messages[-1].content)
        await until(lambda: record.lookups == ["?"])  # a side-effect-free tool may run early ...
        await asyncio.sleep(0.2)
        assert record.bookings == []  # ... one with side effects waits for the confirmed turn
        session.on_turn_resumed("alice")  # "... Paris on Friday"
        await asyncio.sleep(0.3)
        assert record.bookings == []
        assert bytes(room.audio.captured) == b"", "no sound of the dropped reply"
        said = [m for m in orchestrator.history if m.role != "system"]  # system: "Alice joined the room."
        assert said == [], "nothing recorded, not even the partial question"
        assert room.types() == ["speech_start"], "no turn, transcript or audio event for the dropped reply"
        session.on_speech_end("alice", FULL)
        end = await room.wait_for(lambda e: e.type == "turn_end")
        assert end.outcome == "completed"
        users = [m.content for m in orchestrator.history if m.role == "user"]
        assert len(users) == 1 and users[0].endswith(FULL_TEXT)
        assert [e.text for e in room.events("transcript")] == [FULL_TEXT]
        assert len(llm.requests) == 2 and FULL_TEXT in str(llm.requests[1].messages[-1].content)
        assert record.bookings == []  # the confirmed turn's LLM answered without tools
        assert len(room.events("turn_start")) == 1 and len(room.events("turn_end")) == 1
    finally:
        await session.aclose()


async def test_confirmed_preemptive_reply_plays_and_reuses_its_transcription() -> None:
    session, room, orchestrator, stt, llm = await session_with(["Paris on Friday, noted."])
    try:
        session.on_speech_start("alice")
        session.on_turn_predicted("alice", FULL)
        await until(lambda: len(llm.requests) == 1)
        await asyncio.sleep(0.3)  # the answer is ready, held
        assert bytes(room.audio.captured) == b"" and "turn_start" not in room.types()
        session.on_speech_end("alice", FULL)  # only silence followed: the turn is confirmed
        end = await room.wait_for(lambda e: e.type == "turn_end")
        assert end.outcome == "completed"
        assert len(stt.calls) == 1, "the prediction's transcription is the utterance's (STT hooks once)"
        transcripts = room.events("transcript")
        assert [t.text for t in transcripts] == [FULL_TEXT] and transcripts[0].final
        types = room.types()
        assert types.index("transcript") < types.index("turn_start") < types.index("tts_start")
        assert len(room.audio.captured) > 0
        assert [m.role for m in orchestrator.history if m.role != "system"] == ["user", "assistant"]
    finally:
        await session.aclose()


async def test_no_preemption_without_the_setting() -> None:
    session, _, _, stt, llm = await session_with(["One.", "Two."], preemptive_generation=False)
    try:
        session.on_speech_start("alice")
        session.on_turn_predicted("alice", FULL)
        await asyncio.sleep(0.2)
        assert stt.calls == [] and llm.requests == []
    finally:
        await session.aclose()


async def test_a_backchannel_does_not_cancel_the_agent(make_session: Any) -> None:
    long = " ".join(f"This is sentence number {i}." for i in range(1, 7))
    h = await make_session([long, "unused"], ["Mm-hm."])
    h.room.audio.speed = 3.0
    h.join("alice", "Alice")
    h.session.on_data("alice", b'{"v": 1, "type": "text", "text": "Tell me a story."}')
    start = await h.room.wait_for(lambda e: e.type == "tts_start")
    await asyncio.sleep(0.2)
    h.session.on_speech_start("alice")
    h.session.on_interruption("alice")
    assert h.room.events("barge_in"), "the onset paused the agent"
    h.session.on_speech_end("alice", b"\x00\x00" * 8000)  # "mm-hm", half a second
    end = await h.room.wait_for(lambda e: e.type == "turn_end" and e.turn_id == start.turn_id, within=20)
    assert end.outcome == "completed", "the answer went on to the end"
    assert not h.room.events("tts_cancelled")
    assert len(h.llm.requests) == 1, "the backchannel started no turn of its own"
    assert [t.text for t in h.room.events("transcript") if t.source == "speech"] == ["Mm-hm."]
    assert [m.content for m in h.orchestrator.history if m.role == "assistant"] == [long]


async def test_words_that_are_not_a_backchannel_still_cancel(make_session: Any) -> None:
    long = " ".join(f"This is sentence number {i}." for i in range(1, 7))
    h = await make_session([long, "Okay."], ["Yeah but wait."])
    h.room.audio.speed = 3.0
    h.join("alice", "Alice")
    h.session.on_data("alice", b'{"v": 1, "type": "text", "text": "Tell me a story."}')
    start = await h.room.wait_for(lambda e: e.type == "tts_start")
    h.session.on_speech_start("alice")
    h.session.on_interruption("alice")
    h.session.on_speech_end("alice", b"\x00\x00" * 16000)
    cancelled = await h.room.wait_for(lambda e: e.type == "tts_cancelled")
    assert cancelled.turn_id == start.turn_id


class GrowingSTT(FakeSTT):
    """Batch STT whose text grows with the audio (one word per 0.25 s)."""

    def __init__(self) -> None:
        super().__init__(lambda wav: "")

    async def transcribe(self, audio: bytes, config: Any = None) -> STTResult:
        self.calls.append((audio, config))
        pcm, _, _ = wav_to_pcm16(audio)
        words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
        return STTResult(text=" ".join(words[: max(1, len(pcm) // 8000)]))


async def test_interim_transcripts_share_the_final_segment_and_never_start_a_turn() -> None:
    config = WorkerSettings(_env_file=None, INTERIM_TRANSCRIPTS=True, INTERIM_INTERVAL_MS=150)
    llm = ScriptedLLM(["Heard you."])
    stt = GrowingSTT()
    tts = FakeTTS(chars_per_second=15.0)
    orchestrator = ConversationOrchestrator(
        ConversationProviders(llm=llm, stt=stt, tts=tts), OrchestratorConfig(system_prompt="test")
    )
    room = FakeRoom()
    session = RoomSession(
        config, room, OrchestratorConversation(orchestrator, tts), FakeListener, room_name="r"
    )
    session.start()
    session.on_participant_joined(ParticipantInfo("alice", "Alice", {}))
    try:
        session.on_speech_start("alice")
        pcm = b"\x01\x00" * 16000 * 2  # two seconds, fed in 100 ms pieces at twice real time
        for i in range(0, len(pcm), 3200):
            session.on_speech_audio("alice", pcm[i : i + 3200])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        interims = [t for t in room.events("transcript") if not t.final]
        assert len(interims) >= 2, room.types()
        assert llm.requests == [] and "turn_start" not in room.types(), "interim results start no turn"
        assert len(room.interim_transcripts) == len(interims)  # as lk.transcription interim segments too
        session.on_speech_end("alice", pcm)
        final = await room.wait_for(lambda e: e.type == "transcript" and e.final)
        await room.wait_for(lambda e: e.type == "turn_end")
        assert {t.segment_id for t in interims} == {final.segment_id}
        assert final.text == "one two three four five six seven eight"
        assert not [
            t for t in room.events("transcript")[room.events("transcript").index(final) :] if not t.final
        ]
        assert next(m.content for m in orchestrator.history if m.role == "user").endswith(final.text)
    finally:
        await session.aclose()


# ------------------------------------------------------------------------------------------ end of turn


@pytest.fixture(scope="module")
def vad_engine() -> Any:
    from llmrtc.audio.vad import VADEngine

    return VADEngine.load("onnx")


class Recorder:
    """The listener's callbacks, with their stream time (seconds of audio pushed)."""

    def __init__(self) -> None:
        self.clock: Any = lambda: 0.0
        self.events: list[tuple[str, float, int]] = []

    @property
    def now(self) -> float:
        return float(self.clock())

    def on_speech_start(self, identity: str) -> None:
        self.events.append(("start", self.now, 0))

    def on_speech_end(self, identity: str, pcm16k: bytes, split: bool = False) -> None:
        self.events.append(("end", self.now, len(pcm16k)))

    def on_interruption(self, identity: str) -> None:
        self.events.append(("interruption", self.now, 0))

    def on_speech_audio(self, identity: str, pcm16k: bytes) -> None:
        return None

    def on_turn_predicted(self, identity: str, pcm16k: bytes) -> None:
        self.events.append(("predicted", self.now, len(pcm16k)))

    def on_turn_resumed(self, identity: str) -> None:
        self.events.append(("resumed", self.now, 0))


async def run_clip(engine: Any, cid: str, settings: WorkerSettings) -> tuple[Any, Recorder]:
    from tests.fixtures.turn_corpus import corpus, load_clip
    from worker.listeners import ListenerFactory

    clip = next(c for c in corpus() if c.id == cid)
    pcm = load_clip(clip) + b"\x00\x00" * 16000 * 2  # two seconds of silence after it
    rec = Recorder()
    listener = ListenerFactory(settings, engine)("alice", rec)
    rec.clock = lambda: listener.stream_time_s
    try:
        for i in range(0, len(pcm), 640):  # 20 ms frames, as the room delivers them
            listener.push(pcm[i : i + 640])
            await asyncio.sleep(0.01)  # twice real time: the model answers within its probe window
        await asyncio.sleep(0.3)
    finally:
        await listener.aclose()
    return clip, rec


@pytest.mark.parametrize(
    ("pause_id", "complete_id"), [("pause_08_0", "complete_00_0"), ("pause_05_3", "complete_06_1")]
)
async def test_smart_turn_in_the_worker_listener(vad_engine: Any, pause_id: str, complete_id: str) -> None:
    settings = WorkerSettings(_env_file=None, TURN_DETECTION="smart-turn", PREEMPTIVE_GENERATION=True)
    clip, rec = await run_clip(vad_engine, pause_id, settings)
    ends = [e for e in rec.events if e[0] == "end"]
    assert len(ends) == 1, rec.events  # the mid-sentence pause did not end the turn
    assert ends[0][1] > clip.pause_end_s and ends[0][2] / 32000 >= clip.speech_end_s - clip.speech_start_s
    predicted = [e for e in rec.events if e[0] == "predicted"]
    inside = [e for e in predicted if clip.pause_start_s <= e[1] <= clip.pause_end_s]
    if inside:  # a preemptive reply started in the pause is cancelled when the speech resumes
        assert any(e[0] == "resumed" and e[1] > inside[0][1] for e in rec.events)
    clip, rec = await run_clip(vad_engine, complete_id, settings)
    ends = [e for e in rec.events if e[0] == "end"]
    assert len(ends) == 1
    # within the short silence (250 ms) of the end of speech, not the long one (1600 ms): Silero's last
    # voiced window trails the true end of speech by up to ~150 ms, and windows are 32 ms
    assert ends[0][1] - clip.speech_end_s <= 0.25 + 0.25, (ends, clip.speech_end_s)
    assert [e for e in rec.events if e[0] == "predicted"], "a complete question is predicted (preemptive)"


# ------------------------------------------------------------------------------ words that stop mid-sentence


class SaidSTT(FakeSTT):
    """Batch STT that returns the next of ``said`` for each utterance, in order."""

    def __init__(self, *said: str) -> None:
        super().__init__(lambda wav: "")
        self._said = list(said)

    async def transcribe(self, audio: bytes, config: Any = None) -> STTResult:
        self.calls.append((audio, config))
        return STTResult(text=self._said.pop(0) if self._said else "")


async def held_session(
    stt: FakeSTT, replies: list[ScriptedReply | str], **settings: Any
) -> tuple[RoomSession, FakeRoom, ConversationOrchestrator, ScriptedLLM]:
    # VAD_MIN_SILENCE_MS 600 and TURN_MAX_SILENCE_MS 900: words that stop mid-sentence wait 300 ms more
    values = {"PREEMPTIVE_GENERATION": False, "TURN_TEXT_CHECK": True, "TURN_MAX_SILENCE_MS": 900, **settings}
    session, room, orchestrator, _, llm = await session_with(replies, stt=stt, **values)
    return session, room, orchestrator, llm


def user_turns(orchestrator: ConversationOrchestrator) -> list[str]:
    return [str(m.content) for m in orchestrator.history if m.role == "user"]


async def test_words_that_stop_mid_sentence_wait_and_are_answered_with_the_rest() -> None:
    stt = SaidSTT(PARTIAL_TEXT, "Paris on Friday.")
    session, room, orchestrator, llm = await held_session(stt, ["Booked."])
    try:
        session.on_speech_start("alice")
        session.on_speech_end("alice", HALF)  # "... a flight to" [pause]
        await room.wait_for(lambda e: e.type == "transcript")
        await asyncio.sleep(0.15)  # inside the 300 ms hold
        assert llm.requests == [] and "turn_start" not in room.types(), "the pause did not end the turn"
        session.on_speech_start("alice")  # "Paris on Friday."
        await asyncio.sleep(0.4)  # past the hold: the continuation cancelled it
        assert llm.requests == []
        session.on_speech_end("alice", HALF)
        end = await room.wait_for(lambda e: e.type == "turn_end")
        assert end.outcome == "completed"
        assert len(llm.requests) == 1 and len(room.events("turn_start")) == 1, "one turn for both pieces"
        assert user_turns(orchestrator) == [f"{PARTIAL_TEXT} Paris on Friday."]
        assert [t.text for t in room.events("transcript")] == [PARTIAL_TEXT, "Paris on Friday."]
        assert room.types().count("speech_end") == 2  # one per utterance heard, none for the hold
    finally:
        await session.aclose()


async def test_held_words_are_answered_alone_after_the_hold_when_nothing_follows() -> None:
    stt = SaidSTT("I was wondering if")
    session, room, orchestrator, _ = await held_session(stt, ["Go on?"])
    try:
        session.on_speech_start("alice")
        session.on_speech_end("alice", HALF)
        shown = await room.wait_for(lambda e: e.type == "transcript")
        started = time.monotonic()
        await room.wait_for(lambda e: e.type == "turn_start", within=3)
        waited = time.monotonic() - started
        assert 0.25 <= waited <= 1.0, waited  # the 300 ms hold, then answered: never lost
        await room.wait_for(lambda e: e.type == "turn_end")
        assert user_turns(orchestrator) == ["I was wondering if"] and shown.text == "I was wondering if"
        assert room.types().count("speech_end") == 1, "the hold's end is not announced twice"
    finally:
        await session.aclose()


async def test_complete_words_are_not_held() -> None:
    stt = SaidSTT("Book me a flight to Paris.")
    session, room, _, _ = await held_session(stt, ["Done."], TURN_MAX_SILENCE_MS=3000)
    try:
        session.on_speech_start("alice")
        session.on_speech_end("alice", HALF)
        started = time.monotonic()
        await room.wait_for(lambda e: e.type == "turn_start", within=3)
        assert time.monotonic() - started < 1.0, "answered at once, not after the 2.4 s hold"
    finally:
        await session.aclose()


async def test_no_preemptive_reply_on_words_that_stop_mid_sentence() -> None:
    stt = SaidSTT(PARTIAL_TEXT, "Paris.")
    session, room, orchestrator, llm = await held_session(stt, ["Paris it is."], PREEMPTIVE_GENERATION=True)
    try:
        session.on_speech_start("alice")
        session.on_turn_predicted("alice", HALF)  # the audio model thinks "... a flight to" is complete
        await until(lambda: len(stt.calls) == 1)
        await asyncio.sleep(0.2)
        assert llm.requests == [], "no reply is started on words that stop mid-sentence"
        session.on_speech_end("alice", HALF)
        await room.wait_for(lambda e: e.type == "transcript")
        session.on_speech_start("alice")
        session.on_speech_end("alice", HALF)
        await room.wait_for(lambda e: e.type == "turn_end")
        assert user_turns(orchestrator) == [f"{PARTIAL_TEXT} Paris."]
        assert len(stt.calls) == 2, "the prediction's transcription was reused for the held words"
    finally:
        await session.aclose()


def test_the_text_check_is_off_with_a_fixed_silence_unless_asked() -> None:
    from worker.turn_taking import turn_detection_settings

    def hold(**values: Any) -> float | None:
        settings = WorkerSettings(_env_file=None, **values)
        return turn_detection_settings(settings).unfinished_hold_ms(settings.vad_min_silence_ms)

    assert hold() is None
    assert hold(TURN_TEXT_CHECK=True) == 1000.0  # up to 1600 ms in all after the 600 ms silence
    assert hold(TURN_DETECTION="smart-turn") == 1600.0 - 250.0
    assert hold(TURN_DETECTION="smart-turn", TURN_TEXT_CHECK=False) is None
    assert hold(TURN_DETECTION="smart-turn", STT_LANGUAGE="de") is None  # only English is checked
    assert hold(TURN_DETECTION="smart-turn", TURN_TEXT_LANGUAGE="en-GB", STT_LANGUAGE="de") == 1350.0
