"""An unmodified LiveKit Agents voice agent: ``AgentSession`` with the stock openai and silero plugins.

Run as ``python -m tests.integration.devserver_agents.stock_agent dev`` with ``LIVEKIT_URL``/``_API_KEY``/
``_API_SECRET`` set and ``OPENAI_BASE_URL`` pointing at an OpenAI-compatible server (the tests' local fake).
Nothing here knows about the development server: code that works here must work on livekit-server, and the
other way round.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentSession, JobContext, JobExecutorType, WorkerOptions, cli
from livekit.plugins import openai, silero


async def entrypoint(ctx: JobContext) -> None:
    """Join the room and answer whoever speaks, through STT, LLM and TTS."""
    await ctx.connect()
    base_url = os.environ["OPENAI_BASE_URL"]
    session: AgentSession = AgentSession(
        vad=silero.VAD.load(),
        stt=openai.STT(model="whisper-1", base_url=base_url, use_realtime=False),
        llm=openai.LLM(model="gpt-test", base_url=base_url),
        tts=openai.TTS(model="tts-1", voice="alloy", base_url=base_url, response_format="pcm"),
        # VAD turns and VAD interruptions: the default detectors are LiveKit Cloud services (no network here)
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )
    await session.start(agent=Agent(instructions="You are a helpful voice assistant."), room=ctx.room)


def options() -> WorkerOptions:
    """Automatic dispatch (no agent name), jobs in threads (one process: quick to start in tests)."""
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=1,
    )


if __name__ == "__main__":
    cli.run_app(options())
