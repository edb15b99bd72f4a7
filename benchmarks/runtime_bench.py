"""Scheduler micro-benchmarks: trio, asyncio, asyncio+uvloop and anyio_uring side by side.

Usage: python benchmarks/runtime_bench.py [--reps 5] [--scale 1.0] [--only checkpoints,spawn]

Workloads (the loop's start-up and shutdown are not timed; each runs inside one ``run()``):

* ``checkpoints``: 100k schedule points in one task -- ``trio.lowlevel.checkpoint()``,
  ``asyncio.sleep(0)``, ``anyio_uring.checkpoint()``.
* ``spawn``: start 10k trivial tasks in a nursery / ``asyncio.TaskGroup`` and wait for them.
* ``cancel scopes``: 100k enter/exit of a cancel scope with no deadline (asyncio:
  ``asyncio.timeout(None)``, its nearest equivalent).
* ``event ping-pong``: 20k round trips between two tasks through events (trio/anyio_uring
  Events are one-shot: a fresh one per hop; asyncio: ``Event.clear()``).  anyio_uring uses
  ``anyio_uring._core._sync.Event`` when present, else a bare ``wait_task_rescheduled``/``reschedule``.
* ``to_thread``: 2k round trips through a worker thread (``trio.to_thread.run_sync``,
  ``asyncio.to_thread``, ``anyio_uring._core._threads.to_thread_run_sync``; skipped if absent).

Runs are interleaved (every runtime once per repetition, in turn); the table shows the median
of ``--reps`` repetitions and the ratio to trio (< 1.0: faster than trio).

``benchmarks/anyio_bench.py`` measures these rows (and memory object streams) through anyio,
the same anyio code on every backend.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import trio

import anyio_uring as au

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

try:
    from anyio_uring._core._sync import Event as UringEvent
except ImportError:  # pragma: no cover - the sync primitives are not there yet
    UringEvent = None

try:
    from anyio_uring._core._threads import to_thread_run_sync as uring_to_thread
except ImportError:  # pragma: no cover
    uring_to_thread = None

N_CHECKPOINTS = 100_000
N_SPAWN = 10_000
N_SCOPES = 100_000
N_PINGPONG = 20_000
N_THREAD = 2_000


def noop() -> None:
    pass


async def anoop() -> None:
    pass


# ============================================================================ trio


async def trio_checkpoints(n: int) -> float:
    checkpoint = trio.lowlevel.checkpoint
    t0 = time.perf_counter()
    for _ in range(n):
        await checkpoint()
    return time.perf_counter() - t0


async def trio_spawn(n: int) -> float:
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(anoop)
    return time.perf_counter() - t0


async def trio_scopes(n: int) -> float:
    scope_type = trio.CancelScope
    t0 = time.perf_counter()
    for _ in range(n):
        with scope_type():
            pass
    return time.perf_counter() - t0


async def trio_pingpong(n: int) -> float:
    box: list[trio.Event] = [trio.Event(), trio.Event()]

    async def pong() -> None:
        for _ in range(n):
            await box[0].wait()
            box[0] = trio.Event()
            box[1].set()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pong)
        for _ in range(n):
            box[0].set()
            await box[1].wait()
            box[1] = trio.Event()
    return time.perf_counter() - t0


async def trio_to_thread(n: int) -> float:
    run_sync = trio.to_thread.run_sync
    t0 = time.perf_counter()
    for _ in range(n):
        await run_sync(noop)
    return time.perf_counter() - t0


# ============================================================================ asyncio (and uvloop)


async def aio_checkpoints(n: int) -> float:
    sleep = asyncio.sleep
    t0 = time.perf_counter()
    for _ in range(n):
        await sleep(0)
    return time.perf_counter() - t0


async def aio_spawn(n: int) -> float:
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(anoop())
    return time.perf_counter() - t0


async def aio_scopes(n: int) -> float:
    timeout = asyncio.timeout
    t0 = time.perf_counter()
    for _ in range(n):
        async with timeout(None):
            pass
    return time.perf_counter() - t0


async def aio_pingpong(n: int) -> float:
    ping, pong_ev = asyncio.Event(), asyncio.Event()

    async def pong() -> None:
        for _ in range(n):
            await ping.wait()
            ping.clear()
            pong_ev.set()

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pong())
        for _ in range(n):
            ping.set()
            await pong_ev.wait()
            pong_ev.clear()
    return time.perf_counter() - t0


async def aio_to_thread(n: int) -> float:
    to_thread = asyncio.to_thread
    t0 = time.perf_counter()
    for _ in range(n):
        await to_thread(noop)
    return time.perf_counter() - t0


# ============================================================================ anyio_uring


async def uring_checkpoints(n: int) -> float:
    checkpoint = au.checkpoint
    t0 = time.perf_counter()
    for _ in range(n):
        await checkpoint()
    return time.perf_counter() - t0


async def uring_spawn(n: int) -> float:
    t0 = time.perf_counter()
    async with au.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(anoop)
    return time.perf_counter() - t0


async def uring_scopes(n: int) -> float:
    scope_type = au.CancelScope
    t0 = time.perf_counter()
    for _ in range(n):
        with scope_type():
            pass
    return time.perf_counter() - t0


class _BareEvent:
    """A one-shot event on the raw park/reschedule contract (used if ``_sync`` is absent)."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: au.Task | None = None

    def set(self) -> None:
        self._flag = True
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            au._core.reschedule(task)

    async def wait(self) -> None:
        if self._flag:
            await au.checkpoint()
            return
        self._waiter = au.current_task()

        def abort(_: Any) -> au.Abort:
            self._waiter = None
            return au.Abort.SUCCEEDED

        await au.wait_task_rescheduled(abort)


