"""Worker memory: where a worker process's memory goes, idle, with 1 room and with 4 rooms.

The development server and the OpenAI-compatible fake of the worker tests run on a thread of this process
(``tests/integration/worker/harness.py``: ``running_servers``, ``provider_env``); the worker is
``python -m worker dev`` (thread executor, as in ``bench/capacity.py``); the humans are official-SDK
participants (``Human``) in this process, one per room, each saying one utterance and hearing the answer.

At each stage (``idle``: registered, no room; ``1 room``; ``4 rooms``; ``after``: every human gone) it reads
the worker's ``/proc/PID/smaps_rollup`` (RSS, PSS, anonymous) and ``/proc/PID/smaps`` grouped by mapping:
each shared library by name, ``[heap]`` (the main malloc arena), anonymous mappings that start on a 64 MiB
boundary (glibc's per-thread malloc arenas), thread stacks and other anonymous memory; and the thread count
by thread name. With ``--imports`` it lists the top-level packages the worker imported after it registered
(at its first job; from ``PYTHONPROFILEIMPORTTIME``).

Usage::

    .venv/bin/python bench/worker_memory.py                        # one run, the full breakdown
    .venv/bin/python bench/worker_memory.py --runs 3               # min/median/max of RSS over 3 runs
    .venv/bin/python bench/worker_memory.py --runs 3 --env MALLOC_ARENA_MAX=8 --json out.json
    .venv/bin/python bench/worker_memory.py --imports              # + what the first job imports
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures import fixture_path  # noqa: E402
from tests.integration.worker.harness import (  # noqa: E402
    API_KEY,
    API_SECRET,
    Human,
    WorkerProcess,
    provider_env,
    running_servers,
)
from tests.integration.worker.openai_fake import OpenAIFake  # noqa: E402

ARENA_ALIGN = 64 * 2**20
"""glibc maps each per-thread malloc arena (heap) at a 64 MiB boundary (HEAP_MAX_SIZE on 64-bit)."""
STAGES = ("idle", "1 room", "4 rooms", "after")
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


@dataclass
class Snapshot:
    """The worker's memory at one stage (MiB)."""

    stage: str
    rss: float
    pss: float
    anonymous: float
    threads: int
    cpu_s: float = 0.0
    """The worker's CPU time (user + system) since it started."""
    groups: dict[str, float] = field(default_factory=dict)
    """RSS by mapping group."""
    arenas: int = 0
    """Anonymous mappings at 64 MiB boundaries (glibc thread arenas) holding memory."""
    thread_names: dict[str, int] = field(default_factory=dict)
    largest: list[tuple[str, str, int, float]] = field(default_factory=list)
    """The mappings holding most memory: (address, name or group, size KiB, RSS MiB)."""


def _group(name: str, start: int, perms: str, size_kb: int) -> str:
    if name.startswith("["):
        return name  # [heap], [stack], [vdso], ...
    if name:
        base = os.path.basename(name)
        if ("site-packages" in name and base.endswith(".so")) or ".cpython-" in base:
            pkg = name.split("site-packages/", 1)[-1].split("/", 1)[0]
            if "onnxruntime" in base or "livekit_ffi" in base:
                return base
            return (
                f"ext modules ({pkg})" if pkg in ("numpy", "scipy", "pydantic_core") else "other ext modules"
            )
        return re.sub(r"\.so[.0-9]*$", ".so", base)
    if start % ARENA_ALIGN == 0 and size_kb <= ARENA_ALIGN // 1024:
        return "anon: malloc thread arenas"
    return "anon: other (mmap'd malloc chunks, stacks, Python arenas)"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(pid: int, stage: str) -> Snapshot:
    """Read ``/proc/PID`` now."""
    rollup: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        rollup[key] = int(rest.split()[0]) / 1024
    groups: dict[str, float] = defaultdict(float)
    arenas = 0
    current = ""
    header = ""
    mappings: list[tuple[str, str, int, float]] = []
    start = 0
    perms = ""
    size_kb = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = _HEADER.match(line)
        if m:
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            perms, size_kb = m.group(3), (end - start) // 1024
            current = _group(m.group(4).strip(), start, perms, size_kb)
            header = f"{m.group(1)} {perms} {m.group(4).strip() or current}"
            continue
        if line.startswith("Rss:"):
            kb = int(line.split()[1])
            groups[current] += kb / 1024
            mappings.append((header.split()[0], " ".join(header.split()[1:]), size_kb, kb / 1024))
            if kb and current == "anon: malloc thread arenas":
                arenas += 1
    names: Counter[str] = Counter()
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir():
        with contextlib.suppress(OSError):
            names[re.sub(r"[-_ ]?\d+$", "", (task / "comm").read_text().strip())] += 1
    return Snapshot(
        stage,
        rss=rollup["Rss"],
        pss=rollup["Pss"],
        anonymous=rollup["Anonymous"],
        threads=sum(names.values()),
        cpu_s=_cpu_s(pid),
        groups=dict(groups),
        arenas=arenas,
        thread_names=dict(names),
        largest=sorted(mappings, key=lambda m: -m[3])[:20],
    )


