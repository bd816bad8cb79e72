"""``console``: talk to an agent in the terminal, without a room or a LiveKit server.

``python -m worker console`` (or ``python my_agent.py console``) runs the agent's real pipeline, the same
:class:`~worker.session.RoomSession`, VAD, STT, LLM, tools, playbook, hooks, metrics and events as in a
room, with the terminal as the room:

- type a line and press Enter: a typed turn (as a ``text`` message in a room);
- ``/wav PATH``: speak a WAV file (any rate, 16-bit): it goes through the VAD and the STT like a microphone;
- ``/quit`` (or end of input): leave.

Transcripts, the answer as it streams, tool calls, stage changes and errors are printed as they happen; the
agent's audio is written to ``--out`` (default ``console-agent.wav``). ``--say TEXT`` and ``--wav PATH`` run
one turn each and exit (for scripts). There is no microphone capture (``--mic``) on machines without
``sounddevice``; use ``--wav``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import wave
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from llmrtc.audio.codec import resample_pcm16
from llmrtc.audio.vad import get_shared_engine
from llmrtc.audio.wav import wav_to_pcm16
from llmrtc.errors import ConfigError, LLMRTCError
from worker.conversation import build_conversation
from worker.listeners import ListenerFactory
from worker.observability import process_metrics
from worker.protocol import (
    AgentState,
    ErrorMsg,
    LLMChunkMsg,
    ServerEvent,
    StageChangeMsg,
    TextInput,
    ToolCallMsg,
    ToolResultMsg,
    TranscriptMsg,
    TTSCancelledMsg,
    TurnEndMsg,
)
from worker.room import ParticipantInfo
from worker.session import RoomSession

if TYPE_CHECKING:
    from worker.agent import Agent

USER = ParticipantInfo(identity="console-user", name="You")
FRAME = 320  # 10 ms of 16 kHz PCM16, in samples


class WavAudioOut:
    """The agent's "speaker": PCM appended to a WAV file as it is played (no real-time pacing)."""

    def __init__(self, path: Path, sample_rate: int = 24000) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._file = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
        self._file.setnchannels(1)
        self._file.setsampwidth(2)
        self._file.setframerate(sample_rate)
        self.seconds = 0.0

    async def capture(self, pcm: bytes, sample_rate: int) -> None:
        if sample_rate != self.sample_rate:
            pcm = resample_pcm16(pcm, sample_rate, self.sample_rate)
        self._file.writeframes(pcm)
        self.seconds += len(pcm) / 2 / self.sample_rate

    async def flush(self) -> None:
        return None

    def clear(self) -> float:
        return 0.0

    @property
    def queued_s(self) -> float:
        return 0.0

    async def wait_for_playout(self) -> None:
        return None

    def close(self) -> None:
        self._file.close()


class ConsoleRoom:
    """The terminal as the room: what the worker would send to the room is printed."""

    def __init__(self, out: WavAudioOut, stream: TextIO = sys.stdout) -> None:
        self._audio = out
        self._stream = stream
        self._streaming = False
        self.turn_ended = asyncio.Event()
        self.state: AgentState = "initializing"

    @property
    def audio(self) -> WavAudioOut:
        return self._audio

    def _line(self, text: str) -> None:
        if self._streaming:
            self._stream.write("\n")
            self._streaming = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def send(self, event: ServerEvent, destination: list[str] | None = None) -> None:
        if isinstance(event, TranscriptMsg):
            if event.final:
                self._line(f"[{event.participant_name}] {event.text}")
        elif isinstance(event, LLMChunkMsg):
            if not self._streaming:
                self._stream.write("[agent] ")
                self._streaming = True
            self._stream.write(event.content)
            self._stream.flush()
        elif isinstance(event, ToolCallMsg):
            self._line(f"[tool] {event.name}({event.arguments})")
        elif isinstance(event, ToolResultMsg):
            self._line(f"[tool] {event.name} -> {'ok' if event.success else event.error}")
        elif isinstance(event, StageChangeMsg):
            self._line(f"[stage] {event.from_stage} -> {event.to_stage}")
        elif isinstance(event, TTSCancelledMsg):
            self._line(f"[cancelled] heard: {event.heard_text!r}")
        elif isinstance(event, ErrorMsg):
            self._line(f"[error] {event.code}: {event.message}")
            if event.component == "stt":  # the words were lost: no turn will follow
                self.turn_ended.set()
        elif isinstance(event, TurnEndMsg):
            self._line(
                f"[turn {event.outcome}] ({self._audio.seconds:.1f} s of agent audio in {self._audio.path})"
            )
            self.turn_ended.set()

    def set_agent_state(self, state: AgentState) -> None:
        self.state = state

    def user_transcription(self, identity: str, text: str, segment_id: str, final: bool = True) -> None:
        return None

    def agent_transcription(self, segment_id: str, delta: str, final: bool = False) -> None:
        return None


