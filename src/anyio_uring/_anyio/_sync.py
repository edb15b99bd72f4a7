"""anyio's synchronization primitives over the runtime's (``_core._sync``)."""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._core import Runner, _sync
from .._core._context import current_runner
from .._core._threads import current_default_thread_limiter as _current_default_thread_limiter
from ._tasks import UringTaskInfo

if TYPE_CHECKING:
    from typing import Self


# mypy takes both bases for "disjoint" (each has __slots__); anyio's only slot is __weakref__,
# which CPython does not count as a layout of its own, so the two combine.
class Event(_sync.Event, anyio.Event):  # type: ignore[misc]
    """anyio's ``Event``: the runtime's :class:`~anyio_uring._core._sync.Event` itself (built in
    ``__new__``, so anyio's second ``__init__`` call costs nothing)."""

    __slots__ = ()

    def statistics(self) -> anyio.EventStatistics:
        return anyio.EventStatistics(tasks_waiting=self.waiters)


class Lock(anyio.Lock):
    __slots__ = ("_native",)

    def __new__(cls, *, fast_acquire: bool = False) -> Self:
        return object.__new__(cls)

    def __init__(self, *, fast_acquire: bool = False) -> None:
        self._native = _sync.Lock(fast_acquire=fast_acquire)

    async def acquire(self) -> None:
        try:
            await self._native.acquire()
        except RuntimeError as exc:
            raise _lock_error(exc) from None

    def acquire_nowait(self) -> None:
        try:
            self._native.acquire_nowait()
        except _sync.WouldBlock:
            raise anyio.WouldBlock from None
        except RuntimeError as exc:
            raise _lock_error(exc) from None

    def release(self) -> None:
        self._native.release()

    def locked(self) -> bool:
        return self._native.locked()

    def statistics(self) -> anyio.LockStatistics:
        stats = self._native.statistics()
        owner = UringTaskInfo(stats.owner) if stats.owner is not None else None
        return anyio.LockStatistics(stats.locked, owner, stats.tasks_waiting)


def _lock_error(exc: RuntimeError) -> RuntimeError:
    if "re-acquire" in str(exc):
        return RuntimeError("Attempted to acquire an already held Lock")
    return exc


class Semaphore(anyio.Semaphore):
    __slots__ = ("_native",)

    def __new__(cls, initial_value: int, *, max_value: int | None = None, fast_acquire: bool = False) -> Self:
        return object.__new__(cls)

    def __init__(
        self, initial_value: int, *, max_value: int | None = None, fast_acquire: bool = False
    ) -> None:
        super().__init__(initial_value, max_value=max_value, fast_acquire=fast_acquire)
        self._native = _sync.Semaphore(initial_value, max_value=max_value, fast_acquire=fast_acquire)

    async def acquire(self) -> None:
        await self._native.acquire()

    def acquire_nowait(self) -> None:
        try:
            self._native.acquire_nowait()
        except _sync.WouldBlock:
            raise anyio.WouldBlock from None

    def release(self) -> None:
        self._native.release()

    @property
    def value(self) -> int:
        return self._native.value

    @property
    def max_value(self) -> int | None:
        return self._native.max_value

    def statistics(self) -> anyio.SemaphoreStatistics:
        return anyio.SemaphoreStatistics(self._native.tasks_waiting)


class CapacityLimiter(anyio.CapacityLimiter):
    __slots__ = ("_native",)

    def __new__(cls, total_tokens: float = 1, *, native: _sync.CapacityLimiter | None = None) -> Self:
        return object.__new__(cls)

    def __init__(self, total_tokens: float = 1, *, native: _sync.CapacityLimiter | None = None) -> None:
        self._native = native if native is not None else _sync.CapacityLimiter(total_tokens)

    async def __aenter__(self) -> None:
        await self._native.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._native.release()

    @property
    def total_tokens(self) -> float:
        return self._native.total_tokens

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self._native.total_tokens = value

    @property
    def borrowed_tokens(self) -> int:
        return self._native.borrowed_tokens

    @property
    def available_tokens(self) -> float:
        return self._native.available_tokens

    def acquire_nowait(self) -> None:
        try:
            self._native.acquire_nowait()
        except _sync.WouldBlock:
            raise anyio.WouldBlock from None

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        try:
            self._native.acquire_on_behalf_of_nowait(borrower)
        except _sync.WouldBlock:
            raise anyio.WouldBlock from None

    async def acquire(self) -> None:
        await self._native.acquire()

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._native.acquire_on_behalf_of(borrower)

    def release(self) -> None:
        self._native.release()

    def release_on_behalf_of(self, borrower: object) -> None:
        self._native.release_on_behalf_of(borrower)

    def statistics(self) -> anyio.CapacityLimiterStatistics:
        stats = self._native.statistics()
        return anyio.CapacityLimiterStatistics(
            borrowed_tokens=stats.borrowed_tokens,
            total_tokens=stats.total_tokens,
            borrowers=stats.borrowers,
            tasks_waiting=stats.tasks_waiting,
        )


#: One anyio wrapper per runner around the runtime's default thread limiter (stable identity).
_default_limiters: weakref.WeakKeyDictionary[Runner, CapacityLimiter] = weakref.WeakKeyDictionary()


def default_thread_limiter() -> CapacityLimiter:
    """anyio's wrapper around the running loop's default thread limiter (one per runner)."""
    runner = current_runner()
    limiter = _default_limiters.get(runner)
    if limiter is None:
        limiter = CapacityLimiter(native=_current_default_thread_limiter())
        _default_limiters[runner] = limiter
    return limiter
