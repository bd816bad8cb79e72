"""Input-streaming TTS: one stream per turn fed as the LLM writes; the playout knows the words heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from llmrtc.events import TTSAudioEvent, TurnCompleteEvent
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders
from llmrtc.playout import Playout
from llmrtc.providers.base import TTSCapabilities, TTSProvider
from llmrtc.testing import ScriptedLLM
from llmrtc.types import TTSChunk, TTSConfig, WordTiming

RATE = 16000
WORD_S = 0.2


class StreamingTTS(TTSProvider):
    """Speaks each word for 200 ms and reports its timing, on one stream per call."""

    name = "streaming-fake"
    capabilities = TTSCapabilities(streaming=True, input_streaming=True)
    sample_rate = RATE

    def __init__(self) -> None:
        self.streams = 0
        self.pieces: list[str] = []

    async def speak_stream(self, text: str, config: TTSConfig | None = None) -> AsyncIterator[TTSChunk]:
        raise AssertionError("the pipeline must use speak_text_stream")
        yield TTSChunk(b"", RATE)  # pragma: no cover

    async def speak_text_stream(
        self, texts: AsyncIterable[str], config: TTSConfig | None = None
    ) -> AsyncIterator[TTSChunk]:
        self.streams += 1
        at = 0.0
        async for piece in texts:
            self.pieces.append(piece)
            for word in piece.split():
                words = (WordTiming(word, at, at + WORD_S),)
                at += WORD_S
                yield TTSChunk(b"\x10\x00" * int(RATE * WORD_S), RATE, words)


class SlowOut:
    """An audio output that plays in real time (so a cut lands mid-answer)."""

    def __init__(self, mark_s: float = 0.0) -> None:
        self.played = 0
        self.mark_s = mark_s
        self.reached = asyncio.Event()
        """Set once ``mark_s`` seconds were played."""

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        await asyncio.sleep(len(pcm) / 2 / sample_rate)
        self.played += len(pcm)
        if self.played / 2 / sample_rate >= self.mark_s:
            self.reached.set()

    async def flush(self) -> None:
        return None

    def clear(self) -> float:
        return 0.0

    @property
    def queued_s(self) -> float:
        return 0.0

    async def wait_for_playout(self) -> None:
        return None


ANSWER = "One two three. Four five six. Seven eight nine."


async def test_one_stream_fed_while_the_llm_writes() -> None:
    tts = StreamingTTS()
    llm = ScriptedLLM([ANSWER], tokens_per_s=30)
    orch = ConversationOrchestrator(ConversationProviders(llm=llm, tts=tts))
    events = [e async for e in orch.run_text_turn_stream("count", turn_id="t1")]
    assert tts.streams == 1, "one stream for the whole answer"
    assert [p.strip() for p in tts.pieces] == ["One two three.", "Four five six.", "Seven eight nine."]
    audio = [e for e in events if isinstance(e, TTSAudioEvent)]
    assert audio[-1].last_in_segment and audio[-1].text == ANSWER
    done = [e for e in events if isinstance(e, TurnCompleteEvent)]
    assert done and done[0].metadata["usage"]["tts_characters"] == len(  # type: ignore[index]
        "One two three. Four five six. Seven eight nine."
    )


async def test_a_cut_records_the_words_heard() -> None:
    tts = StreamingTTS()
    orch = ConversationOrchestrator(ConversationProviders(llm=ScriptedLLM([ANSWER]), tts=tts))
    out = SlowOut(mark_s=4 * WORD_S + 0.05)  # four words and a bit
    playout = Playout(out)

    async def consume() -> None:
        async for _ in orch.run_text_turn_stream("count", turn_id="t2", playout=playout):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(out.reached.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    answer = orch.history[-1]
    assert answer.interrupted and answer.content == "One two three. Four", answer.content
