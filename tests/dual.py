"""The same structured-concurrency API on trio and on anyio_uring, for side-by-side tests: the
expected behaviour is trio's *observed* behaviour, not our reading of its docs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

import anyio_uring as au


@dataclass(frozen=True)
class Lib:
    name: str
    run: Callable[..., Any]
    CancelScope: Any
    Cancelled: type[BaseException]
    TooSlow: type[BaseException]
    MockClock: Any
    open_nursery: Callable[..., Any]
    sleep: Callable[[float], Any]
    sleep_forever: Callable[[], Any]
    checkpoint: Callable[[], Any]
    move_on_after: Callable[..., Any]
    move_on_at: Callable[..., Any]
    fail_after: Callable[..., Any]
    fail_at: Callable[..., Any]
    current_time: Callable[[], float]
    current_effective_deadline: Callable[[], float]
    current_task: Callable[[], Any]
    wait_all_tasks_blocked: Callable[..., Any]


TRIO = Lib(
    "trio",
    trio.run,
    trio.CancelScope,
    trio.Cancelled,
    trio.TooSlowError,
    trio.testing.MockClock,
    trio.open_nursery,
    trio.sleep,
    trio.sleep_forever,
    trio.lowlevel.checkpoint,
    trio.move_on_after,
    trio.move_on_at,
    trio.fail_after,
    trio.fail_at,
    trio.current_time,
    trio.current_effective_deadline,
    trio.lowlevel.current_task,
    trio.testing.wait_all_tasks_blocked,
)
URING = Lib(
    "uring",
    au.run,
    au.CancelScope,
    au.Cancelled,
    TimeoutError,
    au.MockClock,
    au.open_nursery,
    au.sleep,
    au.sleep_forever,
    au.checkpoint,
    au.move_on_after,
    au.move_on_at,
    au.fail_after,
    au.fail_at,
    au.current_time,
    au.current_effective_deadline,
    au.current_task,
    au.wait_all_tasks_blocked,
)


def run_mock(lib: Lib, fn: Callable[..., Any], *args: Any) -> Any:
    """Run on a MockClock that jumps whenever every task is blocked (virtual time)."""
    return lib.run(fn, *args, clock=lib.MockClock(autojump_threshold=0))