def wav_as_16k(path: Path) -> bytes:
    """A WAV file as 16 kHz mono PCM16 (ConfigError when unreadable)."""
    try:
        pcm, rate, channels = wav_to_pcm16(path.read_bytes())
    except (OSError, LLMRTCError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} as a 16-bit WAV: {exc}") from exc
    if channels > 1:
        import numpy as np

        samples = np.frombuffer(pcm, dtype=np.int16).reshape(-1, channels).mean(axis=1)
        pcm = samples.astype(np.int16).tobytes()
    return resample_pcm16(pcm, rate, 16000) if rate != 16000 else pcm


class Console:
    """One console conversation: the agent's pipeline and a session whose room is the terminal."""

    def __init__(self, agent: Agent, out_path: Path, stream: TextIO = sys.stdout) -> None:
        self.agent = agent
        self.out = WavAudioOut(out_path)
        self.room = ConsoleRoom(self.out, stream)
        self._session: RoomSession | None = None
        self._providers: object = None

    async def start(self) -> None:
        agent = self.agent
        settings = agent.settings
        providers = await asyncio.to_thread(agent.create_providers)
        self._providers = providers
        tools = agent.create_tools()
        conversation = build_conversation(
            settings,
            providers,
            session_id="console",
            tools=tools,
            playbook=agent.create_playbook(tools),
            hooks=agent.create_hooks(),
            metrics=process_metrics(),
        )
        engine = await asyncio.to_thread(get_shared_engine)
        session = RoomSession(
            settings.model_copy(update={"greeting": ""}),
            self.room,
            conversation,
            ListenerFactory(settings, engine),
            room_name="console",
            metrics=process_metrics(),
        )
        self._session = session
        session.start()
        session.on_participant_joined(USER)

    async def say(self, text: str) -> None:
        """One typed turn, to its end."""
        assert self._session is not None
        self.room.turn_ended.clear()
        self._session.on_data(USER.identity, TextInput(text=text).to_bytes())
        await self.room.turn_ended.wait()

    async def speak(self, path: Path, timeout_s: float = 60.0) -> None:
        """Speak a WAV file through the VAD and STT, then wait for the agent's turn to end."""
        assert self._session is not None
        pcm = wav_as_16k(path) + b"\x00\x00" * 16000 * 2  # trailing silence ends the utterance
        self.room.turn_ended.clear()
        step = FRAME * 2
        for i in range(0, len(pcm), step):
            self._session.on_audio(USER.identity, pcm[i : i + step])
            if i % (step * 50) == 0:
                await asyncio.sleep(0)  # let the listener run
        await asyncio.wait_for(self.room.turn_ended.wait(), timeout_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()
        aclose = getattr(self._providers, "aclose", None)
        if aclose is not None:
            await aclose()
        self.out.close()


async def _interactive(console: Console, stdin: TextIO) -> None:
    loop = asyncio.get_running_loop()
    print("llmrtc console: type a message and press Enter; /wav PATH speaks a WAV file; /quit leaves.")
    while True:
        print("> ", end="", flush=True)
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/wav "):
            try:
                await console.speak(Path(line[5:].strip()))
            except (ConfigError, TimeoutError) as exc:
                print(f"[error] {exc}")
            continue
        await console.say(line)


def main(agent: Agent, args: list[str]) -> int:
    """``console`` for ``agent``; the exit status."""
    parser = argparse.ArgumentParser(prog="console", description="Talk to the agent in the terminal.")
    parser.add_argument("--say", action="append", default=[], help="a typed turn (repeatable), then exit")
    parser.add_argument("--wav", action="append", default=[], type=Path, help="speak a WAV file, then exit")
    parser.add_argument("--out", type=Path, default=Path("console-agent.wav"), help="the agent's audio")
    parser.add_argument("--mic", action="store_true", help="speak through the microphone")
    options = parser.parse_args(args)
    from worker.cli import quiet_third_party_logs

    quiet_third_party_logs()
    if options.mic:
        print(
            "llmrtc console: no microphone capture on this machine (needs the sounddevice package and an "
            "input device); use --wav PATH",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        agent.check()
        console = Console(agent, options.out)
        await console.start()
        try:
            if options.say or options.wav:
                for text in options.say:
                    await console.say(text)
                for path in options.wav:
                    await console.speak(path)
            else:
                await _interactive(console, sys.stdin)
        finally:
            await console.aclose()

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"llmrtc console: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


__all__ = ["Console", "ConsoleRoom", "WavAudioOut", "main", "wav_as_16k"]