# ------------------------------------------------------------------------------------------------ one run


async def talk_once(human: Human) -> None:
    """Wait for the agent, say one utterance, wait for the spoken answer to end."""
    await human.wait_agent_state("listening", within=60)
    await human.say(fixture_path("capital_16k"))
    await human.wait_for(lambda e: e["type"] == "tts_complete", within=60)


async def _stages(url: str, pid: int, settle_s: float) -> tuple[list[Snapshot], float]:
    """The snapshots, and how long the first room waited for its agent to listen (job start)."""
    snaps: list[Snapshot] = []
    humans: list[Human] = []
    try:
        joined = time.monotonic()
        first = await Human(url, "mem-0", "human-0", "Human 0").join()
        humans.append(first)
        await first.wait_agent_state("listening", within=60)
        first_ready_s = time.monotonic() - joined
        await talk_once(first)
        await asyncio.sleep(settle_s)
        snaps.append(snapshot(pid, "1 room"))
        more = [await Human(url, f"mem-{i}", f"human-{i}", f"Human {i}").join() for i in range(1, 4)]
        humans += more
        await asyncio.gather(*(talk_once(h) for h in more))
        await asyncio.sleep(settle_s)
        snaps.append(snapshot(pid, "4 rooms"))
    finally:
        for human in humans:
            with contextlib.suppress(Exception):
                await human.leave()
    await asyncio.sleep(settle_s + 3.0)  # the jobs end when their room empties
    snaps.append(snapshot(pid, "after"))
    return snaps, first_ready_s


def run_once(extra_env: dict[str, str], settle_s: float, imports: bool, logs: Path) -> dict[str, Any]:
    """One fresh worker through every stage; its snapshots (and lazy imports with ``imports``)."""
    fake = OpenAIFake(
        default_transcript="What is the capital of France?", default_reply="Sure, happy to help."
    )
    with running_servers(fake) as (dev, fake, _):
        env = {
            "LIVEKIT_URL": dev.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "AGENT_NAME": "",  # automatic dispatch
            "VAD_MIN_SILENCE_MS": "550",
            "WORKER_EXECUTOR": "thread",
            "WORKER_LOAD_THRESHOLD": "1.0",
            **provider_env(fake),
            **extra_env,
        }
        if imports:
            env["PYTHONPROFILEIMPORTTIME"] = "1"
        worker = WorkerProcess(env, logs / f"worker-{time.time_ns()}.log").start()
        try:
            worker.wait_registered(120)
            time.sleep(settle_s)
            assert worker.proc is not None
            pid = worker.proc.pid
            snaps = [snapshot(pid, "idle")]
            registered_at = len(worker.output())
            stages, first_ready_s = asyncio.run(_stages(dev.url, pid, settle_s))
            snaps += stages
            lazy = _lazy_imports(worker.output()[registered_at:]) if imports else []
        finally:
            worker.stop()
    return {"snapshots": [asdict(s) for s in snaps], "lazy_imports": lazy, "first_ready_s": first_ready_s}


def _lazy_imports(log: str) -> list[tuple[str, float]]:
    """Top-level packages imported after registration, with their cumulative import time (ms)."""
    cumulative: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cum, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not name.startswith(" ") and "." not in name.strip():
            cumulative[name.strip()] += int(cum) / 1000
        elif not name.startswith(" "):
            cumulative[name.strip().split(".")[0]] += int(cum) / 1000
    return sorted(cumulative.items(), key=lambda kv: -kv[1])


