"""The scheduler micro-benchmarks *through anyio*: the same anyio code on every backend.

Usage: python benchmarks/anyio_bench.py [--reps 7] [--scale 1.0] [--only checkpoint,spawn]
       python benchmarks/anyio_bench.py --single uring:checkpoint:100000   (one run, for callgrind)

``benchmarks/runtime_bench.py`` measures each runtime's native API; this file measures what an
anyio program sees, where every call also pays anyio's dispatch (``get_async_backend()``, the
backend's wrapper classes).  Workloads (each inside one ``anyio.run()``; start-up and shutdown
are not timed):

* ``checkpoint``: ``await anyio.lowlevel.checkpoint()`` in one task;
* ``cancel scope``: ``with anyio.CancelScope(): pass`` (no deadline);
* ``event ping-pong``: a round trip between two tasks through ``anyio.Event`` (one-shot: a fresh
  one per hop);
* ``stream send/receive``: one item through an unbuffered memory object stream
  (``create_memory_object_stream(0)``) from a sender task to a receiver task;
* ``spawn``: ``task_group.start_soon(trivial)`` for N tasks, until the group has exited.

Backends: ``asyncio``, ``asyncio+uvloop`` (``use_uvloop=True``), ``trio``, ``uring``.  Runs are
interleaved (every backend once per repetition, in turn); the table shows the median of
``--reps`` repetitions per operation and, for uring, the ratio of its rate to the best peer's
(> 1.0: uring is faster).

``--single BACKEND:WORKLOAD:N`` runs one workload once and prints nothing else, which is what
instruction counting wants: ``PYTHONHASHSEED=0 valgrind --tool=callgrind
--callgrind-out-file=/dev/null python benchmarks/anyio_bench.py --single uring:checkpoint:20000``
minus the same command with N=0 gives the instructions of N operations.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import anyio
import anyio.lowlevel

import anyio_uring

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

try:
    import trio
except ImportError:  # pragma: no cover
    trio = None


async def trivial() -> None:
    pass


# ============================================================================ workloads


async def bench_checkpoint(n: int) -> float:
    checkpoint = anyio.lowlevel.checkpoint
    t0 = time.perf_counter()
    for _ in range(n):
        await checkpoint()
    return time.perf_counter() - t0


async def bench_cancel_scope(n: int) -> float:
    scope_type = anyio.CancelScope
    t0 = time.perf_counter()
    for _ in range(n):
        with scope_type():
            pass
    return time.perf_counter() - t0


async def bench_event_pingpong(n: int) -> float:
    event_type = anyio.Event
    box = [event_type(), event_type()]

    async def pong() -> None:
        for _ in range(n):
            await box[0].wait()
            box[0] = event_type()
            box[1].set()

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pong)
        for _ in range(n):
            box[0].set()
            await box[1].wait()
            box[1] = event_type()
    return time.perf_counter() - t0


async def bench_stream(n: int) -> float:
    send, receive = anyio.create_memory_object_stream[int](0)

    async def receiver() -> None:
        async with receive:
            async for _ in receive:
                pass

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        async with send:
            for i in range(n):
                await send.send(i)
    return time.perf_counter() - t0


async def bench_spawn(n: int) -> float:
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        start_soon = tg.start_soon
        for _ in range(n):
            start_soon(trivial)
    return time.perf_counter() - t0


WORKLOADS: dict[str, tuple[int, Callable[[int], Awaitable[float]]]] = {
    "checkpoint": (100_000, bench_checkpoint),
    "cancel scope": (100_000, bench_cancel_scope),
    "event ping-pong": (20_000, bench_event_pingpong),
    "stream send/receive": (20_000, bench_stream),
    "spawn": (10_000, bench_spawn),
}

# ============================================================================ backends

BACKENDS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "asyncio": ("asyncio", {}),
    "asyncio+uvloop": ("asyncio", {"use_uvloop": True}) if uvloop is not None else None,
    "trio": ("trio", {}) if trio is not None else None,
    "uring": ("uring", {}),
}


def run_one(backend: str, workload: str, n: int) -> float:
    spec = BACKENDS[backend]
    assert spec is not None, f"{backend} is not installed"
    name, options = spec
    fn = WORKLOADS[workload][1]
    result: float = anyio.run(fn, n, backend=name, backend_options=options)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N (0.1: a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--single", default="", help="BACKEND:WORKLOAD:N -- one run, no output")
    args = parser.parse_args()
    if args.single:
        backend, workload, n = args.single.split(":")
        run_one(backend, workload, int(n))
        return
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    workloads = {name: spec for name, spec in WORKLOADS.items() if not only or name in only}
    backends = [name for name, spec in BACKENDS.items() if spec is not None]

    system = f"{platform.system()} {platform.release()}"
    print(f"python {platform.python_version()} on {system}, {os.cpu_count()} CPUs")
    versions = [f"anyio {importlib.metadata.version('anyio')}"]
    versions.append(f"uvloop {getattr(uvloop, '__version__', 'absent')}")
    versions.append(f"trio {getattr(trio, '__version__', 'absent')}")
    versions.append(f"anyio_uring {anyio_uring.__version__}")
    print(", ".join(versions))
    samples: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for workload, (n, _) in workloads.items():
            n = max(1, int(n * args.scale))
            for backend in backends:
                samples.setdefault((workload, backend), []).append(run_one(backend, workload, n) / n)
        print(f"  repetition {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)

    header = f"{'workload':<20} {'N':>7} " + " ".join(f"{name:>15}" for name in backends)
    header += f" {'uring vs best peer':>19}"
    print()
    print(header)
    print("-" * len(header))
    for workload, (n, _) in workloads.items():
        n = max(1, int(n * args.scale))
        medians = {b: statistics.median(samples[(workload, b)]) for b in backends}
        cells = " ".join(f"{medians[b] * 1e6:>12.3f} us" for b in backends)
        peers = [medians[b] for b in backends if b != "uring"]
        ratio = f"{min(peers) / medians['uring']:>18.2f}x" if peers else ""
        print(f"{workload:<20} {n:>7} {cells} {ratio}")
    print("\nmedian microseconds per operation; last column: uring's rate / the fastest peer's (> 1: faster)")


if __name__ == "__main__":
    main()
