"""File benchmarks: anyio's files (worker threads) on asyncio, asyncio+uvloop and trio, against
anyio_uring's files on the ring.

Usage: python benchmarks/files_bench.py [--reps 5] [--duration 0.5] [--only seq,random,small,stat]
[--tasks 1,64] [--runtimes asyncio,uvloop,trio,uring] [--json results.json]

Every runtime runs the *same* code through anyio's API (``anyio.run`` with backend ``asyncio``,
``asyncio`` + ``use_uvloop``, ``trio``, and ``uring``); only the file API differs:
``anyio.open_file``/``anyio.Path`` for the peers, ``anyio_uring.open_file``/``anyio_uring.Path``
for the ring.  Each workload runs with one task and with 64 tasks (``--tasks``); set-up is not
timed:

* ``seq``: 256 MiB (in the page cache) read in 64 KiB ``read()`` calls -> GB/s.  One task reads
  the whole file; with N tasks, each reads its own 1/N slice through its own file object.
* ``random``: each task, with its own file object, ``seek()`` + ``read(4096)`` at random
  4 KiB-aligned offsets of that file for ``--duration`` seconds -> reads/s.
* ``small``: the tasks ``open()``/``read()``/``aclose()`` 4 KiB files (1000 of them, in turn)
  for ``--duration`` seconds -> files/s.
* ``stat``: the tasks ``Path.stat()`` those files for ``--duration`` seconds -> stats/s.

Runs are interleaved (every runtime once per workload and task count per repetition, in turn);
the table shows the median of ``--reps`` repetitions and the ring's speed-up over the best peer.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import anyio

import anyio_uring

BIG = 256 * 1024 * 1024
SEQ_CHUNK = 64 * 1024
RANDOM_SIZE = 4096
SMALL_FILES = 1000
SMALL_SIZE = 4096

#: (label, anyio.run keyword arguments, open_file, Path)
RUNTIMES: list[tuple[str, dict[str, Any], Any, Any]] = [
    ("asyncio", {"backend": "asyncio"}, anyio.open_file, anyio.Path),
    ("uvloop", {"backend": "asyncio", "backend_options": {"use_uvloop": True}}, anyio.open_file, anyio.Path),
    ("trio", {"backend": "trio"}, anyio.open_file, anyio.Path),
    ("uring", {"backend": "uring"}, anyio_uring.open_file, anyio_uring.Path),
]

#: Targets: the ring's speed-up over the best peer, by (workload, tasks); 64 is the default.
TARGETS = {"seq": 2.0, "random": 10.0, "small": 5.0, "stat": 5.0}
TARGETS_ONE_TASK = {"random": 5.0}
UNITS = {"seq": "GB/s", "random": "reads/s", "small": "files/s", "stat": "stats/s"}


# ============================================================================ workloads


async def _run_tasks(tasks: int, worker: Callable[[int], Awaitable[int]]) -> float:
    """Start ``tasks`` workers together; units per second over the whole run."""
    counts: list[int] = []

    async def run(i: int) -> None:
        counts.append(await worker(i))

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(run, i)
    return sum(counts) / (time.perf_counter() - t0)


async def bench_seq(open_file: Any, path_cls: Any, d: Path, duration: float, tasks: int) -> float:
    share = BIG // tasks
    files = [await open_file(d / "big.bin", "rb") for _ in range(tasks)]
    for i, f in enumerate(files):
        await f.seek(i * share)

    async def worker(i: int) -> int:
        f = files[i]
        total = 0
        while total < share:
            data = await f.read(min(SEQ_CHUNK, share - total))
            if not data:
                break
            total += len(data)
        assert total == share, total
        return total

    rate = await _run_tasks(tasks, worker)
    for f in files:
        await f.aclose()
    return rate / 1e9


async def bench_random(open_file: Any, path_cls: Any, d: Path, duration: float, tasks: int) -> float:
    files = [await open_file(d / "big.bin", "rb") for _ in range(tasks)]
    blocks = BIG // RANDOM_SIZE

    async def worker(i: int) -> int:
        f = files[i]
        rng = random.Random(i)
        deadline = time.perf_counter() + duration
        n = 0
        while time.perf_counter() < deadline:
            for _ in range(16):
                await f.seek(rng.randrange(blocks) * RANDOM_SIZE)
                data = await f.read(RANDOM_SIZE)
                assert len(data) == RANDOM_SIZE
            n += 16
        return n

    rate = await _run_tasks(tasks, worker)
    for f in files:
        await f.aclose()
    return rate


async def bench_small(open_file: Any, path_cls: Any, d: Path, duration: float, tasks: int) -> float:
    names = [d / "small" / f"{i}.txt" for i in range(SMALL_FILES)]

    async def worker(i: int) -> int:
        deadline = time.perf_counter() + duration
        n = 0
        k = i
        while time.perf_counter() < deadline:
            for _ in range(8):
                f = await open_file(names[k % SMALL_FILES], "rb")
                data = await f.read()
                await f.aclose()
                assert len(data) == SMALL_SIZE
                k += tasks
            n += 8
        return n

    return await _run_tasks(tasks, worker)


async def bench_stat(open_file: Any, path_cls: Any, d: Path, duration: float, tasks: int) -> float:
    paths = [path_cls(d / "small" / f"{i}.txt") for i in range(SMALL_FILES)]

    async def worker(i: int) -> int:
        deadline = time.perf_counter() + duration
        n = 0
        k = i
        while time.perf_counter() < deadline:
            for _ in range(16):
                st = await paths[k % SMALL_FILES].stat()
                assert st.st_size == SMALL_SIZE
                k += tasks
            n += 16
        return n

    return await _run_tasks(tasks, worker)


WORKLOADS: dict[str, Callable[..., Awaitable[float]]] = {
    "seq": bench_seq,
    "random": bench_random,
    "small": bench_small,
    "stat": bench_stat,
}


# ============================================================================ driver


def setup(d: Path) -> None:
    block = os.urandom(1024 * 1024)
    with open(d / "big.bin", "wb") as f:
        for _ in range(BIG // len(block)):
            f.write(block)
    (d / "small").mkdir()
    for i in range(SMALL_FILES):
        (d / "small" / f"{i}.txt").write_bytes(os.urandom(SMALL_SIZE))
    with open(d / "big.bin", "rb") as f:  # into the page cache
        while f.read(8 * 1024 * 1024):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--duration", type=float, default=0.5, help="seconds per timed run (random/small/stat)"
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--tasks", default="1,64", help="comma-separated task counts")
    parser.add_argument("--runtimes", default=",".join(r[0] for r in RUNTIMES), help="comma-separated")
    parser.add_argument("--dir", default=None, help="where to put the files (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write every measurement to this file")
    args = parser.parse_args()
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    task_counts = [int(t) for t in args.tasks.split(",") if t.strip()]
    runtimes = [r for r in RUNTIMES if r[0] in args.runtimes.split(",")]

    anyio_version = importlib.metadata.version("anyio")
    system = f"Linux {platform.release()}, {os.cpu_count()} CPUs"
    print(f"Python {platform.python_version()}, {system}, anyio {anyio_version}")
    rows = [(workload, tasks) for workload in only for tasks in task_counts]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        setup(d)
        results: dict[tuple[str, int, str], list[float]] = {}
        for rep in range(args.reps):
            for workload, tasks in rows:
                for label, run_kwargs, open_file, path_cls in runtimes:
                    value = anyio.run(
                        WORKLOADS[workload], open_file, path_cls, d, args.duration, tasks, **run_kwargs
                    )
                    results.setdefault((workload, tasks, label), []).append(value)
            print(f"  repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([[w, t, label, values] for (w, t, label), values in results.items()], out)

    labels = [label for label, *_ in runtimes]
    header = (
        f"{'workload':<10}{'tasks':>6}{'unit':>9}"
        + "".join(f"{label:>12}" for label in labels)
        + f"{'vs best':>10}{'target':>8}"
    )
    print(header)
    print("-" * len(header))
    for workload, tasks in rows:
        med = {label: statistics.median(results[(workload, tasks, label)]) for label in labels}
        fmt = "{:>12.2f}" if workload == "seq" else "{:>12,.0f}"
        row = f"{workload:<10}{tasks:>6}{UNITS[workload]:>9}"
        row += "".join(fmt.format(med[label]) for label in labels)
        peers = [v for label, v in med.items() if label != "uring"]
        if "uring" not in med or not peers:
            print(row)
            continue
        ratio = med["uring"] / max(peers)
        target = (TARGETS_ONE_TASK if tasks == 1 else {}).get(workload, TARGETS[workload])
        mark = "ok" if ratio >= target else "MISS"
        print(row + f"{ratio:>9.1f}x{target:>6.0f}x {mark}")


if __name__ == "__main__":
    main()
