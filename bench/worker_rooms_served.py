"""Does a worker keep anything of the rooms it has served? Idle CPU and threads after N rooms, one after another.

The real ``python -m worker dev`` (thread executor, the fake providers of the worker tests, the dev server on
a thread of this process; ``--executor process``: each job in a process, counted with the worker); one official-SDK human per room says one utterance, hears the answer and leaves;
the next room starts after it. After each batch the worker's CPU rate is read over ``--window`` seconds of
idleness (from ``/proc/PID/stat``) with its threads by name.

Usage::

    .venv/bin/python bench/worker_rooms_served.py                 # after 1, 5 and 15 rooms
    .venv/bin/python bench/worker_rooms_served.py --batches 1 4 10 --window 8
    .venv/bin/python bench/worker_rooms_served.py --executor process   # jobs in processes of their own
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from capacity import process_tree, tree_cpu_s  # noqa: E402
from worker_memory import talk_once  # noqa: E402

from tests.integration.worker.harness import (  # noqa: E402
    Human,
    WorkerProcess,
    running_servers,
    worker_env,
)
from tests.integration.worker.openai_fake import OpenAIFake  # noqa: E402


def threads(pid: int) -> Counter[str]:
    """The threads of the process and its descendants (job processes), by name."""
    names: Counter[str] = Counter()
    for proc in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            names.update((t / "comm").read_text().strip() for t in Path(f"/proc/{proc.pid}/task").iterdir())
    return names


def idle_cpu(pid: int, window_s: float) -> float:
    """Cores used by the worker and its job processes while nothing happens, over ``window_s``."""
    before = tree_cpu_s(pid)
    time.sleep(window_s)
    return (tree_cpu_s(pid) - before) / window_s


async def serve(url: str, first: int, n: int) -> None:
    for i in range(first, first + n):
        human = await Human(url, f"served-{i}", "human", "Human").join()
        try:
            await talk_once(human)
        finally:
            with contextlib.suppress(Exception):
                await human.leave()
        await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 10], help="rooms per batch")
    parser.add_argument("--window", type=float, default=8.0, help="seconds of idleness measured")
    parser.add_argument("--executor", choices=["thread", "process"], default="thread")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a batch before measuring")
    args = parser.parse_args()
    fake = OpenAIFake(default_transcript="What is the capital of France?", default_reply="Paris.")
    with running_servers(fake) as (dev, fake, _):
        env = worker_env(dev, fake, WORKER_EXECUTOR=args.executor, WORKER_LOAD_THRESHOLD="1.0")
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"worker-rooms-served-{time.time_ns()}.log"
        worker = WorkerProcess(env, log).start()
        try:
            worker.wait_registered(120)
            time.sleep(args.settle)
            assert worker.proc is not None
            pid = worker.proc.pid
            print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
            names = threads(pid)
            print(
                f"rooms served 0: idle CPU {idle_cpu(pid, args.window):.3f} cores, threads {sum(names.values())}"
            )
            served = 0
            for n in args.batches:
                asyncio.run(serve(dev.url, served, n))
                served += n
                time.sleep(args.settle)
                cpu = idle_cpu(pid, args.window)
                names = threads(pid)
                print(
                    f"rooms served {served}: idle CPU {cpu:.3f} cores, threads {sum(names.values())} "
                    f"({', '.join(f'{k} x{v}' for k, v in names.most_common())})",
                    flush=True,
                )
        finally:
            worker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
