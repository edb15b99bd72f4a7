"""Synchronization primitives for the runtime: ParkingLot, Event, Lock, Semaphore,
CapacityLimiter.  Same semantics as trio's: FIFO fairness, every blocking method is a checkpoint,
releasing hands ownership straight to the next waiter.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._context import GLOBAL
from ._run import Task, checkpoint, checkpoint_if_cancelled, current_task
from ._traps import SUCCEEDED, Abort, RaiseCancel, cancel_shielded_checkpoint, wait_task_rescheduled

if TYPE_CHECKING:
    from typing import Self

__all__ = ["CapacityLimiter", "Event", "Lock", "ParkingLot", "Semaphore"]


class ParkingLot:
    """A FIFO queue of parked tasks: the building block of the other primitives."""

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: OrderedDict[Task, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parked)

    def __bool__(self) -> bool:
        return bool(self._parked)

    async def park(self) -> Any:
        """Park until unparked; returns the value passed to :meth:`unpark`."""
        task = current_task()
        self._parked[task] = None

        def abort(_: RaiseCancel) -> Abort:
            del self._parked[task]
            return SUCCEEDED

        return await wait_task_rescheduled(abort)

    def unpark(self, count: float = 1, value: Any = None) -> list[Task]:
        """Wake up to ``count`` tasks, oldest first."""
        woken: list[Task] = []
        while self._parked and len(woken) < count:
            task, _ = self._parked.popitem(last=False)
            task._runner.reschedule(task, value)
            woken.append(task)
        return woken

    def unpark_all(self) -> list[Task]:
        return self.unpark(math.inf)

    def first(self) -> Task | None:
        return next(iter(self._parked), None)


class Event:
    """A one-shot flag tasks can wait for.

    Its own wait list (a dict: insertion-ordered, so waiters wake oldest first, as from a
    :class:`ParkingLot`), created by the first wait: most events are set without ever being
    waited for (anyio's task handles make one per task), or waited for by one task.
    """

    __slots__ = ("_flag", "_waiters")

    _flag: bool
    _waiters: dict[Task, None] | None

    # Built in __new__ with object's __init__, so that the anyio adapter's subclass is not
    # built twice when ``anyio.Event()`` calls ``__init__`` again on the event the backend made.
    def __new__(cls) -> Self:
        self = object.__new__(cls)
        self._flag = False
        self._waiters = None
        return self

    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiters = self._waiters
            if waiters:
                self._waiters = None
                for task in waiters:
                    task._runner.reschedule(task)

    async def wait(self) -> None:
        if self._flag:
            await checkpoint()
            return
        task = GLOBAL.task
        if task is None:
            task = current_task()  # raises
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = {}
        waiters[task] = None

        def abort(_: RaiseCancel) -> Abort:
            del waiters[task]
            return SUCCEEDED

        await wait_task_rescheduled(abort)

    @property
    def waiters(self) -> int:
        return len(self._waiters) if self._waiters is not None else 0


@dataclass(frozen=True, slots=True)
class LockStatistics:
    locked: bool
    owner: Task | None
    tasks_waiting: int


class Lock:
    """A non-reentrant mutex owned by a task.  ``fast_acquire=True`` skips the schedule point
    when the lock is free (anyio's option)."""

    __slots__ = ("_fast", "_lot", "_owner")

    def __init__(self, *, fast_acquire: bool = False) -> None:
        self._owner: Task | None = None
        self._lot = ParkingLot()
        self._fast = fast_acquire

    def __repr__(self) -> str:
        return f"<Lock locked={self._owner is not None} waiting={len(self._lot)}>"

    def locked(self) -> bool:
        return self._owner is not None

    def acquire_nowait(self) -> None:
        task = current_task()
        if self._owner is task:
            raise RuntimeError("attempt to re-acquire an already held Lock")
        if self._owner is not None or self._lot:
            raise WouldBlock
        self._owner = task

    async def acquire(self) -> None:
        await checkpoint_if_cancelled()
        try:
            self.acquire_nowait()
        except WouldBlock:
            await self._lot.park()  # ownership is handed to us by release()
        else:
            if not self._fast:
                await cancel_shielded_checkpoint()

    def release(self) -> None:
        task = current_task()
        if self._owner is not task:
            raise RuntimeError("can't release a Lock you don't own")
        nxt = self._lot.first()
        self._owner = nxt
        if nxt is not None:
            self._lot.unpark()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def statistics(self) -> LockStatistics:
        return LockStatistics(self._owner is not None, self._owner, len(self._lot))


class WouldBlock(Exception):
    """Raised by the ``*_nowait`` methods when they would have to wait."""


class Semaphore:
    """A counting semaphore, optionally bounded by ``max_value``."""

    __slots__ = ("_fast", "_lot", "_max", "_value")

    def __init__(
        self, initial_value: int, *, max_value: int | None = None, fast_acquire: bool = False
    ) -> None:
        if not isinstance(initial_value, int):
            raise TypeError("initial_value must be an int")
        if initial_value < 0:
            raise ValueError("initial_value must be >= 0")
        if max_value is not None:
            if not isinstance(max_value, int):
                raise TypeError("max_value must be None or an int")
            if max_value < initial_value:
                raise ValueError("max_value must be equal to or higher than initial_value")
        self._value = initial_value
        self._max = max_value
        self._lot = ParkingLot()
        self._fast = fast_acquire

    @property
    def value(self) -> int:
        return self._value

    @property
    def max_value(self) -> int | None:
        return self._max

    def acquire_nowait(self) -> None:
        if self._value == 0 or self._lot:
            raise WouldBlock
        self._value -= 1

    async def acquire(self) -> None:
        await checkpoint_if_cancelled()
        try:
            self.acquire_nowait()
        except WouldBlock:
            await self._lot.park()  # the token is handed to us by release()
        else:
            if not self._fast:
                await cancel_shielded_checkpoint()

    def release(self) -> None:
        if self._lot:
            self._lot.unpark()
            return
        if self._max is not None and self._value == self._max:
            raise ValueError("semaphore released too many times")
        self._value += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    @property
    def tasks_waiting(self) -> int:
        return len(self._lot)


@dataclass(frozen=True, slots=True)
class CapacityLimiterStatistics:
    borrowed_tokens: int
    total_tokens: float
    borrowers: tuple[object, ...]
    tasks_waiting: int


class CapacityLimiter:
    """At most ``total_tokens`` borrowers at a time; each borrower (a task or any object)
    holds at most one token."""

    __slots__ = ("_borrowers", "_lot", "_pending", "_total")

    def __init__(self, total_tokens: float) -> None:
        self._borrowers: set[object] = set()
        self._lot = ParkingLot()
        self._pending: dict[Task, object] = {}
        self._total = 0.0
        self.total_tokens = total_tokens

    def __repr__(self) -> str:
        return f"<CapacityLimiter {len(self._borrowers)}/{self._total} borrowed, {len(self._lot)} waiting>"

    @property
    def total_tokens(self) -> float:
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        if not isinstance(value, int) and value != math.inf:
            raise TypeError("total_tokens must be an int or math.inf")
        if value < 0:
            raise ValueError("total_tokens must be >= 0")
        self._total = value
        self._wake_waiters()

    @property
    def borrowed_tokens(self) -> int:
        return len(self._borrowers)

    @property
    def available_tokens(self) -> float:
        return self._total - len(self._borrowers)

    def _wake_waiters(self) -> None:
        while self._lot and len(self._borrowers) < self._total:
            task = self._lot.first()
            assert task is not None
            self._borrowers.add(self._pending.pop(task))
            self._lot.unpark()

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        if borrower in self._borrowers:
            raise RuntimeError("this borrower is already holding one of this CapacityLimiter's tokens")
        if len(self._borrowers) >= self._total or self._lot:
            raise WouldBlock
        self._borrowers.add(borrower)

    def acquire_nowait(self) -> None:
        self.acquire_on_behalf_of_nowait(current_task())

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await checkpoint_if_cancelled()
        try:
            self.acquire_on_behalf_of_nowait(borrower)
        except WouldBlock:
            task = current_task()
            self._pending[task] = borrower
            try:
                await self._lot.park()
            except BaseException:
                self._pending.pop(task, None)
                raise
        else:
            await cancel_shielded_checkpoint()

    async def acquire(self) -> None:
        await self.acquire_on_behalf_of(current_task())

    def release_on_behalf_of(self, borrower: object) -> None:
        if borrower not in self._borrowers:
            raise RuntimeError("this borrower isn't holding any of this CapacityLimiter's tokens")
        self._borrowers.remove(borrower)
        self._wake_waiters()

    def release(self) -> None:
        self.release_on_behalf_of(current_task())

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def statistics(self) -> CapacityLimiterStatistics:
        return CapacityLimiterStatistics(
            len(self._borrowers), self._total, tuple(self._borrowers), len(self._lot)
        )
