"""Turn taking in a real room: the worker (``python -m worker dev``, Smart Turn, interim transcripts and
preemptive generation on) on the dev server, a participant on the official livekit SDK publishing espeak
speech, the real OpenAI providers against the local fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.worker.harness import (
    BackgroundLoop,
    Human,
    WorkerProcess,
    running_worker,
    worker_env,
)
from tests.integration.worker.openai_fake import OpenAIFake, TranscriptRule

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]
STORY = (
    "Tell me a long story about a brave dragon who lived in a castle by the sea, and guarded a treasure of "
    "gold for a thousand years."
)


@pytest.fixture(scope="module")
def turn_worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    # the growing utterance gets longer transcripts (the interim requests), the whole one the full text
    words = STORY.split()
    fake.rules = [
        TranscriptRule(0.0, 2.0, " ".join(words[:3])),
        TranscriptRule(2.0, 4.0, " ".join(words[:8])),
        TranscriptRule(4.0, 6.5, " ".join(words[:14])),
        TranscriptRule(6.5, 60.0, STORY),  # the whole utterance: 7 s of speech with its pads
    ]
    env = worker_env(
        dev,
        fake,
        TURN_DETECTION="smart-turn",
        INTERIM_TRANSCRIPTS="true",
        INTERIM_INTERVAL_MS="400",
        PREEMPTIVE_GENERATION="true",
    )
    with running_worker(env, tmp_path_factory.mktemp("turn-worker") / "worker.log") as proc:
        yield proc


async def test_interim_transcripts_arrive_before_the_final_one(
    servers: Servers, turn_worker: WorkerProcess
) -> None:
    dev, fake, _ = servers
    fake.replies.append("Once upon a time there was a dragon.")
    alice = await Human(dev.url, "turn-room-1", "alice", "Alice").join()
    try:
        await alice.wait_agent_state("listening")
        await alice.say(fixture_path("story_16k"))
        _, final = await alice.wait_for(lambda e: e["type"] == "transcript" and e["final"], within=30)
        await alice.wait_for(lambda e: e["type"] == "turn_end", within=30)
        events = [e for _, e in alice.events if e["type"] == "transcript"]
        interims = events[: events.index(final)]
        assert len(interims) >= 2, events
        assert all(not e["final"] for e in interims)
        assert {e["segment_id"] for e in interims} == {final["segment_id"]}
        assert final["text"] == STORY
        assert len(interims[-1]["text"]) >= len(interims[0]["text"])  # the words grow as she speaks
        # after the final: no interim of that utterance
        assert not [e for e in events[events.index(final) :] if not e["final"]]
        # the same as lk.transcription segments on behalf of her microphone, interim then final
        for _ in range(50):
            if any(tr["attributes"].get("lk.transcription_final") == "true" for tr in alice.transcriptions):
                break
            await asyncio.sleep(0.1)
        mic_sid = next(iter(alice.room.local_participant.track_publications))
        mine = [
            tr for tr in alice.transcriptions if tr["attributes"].get("lk.transcribed_track_id") == mic_sid
        ]
        flags = [tr["attributes"]["lk.transcription_final"] for tr in mine]
        assert "false" in flags and flags[-1] == "true" and flags.index("false") < flags.index("true"), flags
        assert {tr["attributes"]["lk.segment_id"] for tr in mine} == {final["segment_id"]}
        # interim results never start a turn: one turn, answered once
        assert len(alice.of_type("turn_start")) == 1
        assert alice.of_type("turn_end")[-1]["outcome"] == "completed"
    finally:
        await alice.leave()
