"""The LiveKit Agents side of ``bench/capacity.py``: a minimal ``AgentSession`` with the stock silero and openai
plugins, the openai ones pointed at the benchmark's local OpenAI-compatible fake (``OPENAI_BASE_URL``).

Turn-taking is set to match the llmrtc worker in the benchmark: VAD end of turn after 550 ms of silence
(silero's default ``min_silence_duration``; the llmrtc worker runs with ``VAD_MIN_SILENCE_MS=550``) and no
extra endpointing delay (livekit-agents adds 0.5 s by default), VAD interruptions (the default detectors
are LiveKit Cloud services). ``LK_EXECUTOR=thread`` (default) or ``process`` picks the job executor.
Run: ``python bench/lk_agent.py dev`` with ``LIVEKIT_URL``/``_API_KEY``/``_API_SECRET`` set.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentSession, JobContext, JobExecutorType, JobProcess, WorkerOptions, cli
from livekit.plugins import openai, silero


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    base_url = os.environ["OPENAI_BASE_URL"]
    session: AgentSession = AgentSession(
        vad=ctx.proc.userdata["vad"],
        stt=openai.STT(model="whisper-1", base_url=base_url, use_realtime=False),
        llm=openai.LLM(model="gpt-test", base_url=base_url),
        tts=openai.TTS(model="tts-1", voice="alloy", base_url=base_url, response_format="pcm"),
        turn_handling={
            "turn_detection": "vad",
            "interruption": {"mode": "vad"},
            "endpointing": {"min_delay": 0.0},
        },
    )
    await session.start(agent=Agent(instructions="You are a helpful voice assistant."), room=ctx.room)


if __name__ == "__main__":
    executor = (
        JobExecutorType.PROCESS if os.environ.get("LK_EXECUTOR") == "process" else JobExecutorType.THREAD
    )
    cli.run_app(
        WorkerOptions(entrypoint_fnc=entrypoint, prewarm_fnc=prewarm, job_executor_type=executor, port=0)
    )
