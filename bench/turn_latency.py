"""Turn latency benchmark: time to first audio with streaming TTS versus speaking after the LLM finishes.

Runs spoken turns through :class:`~llmrtc.orchestrator.ConversationOrchestrator` with the scripted fakes of
:mod:`llmrtc.testing` (an LLM with a set time to first token and token rate, a TTS with a set latency), in
both modes (``OrchestratorConfig(streaming_tts=True/False)``), and prints, per case, the medians of:

* **first audio**: from the start of the turn to the first ``TTSAudioEvent`` the consumer receives;
* **LLM done**: from the start of the turn to the LLM's last chunk;
* the ratio first audio (streaming) / first audio (speak after the LLM).

The repetitions of a case and both modes run side by side in one event loop (independent orchestrators),
so slow moments of a shared machine hit both modes alike. A second part measures the orchestrator's own CPU
cost per turn with every delay at zero: process CPU time per turn, minus the cost of the fakes alone
(the same LLM stream and TTS synthesis without the orchestrator)::

    .venv/bin/python bench/turn_latency.py            # full sweep (about a minute)
    .venv/bin/python bench/turn_latency.py --quick    # smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmrtc.chunking import SentenceChunker  # noqa: E402
from llmrtc.events import LLMFinalEvent, TTSAudioEvent, TurnCompleteEvent  # noqa: E402
from llmrtc.orchestrator import ConversationOrchestrator, ConversationProviders, OrchestratorConfig  # noqa: E402
from llmrtc.testing import FakeSTT, FakeTTS, ScriptedLLM, tokenize, tone_wav  # noqa: E402
from llmrtc.types import LLMChunk, LLMRequest, Message  # noqa: E402

# A typical spoken answer: three sentences, about 60 tokens (words and word pieces).
ANSWER = (
    "Sure, the weather in Lisbon today is mostly sunny with a light breeze from the west. "
    "Temperatures should reach about twenty three degrees in the afternoon, dropping to sixteen tonight. "
    "If you are heading out later, a light jacket would be a good idea."
)
TTFTS_MS = (100, 300, 800)
RATES = (20, 50)
TTS_LATENCIES_MS = (0, 100)


class TimedLLM(ScriptedLLM):
    """A :class:`ScriptedLLM` that notes when its stream yields the last chunk (the LLM is done)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.done_at: float | None = None

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        async for chunk in super().stream(request):
            if chunk.done:
                self.done_at = time.perf_counter()
            yield chunk


class CachedTTS(FakeTTS):
    """A :class:`FakeTTS` that synthesizes each text once per process (shared by all instances), so neither
    the latencies nor the CPU figures include the fake's numpy synthesis."""

    _cache: ClassVar[dict[str, bytes]] = {}

    def render(self, text: str) -> bytes:
        pcm = self._cache.get(text)
        if pcm is None:
            pcm = self._cache[text] = super().render(text)
        return pcm


def spoken_pieces(streaming: bool) -> list[str]:
    """The texts the TTS is asked for in one turn: sentence pieces when streaming, else the whole answer."""
    if not streaming:
        return [ANSWER]
    chunker = SentenceChunker()
    pieces = [piece for token in tokenize(ANSWER) for piece in chunker.push(token)]
    return pieces + chunker.flush()


@dataclass(slots=True)
class TurnTiming:
    first_audio_ms: float
    llm_done_ms: float


async def one_turn(streaming: bool, ttft_ms: float, rate: float | None, tts_ms: float) -> TurnTiming:
    """One spoken turn on a fresh orchestrator; times from the start of the turn."""
    llm = TimedLLM([ANSWER], ttft_s=ttft_ms / 1000, tokens_per_s=rate)
    providers = ConversationProviders(
        llm=llm, stt=FakeSTT(["What is the weather in Lisbon?"]), tts=CachedTTS(latency_s=tts_ms / 1000)
    )
    orch = ConversationOrchestrator(providers, OrchestratorConfig(streaming_tts=streaming))
    wav = tone_wav(0.5)
    start = time.perf_counter()
    first_audio: float | None = None
    completed = False
    async for event in orch.run_turn_stream(wav, speaker="Alice"):
        if isinstance(event, TTSAudioEvent) and first_audio is None:
            first_audio = time.perf_counter()
        elif isinstance(event, TurnCompleteEvent):
            completed = True
    if first_audio is None or llm.done_at is None or not completed:
        raise RuntimeError(f"turn did not complete with audio (streaming={streaming})")
    return TurnTiming((first_audio - start) * 1000, (llm.done_at - start) * 1000)


async def latency_case(ttft_ms: float, rate: float, tts_ms: float, runs: int) -> dict[str, Any]:
    """``runs`` turns of each mode, all side by side; medians."""
    jobs = [one_turn(mode, ttft_ms, rate, tts_ms) for _ in range(runs) for mode in (True, False)]
    results = await asyncio.gather(*jobs)
    streaming = results[0::2]
    after = results[1::2]
    row = {
        "ttft_ms": ttft_ms,
        "tokens_per_s": rate,
        "tts_latency_ms": tts_ms,
        "runs": runs,
        "streaming_first_audio_ms": statistics.median(t.first_audio_ms for t in streaming),
        "after_llm_first_audio_ms": statistics.median(t.first_audio_ms for t in after),
        "llm_done_ms": statistics.median(t.llm_done_ms for t in streaming + after),
    }
    row["ratio"] = row["streaming_first_audio_ms"] / row["after_llm_first_audio_ms"]
    return row


