"""A minimal LiveKit Agents voice agent, the baseline of ``bench/turn_taking.py``.

Stock ``AgentSession``: Silero VAD (``livekit-plugins-silero``), LiveKit's own turn detector
(``inference.TurnDetector(version="v1-mini")``, the audio end-of-turn model of ``livekit-local-inference``,
run locally: no download, no cloud), the OpenAI plugins (``livekit-plugins-openai``) pointed at
``OPENAI_BASE_URL``, preemptive generation on (its default), jobs on threads like the llmrtc worker.
Run as a worker: ``python bench/lk_agents_baseline.py start`` with ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``,
``LIVEKIT_API_SECRET``, ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` set.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentSession, JobContext, JobExecutorType, WorkerOptions, cli, inference
from livekit.plugins import openai, silero


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    base_url = os.environ["OPENAI_BASE_URL"]
    session: AgentSession = AgentSession(
        vad=silero.VAD.load(),
        stt=openai.STT(base_url=base_url, model="whisper-1"),
        llm=openai.LLM(base_url=base_url, model="gpt-test"),
        tts=openai.TTS(base_url=base_url, model="tts-1", response_format="pcm"),
        turn_handling={"turn_detection": inference.TurnDetector(version="v1-mini")},
    )
    await session.start(agent=Agent(instructions="You are a helpful voice assistant."), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, job_executor_type=JobExecutorType.THREAD, port=0))