# ------------------------------------------------------------------------------------------------ report


def _spread(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def _mmm(xs: list[float]) -> str:
    return "/".join(f"{x:.0f}" for x in _spread(xs))


def report(runs: list[dict[str, Any]], loads: list[tuple[float, float]]) -> str:
    lines = [
        f"runs: {len(runs)}; load average (1 min) before/after each run: "
        + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in loads),
        "",
        "first room: join -> agent listening, s (min/median/max): "
        + "/".join(f"{x:.2f}" for x in _spread([r["first_ready_s"] for r in runs])),
        "",
        "RSS / PSS / anonymous MiB (min/median/max), threads, thread arenas holding memory, worker CPU s:",
    ]
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for snap in run["snapshots"]:
            by_stage[snap["stage"]].append(snap)
    for stage in STAGES:
        snaps = by_stage[stage]
        if not snaps:
            continue
        lines.append(
            f"  {stage:8} RSS {_mmm([s['rss'] for s in snaps]):>13}  PSS {_mmm([s['pss'] for s in snaps]):>13}"
            f"  anon {_mmm([s['anonymous'] for s in snaps]):>13}  threads {_mmm([s['threads'] for s in snaps])}"
            f"  arenas {_mmm([s['arenas'] for s in snaps])}"
            f"  cpu {'/'.join(f'{x:.1f}' for x in _spread([s['cpu_s'] for s in snaps]))}"
        )
    names = sorted({g for run in runs for s in run["snapshots"] for g in s["groups"]})
    med = {
        stage: {g: statistics.median([s["groups"].get(g, 0.0) for s in by_stage[stage]]) for g in names}
        for stage in STAGES
        if by_stage[stage]
    }
    lines += [
        "",
        "RSS by mapping, MiB (median over runs):",
        "  " + f"{'mapping':58}" + "".join(f"{stage:>10}" for stage in med),
    ]
    order = sorted(names, key=lambda g: -max(med[st][g] for st in med))
    rest = {st: 0.0 for st in med}
    for g in order:
        if max(med[st][g] for st in med) < 2.0:
            for st in med:
                rest[st] += med[st][g]
            continue
        lines.append(f"  {g:58}" + "".join(f"{med[st][g]:>10.1f}" for st in med))
    lines.append(f"  {'(everything under 2 MiB)':58}" + "".join(f"{rest[st]:>10.1f}" for st in med))
    last = runs[-1]["snapshots"]
    lines += ["", "threads by name (last run):"]
    for snap in last:
        top = sorted(snap["thread_names"].items(), key=lambda kv: -kv[1])
        lines.append(f"  {snap['stage']:8} " + ", ".join(f"{n} x{c}" for n, c in top))
    one_room = next((s for s in last if s["stage"] == "1 room"), None)
    if one_room is not None:
        lines += ["", "largest mappings with 1 room (last run): address perms name, size KiB, RSS MiB:"]
        lines += [
            f"  {addr} {name[:70]:72} {size:>9} {rss:>7.1f}" for addr, name, size, rss in one_room["largest"]
        ]
    lazy = runs[-1]["lazy_imports"]
    if lazy:
        lines += ["", "imported after registration (top-level package: cumulative import ms):"]
        lines.append("  " + ", ".join(f"{n} {ms:.0f}" for n, ms in lazy[:40]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the worker's environment")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each snapshot")
    parser.add_argument(
        "--imports", action="store_true", help="list what the worker imports at its first job"
    )
    parser.add_argument("--json", type=Path, help="write the raw snapshots here")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    runs: list[dict[str, Any]] = []
    loads: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        for _ in range(args.runs):
            before = os.getloadavg()[0]
            runs.append(run_once(extra, args.settle, args.imports, Path(tmp)))
            loads.append((before, os.getloadavg()[0]))
    if args.json:
        args.json.write_text(json.dumps({"env": extra, "loads": loads, "runs": runs}, indent=1))
    print(f"worker environment: {extra or '(defaults)'}")
    print(report(runs, loads))


if __name__ == "__main__":
    main()
