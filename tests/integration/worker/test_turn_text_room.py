"""The check of the words in a real room: a sentence with a mid-sentence pause, said into a room whose worker
ends turns after a short fixed silence (``TURN_DETECTION=vad``, 300 ms: every pause of the corpus ends an
utterance) with ``TURN_TEXT_CHECK=true``. The words before the pause stop mid-sentence, so the agent waits
for the rest and answers the whole sentence once, never inside the pause."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from signalling.devserver.server import DevServer
from tests.fixtures.turn_corpus import corpus
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
CLIP = "pause_04_2"  # "What is the best way to get from the station to ... the old town?", a 1 s pause
HEAD = "What is the best way to get from the station to"
TAIL = "The old town?"
WHOLE = "What is the best way to get from the station to the old town?"
JOINED = f"{HEAD} {TAIL}"  # the two utterances' transcripts, answered as one message


@pytest.fixture(scope="module")
def held_worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    dev, fake, _ = servers
    # what an STT hears in each utterance, told apart by length: the second half alone (0.7 s of speech
    # and its pads), the first half alone (2.5 s and its pads), or the whole sentence
    fake.rules = [
        TranscriptRule(0.0, 2.0, TAIL),
        TranscriptRule(2.0, 4.0, HEAD),
        TranscriptRule(4.0, 60.0, WHOLE),
    ]
    env = worker_env(dev, fake, TURN_DETECTION="vad", VAD_MIN_SILENCE_MS="300", TURN_TEXT_CHECK="true")
    with running_worker(env, tmp_path_factory.mktemp("held-worker") / "worker.log") as proc:
        yield proc


async def test_words_that_stop_mid_sentence_are_answered_with_the_rest(
    servers: Servers, held_worker: WorkerProcess
) -> None:
    dev, fake, _ = servers
    clip = next(c for c in corpus("pause") if c.id == CLIP)
    assert clip.pause_end_s is not None and clip.pause_end_s - clip.pause_start_s >= 0.8  # type: ignore[operator]
    fake.replies.append("Take the number five tram to the old town.")
    alice = await Human(dev.url, "turn-text-room", "alice", "Alice").join()
    try:
        await alice.wait_agent_state("listening")
        await alice.say(clip.path, wait=False)
        for _ in range(500):  # when its first sample left the microphone
            if alice.speech_out:
                break
            await asyncio.sleep(0.01)
        assert alice.speech_out, "the microphone took the clip"
        started = alice.speech_out[-1]
        await alice.wait_for(lambda e: e["type"] == "turn_end", within=40)
        finals = [e["text"] for e in alice.of_type("transcript") if e["final"]]
        assert finals == [HEAD, TAIL], finals  # two utterances: the 300 ms silence ended one in the pause
        assert len(alice.of_type("turn_start")) == 1, "one turn for the whole sentence"
        asked = [m for m in fake.chat_requests[-1]["messages"] if m["role"] == "user"]
        assert str(asked[-1]["content"]) == JOINED, asked[-1]
        heard = alice.loud_after(started + 0.05)
        assert heard, "the answer was heard"
        assert heard[0].at > started + clip.speech_end_s, "no agent audio before the sentence was over"
        assert "stop mid-sentence" in held_worker.output()
    finally:
        await alice.leave()