async def uring_pingpong(n: int) -> float:
    event_type: Any = UringEvent if UringEvent is not None else _BareEvent
    box = [event_type(), event_type()]

    async def pong() -> None:
        for _ in range(n):
            await box[0].wait()
            box[0] = event_type()
            box[1].set()

    t0 = time.perf_counter()
    async with au.open_nursery() as nursery:
        nursery.start_soon(pong)
        for _ in range(n):
            box[0].set()
            await box[1].wait()
            box[1] = event_type()
    return time.perf_counter() - t0


async def uring_to_thread_bench(n: int) -> float:
    assert uring_to_thread is not None
    run_sync = uring_to_thread
    t0 = time.perf_counter()
    for _ in range(n):
        await run_sync(noop)
    return time.perf_counter() - t0


# ============================================================================ the harness

Runner = Callable[[Callable[[int], Any], int], float]


def run_trio(fn: Callable[[int], Any], n: int) -> float:
    return trio.run(fn, n)  # type: ignore[no-any-return]


def run_asyncio(fn: Callable[[int], Any], n: int) -> float:
    return asyncio.run(fn(n))  # type: ignore[no-any-return]


def run_uvloop(fn: Callable[[int], Any], n: int) -> float:
    assert uvloop is not None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(fn(n))  # type: ignore[no-any-return]


def run_uring(fn: Callable[[int], Any], n: int) -> float:
    return au.run(fn, n)  # type: ignore[no-any-return]


RUNTIMES: dict[str, Runner | None] = {
    "trio": run_trio,
    "asyncio": run_asyncio,
    "uvloop": run_uvloop if uvloop is not None else None,
    "anyio_uring": run_uring,
}

BENCHES: dict[str, tuple[int, dict[str, Callable[[int], Any] | None]]] = {
    "checkpoints": (
        N_CHECKPOINTS,
        {"trio": trio_checkpoints, "asyncio": aio_checkpoints, "uvloop": aio_checkpoints,
         "anyio_uring": uring_checkpoints},
    ),
    "spawn": (
        N_SPAWN,
        {"trio": trio_spawn, "asyncio": aio_spawn, "uvloop": aio_spawn, "anyio_uring": uring_spawn},
    ),
    "cancel scopes": (
        N_SCOPES,
        {"trio": trio_scopes, "asyncio": aio_scopes, "uvloop": aio_scopes, "anyio_uring": uring_scopes},
    ),
    "event ping-pong": (
        N_PINGPONG,
        {"trio": trio_pingpong, "asyncio": aio_pingpong, "uvloop": aio_pingpong,
         "anyio_uring": uring_pingpong},
    ),
    "to_thread": (
        N_THREAD,
        {"trio": trio_to_thread, "asyncio": aio_to_thread, "uvloop": aio_to_thread,
         "anyio_uring": uring_to_thread_bench if uring_to_thread is not None else None},
    ),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N (0.1: a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    benches = {name: spec for name, spec in BENCHES.items() if not only or name in only}

    system = f"{platform.system()} {platform.release()}"
    print(f"python {platform.python_version()} on {system}, {os.cpu_count()} CPUs")
    uv_version = getattr(uvloop, "__version__", "absent")
    print(f"trio {trio.__version__}, uvloop {uv_version}, anyio_uring {au.__version__}")
    if UringEvent is None:
        print("note: anyio_uring._core._sync.Event absent: ping-pong uses wait_task_rescheduled/reschedule")
    if uring_to_thread is None:
        print("note: anyio_uring._core._threads absent: the to_thread row is skipped for anyio_uring")
    samples: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for bench, (n, impls) in benches.items():
            n = max(1, int(n * args.scale))
            for runtime, runner in RUNTIMES.items():
                fn = impls.get(runtime)
                if runner is None or fn is None:
                    continue
                samples.setdefault((bench, runtime), []).append(runner(fn, n))
        print(f"  repetition {rep + 1}/{args.reps} done", file=sys.stderr)

    names = [name for name, runner in RUNTIMES.items() if runner is not None]
    header = f"{'workload':<16} {'N':>8} " + " ".join(f"{name:>20}" for name in names)
    print()
    print(header)
    print("-" * len(header))
    for bench, (n, _) in benches.items():
        n = max(1, int(n * args.scale))
        base = samples.get((bench, "trio"))
        base_med = statistics.median(base) if base else None
        cells = []
        for name in names:
            values = samples.get((bench, name))
            if not values:
                cells.append(f"{'n/a':>20}")
                continue
            med = statistics.median(values)
            per_op = med / n * 1e6
            ratio = f" ({med / base_med:4.2f}x)" if base_med else ""
            cells.append(f"{per_op:>10.3f} us{ratio:>8}")
        print(f"{bench:<16} {n:>8} " + " ".join(cells))
    print("\nmedian microseconds per operation; (ratio to trio, < 1 is faster)")


if __name__ == "__main__":
    main()