async def fakes_only(turns: int, streaming: bool) -> None:
    """The fakes' own work for ``turns`` turns: transcription, the LLM stream, the synthesis of the answer."""
    llm = ScriptedLLM([ANSWER] * turns)
    tts = CachedTTS()
    stt = FakeSTT(["What is the weather in Lisbon?"] * turns)
    wav = tone_wav(0.5)
    pieces = spoken_pieces(streaming)
    request = LLMRequest(messages=[Message(role="user", content="What is the weather in Lisbon?")])
    for _ in range(turns):
        await stt.transcribe(wav)
        async for _chunk in llm.stream(request):
            pass
        for piece in pieces:
            async for _audio in tts.speak_stream(piece):
                pass


async def orchestrated(turns: int, streaming: bool) -> None:
    """``turns`` spoken turns with zero delays through one orchestrator (history capped as in production)."""
    providers = ConversationProviders(
        llm=ScriptedLLM([ANSWER] * turns),
        stt=FakeSTT(["What is the weather in Lisbon?"] * turns),
        tts=CachedTTS(),
    )
    orch = ConversationOrchestrator(providers, OrchestratorConfig(streaming_tts=streaming))
    wav = tone_wav(0.5)
    for _ in range(turns):
        final = False
        async for event in orch.run_turn_stream(wav, speaker="Alice"):
            final = final or isinstance(event, LLMFinalEvent)
        if not final:
            raise RuntimeError("turn ended without a final answer")


def cpu_ms_per_turn(coro_factory: Any, turns: int) -> float:
    cpu0 = time.process_time()
    asyncio.run(coro_factory(turns))
    return (time.process_time() - cpu0) * 1000 / turns


def cpu_cost(turns: int, repeats: int) -> dict[str, Any]:
    """CPU ms per turn (best of ``repeats``: the least disturbed by other load), with and without the fakes."""
    out: dict[str, Any] = {"turns": turns, "repeats": repeats}
    for label, streaming in (("streaming", True), ("after_llm", False)):
        cpu_ms_per_turn(lambda n, s=streaming: orchestrated(n, s), max(5, turns // 10))  # warm-up
        fakes = min(cpu_ms_per_turn(lambda n, s=streaming: fakes_only(n, s), turns) for _ in range(repeats))
        total = min(cpu_ms_per_turn(lambda n, s=streaming: orchestrated(n, s), turns) for _ in range(repeats))
        out[f"{label}_fakes_ms"] = fakes
        out[f"{label}_total_ms"] = total
        out[f"{label}_orchestrator_ms"] = total - fakes
    return out


def print_tables(rows: list[dict[str, Any]], cpu: dict[str, Any], runs: int) -> None:
    tokens = len(tokenize(ANSWER))
    print(f"\nTime to first audio (median of {runs} turns per mode; answer: {tokens} tokens, 3 sentences)\n")
    print(
        "| TTFT | tokens/s | TTS latency | first audio, streaming | first audio, after LLM | LLM done | ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['ttft_ms']:.0f} ms | {r['tokens_per_s']:.0f} | {r['tts_latency_ms']:.0f} ms "
            f"| {r['streaming_first_audio_ms']:.0f} ms | {r['after_llm_first_audio_ms']:.0f} ms "
            f"| {r['llm_done_ms']:.0f} ms | {r['ratio']:.2f} |"
        )
    print(
        f"\nCPU per turn, zero delays (process CPU time, best of {cpu['repeats']} runs of {cpu['turns']} turns)\n"
    )
    print("| mode | whole turn | fakes alone | orchestrator |")
    print("| --- | ---: | ---: | ---: |")
    for label, name in (("streaming", "streaming TTS"), ("after_llm", "speak after LLM")):
        print(
            f"| {name} | {cpu[label + '_total_ms']:.2f} ms | {cpu[label + '_fakes_ms']:.2f} ms "
            f"| {cpu[label + '_orchestrator_ms']:.2f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: one case, few turns")
    parser.add_argument("--runs", type=int, default=None, help="turns per mode and case (default 7; quick 3)")
    parser.add_argument("--cpu-turns", type=int, default=None, help="turns per CPU measurement (default 200)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs = args.runs or (3 if args.quick else 7)
    cpu_turns = args.cpu_turns or (20 if args.quick else 200)
    cases = (
        [(300.0, 50.0, 100.0)]
        if args.quick
        else [(float(t), float(r), float(s)) for t in TTFTS_MS for r in RATES for s in TTS_LATENCIES_MS]
    )
    wall0 = time.perf_counter()
    for streaming in (True, False):  # synthesize every text the turns speak once, before timing
        for piece in spoken_pieces(streaming):
            CachedTTS().render(piece)
    rows = [asyncio.run(latency_case(t, r, s, runs)) for t, r, s in cases]
    cpu = cpu_cost(cpu_turns, 1 if args.quick else 3)
    print_tables(rows, cpu, runs)
    print(f"\n(wall time of the benchmark: {time.perf_counter() - wall0:.1f} s)")
    if args.json:
        print(json.dumps({"latency": rows, "cpu": cpu}, indent=2))


if __name__ == "__main__":
    main()
