"""The worker in a real room: dev server, ``python -m worker dev``, participants on the livekit SDK publishing
espeak-made speech, and the real OpenAI providers talking to a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from signalling.devserver.server import DevServer
from tests.fixtures import fixture_path
from tests.integration.worker.harness import BackgroundLoop, Human, WorkerProcess
from tests.integration.worker.openai_fake import OpenAIFake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

Servers = tuple[DevServer, OpenAIFake, BackgroundLoop]


async def _join(dev: DevServer, room: str, identity: str, name: str) -> Human:
    human = await Human(dev.url, room, identity, name).join()
    return human


async def _wait_agent_ready(human: Human, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while "listening" not in human.agent_states:
        if loop.time() > deadline:
            raise TimeoutError(f"the agent never became ready in {human.room_name}: {human.agent_states}")
        await asyncio.sleep(0.1)


def _index(types: list[str], kind: str, start: int = 0) -> int:
    return types.index(kind, start)


async def test_one_user_asks_a_question(servers: Servers, worker: WorkerProcess, room_name: str) -> None:
    dev, fake, _ = servers
    fake.transcripts.append("What is the capital of France?")
    fake.replies.append("The capital of France is Paris.")
    alice = await _join(dev, room_name, "alice", "Alice")
    try:
        await _wait_agent_ready(alice)
        await alice.say(fixture_path("capital_16k"))
        _, done = await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)
        types = alice.types()
        t = _index(types, "transcript")
        c = _index(types, "llm_chunk", t)
        f = _index(types, "llm", c)
        s = _index(types, "tts_start", f)
        e = _index(types, "tts_complete", s)
        assert t < c < f < s < e
        transcript = alice.of_type("transcript")[0]
        assert transcript["participant_identity"] == "alice"
        assert transcript["participant_name"] == "Alice"
        assert transcript["text"] == "What is the capital of France?"
        assert "".join(m["content"] for m in alice.of_type("llm_chunk")) == "The capital of France is Paris."
        assert alice.of_type("llm")[0]["text"] == "The capital of France is Paris."
        assert alice.of_type("tts_start")[0]["turn_id"] == done["turn_id"]
        start_at = next(at for at, ev in alice.events if ev["type"] == "tts_start")
        loud = await alice.wait_loud(start_at - 0.5, frames=80)  # 31 chars of fake speech: about 1.7 s
        assert loud[-1].at - loud[0].at > 1.0
        for _ in range(50):  # text streams finish shortly after the data events
            if len(alice.transcriptions) >= 2:
                break
            await asyncio.sleep(0.1)
        # LiveKit clients attribute a transcription by the track it transcribes (the SFU stamps the sender)
        mic_sid = next(iter(alice.room.local_participant.track_publications))
        user_tr = [
            tr for tr in alice.transcriptions if tr["attributes"].get("lk.transcribed_track_id") == mic_sid
        ]
        assert user_tr, alice.transcriptions
        assert user_tr[0]["text"] == "What is the capital of France?"
        assert user_tr[0]["attributes"]["lk.transcription_final"] == "true"
        agent_tr = [
            tr for tr in alice.transcriptions if tr["attributes"].get("lk.transcribed_track_id") != mic_sid
        ]
        assert agent_tr and agent_tr[0]["text"] == "The capital of France is Paris."
        assert agent_tr[0]["attributes"]["lk.transcription_final"] == "true"
        agent = next(iter(alice.room.remote_participants.values()))
        assert agent_tr[0]["attributes"]["lk.transcribed_track_id"] in agent.track_publications
        assert {"listening", "thinking", "speaking"} <= set(alice.agent_states)
        states = alice.agent_states
        assert states.index("thinking") < states.index("speaking")
        deadline = time.monotonic() + 10  # the state attribute may trail the last events on a loaded machine
        while alice.agent_states[-1] != "listening":
            assert time.monotonic() < deadline, (
                f"the agent never went back to listening: {alice.agent_states}"
            )
            await asyncio.sleep(0.05)
    finally:
        await alice.leave()


async def test_two_users_are_attributed(servers: Servers, worker: WorkerProcess, room_name: str) -> None:
    dev, fake, _ = servers
    alice = await _join(dev, room_name, "alice2", "Alice")
    bob = await _join(dev, room_name, "bob2", "Bob")
    try:
        await _wait_agent_ready(alice)
        fake.transcripts.extend(["Hello, I am Alice.", "And I am Bob."])
        fake.replies.extend(["Hi Alice.", "Hi Bob."])
        n_chat = len(fake.chat_requests)
        await alice.say(fixture_path("hello_16k"))
        await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)
        await bob.say(fixture_path("dragon_16k"))
        _, second = await bob.wait_for(
            lambda e: e["type"] == "transcript" and e["participant_identity"] == "bob2", within=30
        )
        assert second["participant_name"] == "Bob" and second["text"] == "And I am Bob."
        await bob.wait_for(lambda e: e["type"] == "llm" and e["text"] == "Hi Bob.", within=30)
        first = next(e for e in alice.of_type("transcript") if e["participant_identity"] == "alice2")
        assert first["participant_name"] == "Alice" and first["text"] == "Hello, I am Alice."
        request = fake.chat_requests[-1]
        assert len(fake.chat_requests) >= n_chat + 2
        users = [m for m in request["messages"] if m["role"] == "user"]
        named = {(m.get("name"), m["content"]) for m in users}
        assert ("Alice", "Hello, I am Alice.") in named
        assert ("Bob", "And I am Bob.") in named
    finally:
        await bob.leave()
        await alice.leave()


async def test_barge_in_cancels_and_silences(servers: Servers, worker: WorkerProcess, room_name: str) -> None:
    dev, fake, _ = servers
    long_answer = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 12))
    alice = await _join(dev, room_name, "alice3", "Alice")
    try:
        await _wait_agent_ready(alice)
        fake.transcripts.extend(["Tell me a long story.", "Stop, that is enough."])
        fake.replies.extend([long_answer, "Okay, stopping."])
        await alice.say(fixture_path("story_16k"))
        _, start = await alice.wait_for(lambda e: e["type"] == "tts_start", within=30)
        await asyncio.sleep(1.5)
        n = len(alice.events)
        await alice.say(fixture_path("hello_16k"), wait=False)
        await alice.wait_for(
            lambda e: e["type"] == "speech_start" and e["participant_identity"] == "alice3",
            start=n,
            within=15,
        )
        barge_at, barge = await alice.wait_for(lambda e: e["type"] == "barge_in", start=n, within=15)
        assert barge["turn_id"] == start["turn_id"] and barge["participant_identity"] == "alice3"
        _, cancelled = await alice.wait_for(lambda e: e["type"] == "tts_cancelled", within=15)
        assert cancelled["turn_id"] == start["turn_id"]
        assert cancelled["reason"] == "barge_in" and cancelled["by"] == "alice3"
        cut = (
            max(h.at for h in alice.heard if barge_at - 1.0 <= h.at <= barge_at + 1.0 and h.rms > 300)
            - barge_at
        )
        assert not [e for e in alice.of_type("tts_complete") if e["turn_id"] == start["turn_id"]]
        _, nxt = await alice.wait_for(
            lambda e: e["type"] == "llm" and e["text"] == "Okay, stopping.", within=30
        )
        done_at, _ = await alice.wait_for(
            lambda e: e["type"] == "tts_complete" and e["turn_id"] == nxt["turn_id"], within=30
        )
        # The same edge for a normal answer: tts_complete is sent when the worker's last frame left its source,
        # so (last loud frame - tts_complete) is the dev server's and the receiver's buffering downstream of
        # the worker (the dev server's aiortc jitter buffer plus the client's), which the cut also includes.
        await asyncio.sleep(0.8)
        downstream = (
            max(h.at for h in alice.heard if done_at - 1.0 <= h.at <= done_at + 0.8 and h.rms > 300) - done_at
        )
        print(
            f"barge-in: audio stopped {cut * 1000:.0f} ms after the event; downstream {downstream * 1000:.0f} ms"
        )
        assert cut - max(0.0, downstream) <= 0.3, f"audio went on {cut:.3f}s after the barge-in"
        # Measured here at the listener, all buffering included: 112-233 ms.
        assert cut <= 0.5, "even with the dev server's buffering the agent must fall silent quickly"
        history = fake.chat_requests[-1]["messages"]
        interrupted = [m for m in history if m["role"] == "assistant"]
        assert interrupted and len(interrupted[-1]["content"]) < len(long_answer)
    finally:
        await alice.leave()


async def test_typed_text_is_answered_without_stt(
    servers: Servers, worker: WorkerProcess, room_name: str
) -> None:
    dev, fake, _ = servers
    alice = await _join(dev, room_name, "alice4", "Alice")
    try:
        await _wait_agent_ready(alice)
        fake.replies.append("Two plus two is four.")
        n_stt = len(fake.transcriptions)
        await alice.send(json.dumps({"v": 1, "type": "text", "text": "What is two plus two?"}))
        _, tr = await alice.wait_for(lambda e: e["type"] == "transcript", within=20)
        assert tr["source"] == "text" and tr["text"] == "What is two plus two?"
        await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)
        types = alice.types()
        assert _index(types, "llm_chunk") < _index(types, "llm") < _index(types, "tts_start")
        assert len(fake.transcriptions) == n_stt
        assert fake.chat_requests[-1]["messages"][-1]["content"] == "What is two plus two?"
    finally:
        await alice.leave()


async def test_bad_messages_get_errors_and_leaving_mid_turn_is_fine(
    servers: Servers, worker: WorkerProcess, room_name: str
) -> None:
    dev, fake, _ = servers
    alice = await _join(dev, room_name, "alice5", "Alice")
    bob = await _join(dev, room_name, "bob5", "Bob")
    try:
        await _wait_agent_ready(alice)
        bad = {
            "invalid_json": b"{not json",
            "message_too_large": json.dumps({"type": "text", "text": "a" * 20000}).encode(),
            "invalid_message": json.dumps({"type": "text", "text": 123}).encode(),
        }
        for code, payload in bad.items():
            await alice.send(payload)
            await alice.wait_for(lambda e, c=code: e["type"] == "error" and e["code"] == c, within=10)
        await alice.send(json.dumps({"type": "dance"}))
        await alice.wait_for(lambda e: e["type"] == "error" and e["code"] == "invalid_message", within=10)
        await asyncio.sleep(0.5)
        assert not bob.of_type("error"), "errors go to the sender only"
        assert not alice.of_type("transcript") and not alice.of_type("llm")

        fake.transcripts.append("Are you still there?")
        fake.replies.append("Yes, I am still here.")
        await alice.say(fixture_path("capital_16k"))
        await alice.wait_for(lambda e: e["type"] == "llm" and e["text"] == "Yes, I am still here.", within=30)
        await alice.wait_for(lambda e: e["type"] == "tts_complete", within=30)

        fake.transcripts.append("Tell me something long.")
        fake.replies.append(" ".join(f"Bob, this is part {i} of your answer." for i in range(4)))
        n = len(alice.events)
        await bob.say(fixture_path("story_16k"))
        await alice.wait_for(lambda e: e["type"] == "tts_start", within=30, start=n)
        await bob.leave()
        fake.replies.append("Still fine.")
        await asyncio.sleep(1.0)
        await alice.send(json.dumps({"type": "text", "text": "Still working?"}))
        await alice.wait_for(lambda e: e["type"] == "llm" and e["text"] == "Still fine.", within=40)
        assert not [
            e for e in alice.of_type("error") if e["code"] not in bad and e["code"] != "invalid_message"
        ]
    finally:
        await alice.leave()


def test_rooms_share_one_process_and_one_vad_model(worker: WorkerProcess) -> None:
    """Thread executor: every room of this module ran in the one worker process, with one VAD model load."""
    out = worker.output()
    assert out.count("joined room") >= 4
    assert out.count("loaded Silero VAD") == 1
    assert out.count("room is empty or closed: ending the job") >= 4
    assert "turn crashed" not in out and "job failed" not in out
