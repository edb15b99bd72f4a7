"""Clocks: the system clock, and a mock clock for tests (with trio's autojump semantics)."""

from __future__ import annotations

import math
import time

__all__ = ["Clock", "MockClock", "SystemClock"]


class Clock:
    """The interface the runner needs from a clock (same shape as ``trio.abc.Clock``)."""

    #: Real seconds of idleness after which the runner jumps the clock to the next deadline;
    #: ``inf`` (the default) disables autojumping.
    autojump_threshold: float = math.inf

    def start_clock(self) -> None:
        """Called once, when the run starts."""

    def current_time(self) -> float:
        raise NotImplementedError

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """Real seconds to wait until ``deadline`` (may be negative)."""
        raise NotImplementedError

    def jump(self, seconds: float) -> None:
        """Advance the clock (mock clocks only)."""
        raise RuntimeError(f"{type(self).__name__} cannot jump")


class SystemClock(Clock):
    """``time.perf_counter`` (CLOCK_MONOTONIC): never jumps, never goes back."""

    __slots__ = ()

    def current_time(self) -> float:
        return time.perf_counter()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.perf_counter()


class MockClock(Clock):
    """A virtual clock that only moves when told to (``jump``) or when the run is idle.

    With ``autojump_threshold=0`` the run jumps straight to the next deadline whenever every
    task is blocked and no I/O is in flight -- tests with timeouts then take no real time.
    """

    def __init__(self, *, autojump_threshold: float = math.inf) -> None:
        if autojump_threshold < 0:
            raise ValueError("autojump_threshold must be >= 0")
        self._now = 0.0
        self.autojump_threshold = autojump_threshold

    def __repr__(self) -> str:
        return f"<MockClock time={self._now:.6f} autojump_threshold={self.autojump_threshold}>"

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return math.inf if deadline > self._now else 0.0

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
