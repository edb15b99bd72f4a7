"""Cancel scopes, the cancellation tree, and the bridge from cancellation to ``ASYNC_CANCEL``.

Theory of operation
-------------------
Cancellation is *level-triggered* (trio's model): a cancelled scope stays cancelled, and every
cancel point inside it raises :class:`Cancelled` until the scope is exited.  Scopes form a tree of
:class:`CancelStatus` objects (one per entered scope); each task points at the status of its
innermost scope.  A status is *effectively cancelled* when its scope is cancelled, or when its
parent is effectively cancelled and its scope does not shield.  When that changes to true, every
task under it that is parked gets its abort callback called (see ``_core/_traps.py``).

:func:`wait_operation` is **the one place where a cancellation reaching a task parked on an
io_uring operation becomes ``IORING_OP_ASYNC_CANCEL``**.  Its abort callback asks the ring to
withdraw the SQE if the kernel has not seen it yet (no syscall; the task raises ``Cancelled``
at once) and otherwise queues ``ASYNC_CANCEL`` and answers ``Abort.FAILED``: the task stays
parked, and the operation's memory stays owned by the operation, until the target's *final* CQE.
That CQE decides -- ``-ECANCELED``: the task raises the cancellation; any other result: the task
receives it (no byte lost) and the still-cancelled scope raises at the next checkpoint.  The
cancel request's own CQE (0, ``-ENOENT``, ``-EALREADY``, ``n`` for ALL/ANY) decides nothing: on
this kernel ``-ENOENT`` arrives before the data CQE, and an O_DIRECT read reports ``-ENOENT`` then
completes 20 ms later (KERNEL-FACTS.md section 2).
"""

from __future__ import annotations

import errno
import math
import os
import types
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn

from .._errors import UringInternalError
from ._context import GLOBAL, Cancelled, current_task
from ._traps import (
    FAILED,
    SUCCEEDED,
    Abort,
    RaiseCancel,
    cancel_shielded_checkpoint,
    checkpoint,
    wait_task_rescheduled,
)

if TYPE_CHECKING:
    from typing import Self

    from .._ring import Operation
    from ._run import Runner, Task

from .._ring import OwnedFd

_INF: Final = math.inf

__all__ = [
    "CancelScope",
    "CancelStatus",
    "Cancelled",
    "InFlight",
    "MultishotFeed",
    "current_effective_deadline",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "end_and_reap",
    "end_operation",
    "wait_operation",
    "wait_owned_fd",
]


class CancelStatus:
    """The cancellation state of one entered :class:`CancelScope`, linked into a tree.

    Invariant: ``all(task._cancel_status is self for task in self.tasks)`` (``tasks``: the
    ``task`` slot and the ``_more_tasks`` set).
    Invariant: ``effectively_cancelled == scope._cancel_called or (parent is not None and not
    scope._shield and parent.effectively_cancelled)``, kept by :meth:`recalculate`.
    Invariant: ``children`` is ``None`` until the first child status is attached (most statuses
    never get one); readers treat ``None`` as empty.
    """

    __slots__ = (
        "_more_tasks",
        "_parent",
        "abandoned_by_misnesting",
        "children",
        "effectively_cancelled",
        "scope",
        "task",
    )

    def __init__(self, scope: CancelScope, parent: CancelStatus | None, task: Task | None = None) -> None:
        """A status under ``parent``; ``task``, if given, is recorded in ``tasks`` (the caller
        then points ``task._cancel_status`` here)."""
        self.scope = scope
        self._parent = parent
        self.children: set[CancelStatus] | None = None
        # The tasks whose innermost status this is: almost always one (or none), so one slot,
        # and a set only for the others (a set of one costs 216 bytes per task and scope).
        self.task: Task | None = task
        self._more_tasks: set[Task] | None = None
        self.abandoned_by_misnesting = False
        # What ``self.parent = parent`` and ``recalculate()`` would give, without their walk:
        # a new status has no children, and a task entering it is running (not parked), so
        # there is nobody to tell.
        if parent is None:
            self.effectively_cancelled = scope._cancel_called
        else:
            siblings = parent.children
            if siblings is None:
                parent.children = {self}
            else:
                siblings.add(self)
            self.effectively_cancelled = scope._cancel_called or (
                not scope._shield and parent.effectively_cancelled
            )

    # -- the tasks under this status ----------------------------------------------------------

    def add_task(self, task: Task) -> None:
        first = self.task
        if first is None:
            self.task = task
        elif first is not task:
            more = self._more_tasks
            if more is None:
                self._more_tasks = {task}
            else:
                more.add(task)

    def discard_task(self, task: Task) -> None:
        if self.task is task:
            self.task = None
        elif self._more_tasks:
            self._more_tasks.discard(task)

    @property
    def tasks(self) -> list[Task]:
        """Every task whose innermost status this is (a new list)."""
        first, more = self.task, self._more_tasks
        tasks = [] if first is None else [first]
        if more:
            tasks.extend(more)
        return tasks

    def has_tasks(self) -> bool:
        return self.task is not None or bool(self._more_tasks)

    @property
    def parent(self) -> CancelStatus | None:
        return self._parent

    @parent.setter
    def parent(self, parent: CancelStatus | None) -> None:
        old = self._parent
        if old is not None and old.children is not None:
            old.children.discard(self)
        self._parent = parent
        if parent is not None:
            if parent.children is None:
                parent.children = {self}
            else:
                parent.children.add(self)
        self.recalculate()

    @property
    def parent_cancellation_is_visible_to_us(self) -> bool:
        return self._parent is not None and not self.scope._shield and self._parent.effectively_cancelled

    def recalculate(self) -> None:
        # Iterative walk: deep trees of scopes must not hit the recursion limit.
        todo = [self]
        errors: list[BaseException] | None = None
        while todo:
            status = todo.pop()
            new = status.scope._cancel_called or status.parent_cancellation_is_visible_to_us
            if new != status.effectively_cancelled:
                status.effectively_cancelled = new
                if new:
                    for task in status.tasks:
                        try:
                            task._attempt_delivery_of_any_pending_cancel()
                        except BaseException as exc:  # every task must still be told
                            errors = [*(errors or ()), exc]
                if status.children:
                    todo.extend(status.children)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise UringInternalError("delivering a cancellation failed") from BaseExceptionGroup(
                "errors while delivering a cancellation", errors
            )

    def cancelled(self) -> Cancelled:
        """The exception for a task under this (effectively cancelled) status: it names the
        scope whose cancellation reaches the task -- its reason, and the task that cancelled it."""
        status: CancelStatus | None = self
        while status is not None:
            scope = status.scope
            if scope._cancel_called:
                return Cancelled(scope._cancel_message())
            if scope._shield:
                break
            status = status._parent
        return Cancelled()

    def raise_cancel(self) -> NoReturn:
        raise self.cancelled()

    def encloses(self, other: CancelStatus | None) -> bool:
        while other is not None:
            if other is self:
                return True
            other = other._parent
        return False

    def close(self) -> None:
        if not (self.has_tasks() or self.children):
            # The usual case: nothing is left under this status, so detaching it tells nobody.
            parent = self._parent
            if parent is not None:
                if parent.children is not None:
                    parent.children.discard(self)
                self._parent = None
            self.effectively_cancelled = self.scope._cancel_called
            return
        self.parent = None
        if self.has_tasks() or self.children:
            # Scopes were exited out of order: leave the dangling subtree cancelled and detached
            # so the tasks in it unwind; CancelScope._close reports the misnesting.
            todo = [self]
            while todo:
                status = todo.pop()
                status.abandoned_by_misnesting = True
                if status.children:
                    todo.extend(status.children)
            self.scope._cancel_called = True
            self.recalculate()


class CancelScope:
    """A trio-style cancel scope: ``with CancelScope(deadline=..., shield=...) as scope:``.

    ``cancel()`` cancels everything inside (level-triggered); ``deadline`` is an absolute time on
    the loop's clock at which that happens by itself; ``shield=True`` hides cancellation from
    outer scopes.  After exit, ``cancelled_caught`` says whether the scope caught a
    :class:`Cancelled` it caused.
    """

    __slots__ = (
        "_cancel_called",
        "_cancel_source",
        "_cancel_status",
        "_deadline",
        "_has_been_entered",
        "_relative_deadline",
        "_runner",
        "_shield",
        "_timer",
        "cancel_reason",
        "cancelled_caught",
    )

    _deadline: float
    _relative_deadline: float
    _shield: bool
    _cancel_called: bool
    _cancel_source: str | None
    _cancel_status: CancelStatus | None
    _has_been_entered: bool
    _runner: Runner | None
    _timer: list[Any] | None
    cancelled_caught: bool
    cancel_reason: str | None

    # Built in __new__, with object's __init__ (which ignores the arguments when __new__ is
    # overridden): one frame per scope, and the anyio adapter's subclass is not built twice
    # when ``anyio.CancelScope(...)`` calls ``__init__`` again on the scope the backend made.
    def __new__(
        cls, *, deadline: float = math.inf, shield: bool = False, relative_deadline: float = math.inf
    ) -> Self:
        if deadline != _INF or relative_deadline != _INF:  # (NaN is != inf, too)
            if math.isnan(deadline):
                raise ValueError("deadline must not be NaN")
            if math.isnan(relative_deadline):
                raise ValueError("relative deadline must not be NaN")
            if relative_deadline < 0:
                raise ValueError("timeout must be non-negative")
            if _INF not in (relative_deadline, deadline):
                raise ValueError("Cannot specify both a deadline and a relative deadline")
        if shield is not True and shield is not False:
            raise TypeError("shield must be a bool")
        self = object.__new__(cls)
        self._deadline = deadline
        self._relative_deadline = relative_deadline
        self._shield = shield
        self._cancel_called = False
        self._cancel_source = None
        self._cancel_status = None
        self._has_been_entered = False
        self._runner = None
        self._timer = None
        self.cancelled_caught = False
        self.cancel_reason = None
        return self

    if TYPE_CHECKING:

        def __init__(
            self, *, deadline: float = math.inf, shield: bool = False, relative_deadline: float = math.inf
        ) -> None: ...

    else:
        __init__ = object.__init__

    def __repr__(self) -> str:
        state = "active" if self._cancel_status is not None else "unbound"
        if self._cancel_called:
            state += ", cancelled"
        if self._deadline != math.inf:
            state += f", deadline={self._deadline:.3f}"
        return f"<CancelScope {state} at {id(self):#x}>"

    # -- entering and leaving ---------------------------------------------------------------

    def __enter__(self) -> Self:
        task = GLOBAL.task
        if task is None:
            task = current_task()  # raises
        if self._has_been_entered:
            raise RuntimeError("Each CancelScope may only be used for a single 'with' block")
        self._has_been_entered = True
        runner = self._runner = task._runner
        if self._relative_deadline != _INF:
            self._deadline = runner.clock.current_time() + self._relative_deadline
            self._relative_deadline = _INF
        if self._deadline != _INF and runner.clock.current_time() >= self._deadline:
            self._cancel_called = True
            self.cancel_reason = "deadline"
        parent = task._cancel_status
        status = self._cancel_status = CancelStatus(self, parent, task)
        if self._deadline != _INF:
            self._update_timer()
        # The rest of task._activate_cancel_status(status), for the running task: it is not
        # parked, so there is no pending cancellation to deliver (it raises at its next cancel
        # point).
        if parent is not None:
            parent.discard_task(task)
        task._cancel_status = status
        return self

    def __exit__(
        self, etype: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        status = self._cancel_status
        task = GLOBAL.task
        if (
            task is not None
            and status is not None
            and task._cancel_status is status
            and not status.effectively_cancelled
            and self._timer is None
            and not status.children
            and status.task is task
            and not status._more_tasks
        ):
            # The usual exit, :meth:`_close` without its cases: the running task leaves its
            # innermost scope, which nothing cancelled and which has nothing else under it, so
            # there is no exception to catch and nobody to tell.
            parent = status._parent
            status.task = None
            task._cancel_status = parent
            if parent is not None:
                parent.add_task(task)
                if parent.children is not None:
                    parent.children.discard(status)
                status._parent = None
            self._cancel_status = None
            return exc is None  # what the general path answers: the exception goes on
        remaining = self._close(exc)
        if remaining is None:
            return True
        if remaining is exc:
            return False
        # Raising here would make the exception being handled (``exc``) the new one's
        # __context__; keep the context it already has (e.g. a group split from ``exc``).
        context = remaining.__context__
        try:
            raise remaining
        finally:
            remaining.__context__ = context
            # Break the reference cycles through this frame (reachable from the traceback).
            remaining = context = None
            del exc, tb

    def _close(self, exc: BaseException | None) -> BaseException | None:
        status = self._cancel_status
        if status is None:
            err = RuntimeError(
                f"Cancel scope stack corrupted: attempted to exit {self!r} which had already been exited"
            )
            err.__context__ = exc
            return err
        task = GLOBAL.task
        if task is None:
            task = current_task()  # raises
        if task._cancel_status is not status:
            if status.abandoned_by_misnesting:
                pass
            elif not status.encloses(task._cancel_status):
                err = RuntimeError(
                    f"Cancel scope stack corrupted: attempted to exit {self!r} from unrelated {task!r}"
                )
                err.__context__ = exc
                return err
            else:
                err = RuntimeError(
                    f"Cancel scope stack corrupted: attempted to exit {self!r} in {task!r} that's "
                    "still within a child scope (cancel scopes must be exited in reverse order)"
                )
                err.__context__ = exc
                exc = err
                task._activate_cancel_status(status.parent)
        else:
            task._activate_cancel_status(status._parent)
        caused_here = status.effectively_cancelled and not status.parent_cancellation_is_visible_to_us
        if (exc is not None and caused_here) or (
            task._cancel_status is not status and status.abandoned_by_misnesting
        ):
            if isinstance(exc, Cancelled):
                self.cancelled_caught = True
                exc = None
            elif isinstance(exc, BaseExceptionGroup):
                matched, rest = exc.split(Cancelled)
                if matched is not None:
                    self.cancelled_caught = True
                exc = rest
        status.close()
        self._cancel_status = None
        if self._timer is not None:
            self._update_timer()
        return exc

    # -- cancellation -----------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> None:
        """Cancel this scope (idempotent)."""
        if self._cancel_called:
            return
        self._cancel_called = True
        self.cancel_reason = reason if reason is not None else "explicit"
        if GLOBAL.task is not None:
            self._cancel_source = repr(GLOBAL.task)
        self._update_timer()
        if self._cancel_status is not None:
            self._cancel_status.recalculate()

    def _cancel_message(self) -> str:
        message = f"cancelled ({self.cancel_reason or 'explicit'})"
        if self._cancel_source is not None:
            message += f" by {self._cancel_source}"
        return message

    def fire(self) -> None:
        """Timer callback: the deadline has passed."""
        self._timer = None
        if not self._cancel_called:
            self.cancel("deadline")

    def _update_timer(self) -> None:
        runner = self._runner
        if runner is None:
            return
        want = self._cancel_status is not None and not self._cancel_called and self._deadline != math.inf
        timer = self._timer
        if timer is not None and (not want or timer[0] != self._deadline):
            runner.cancel_timer(timer)
            self._timer = timer = None
        if want and timer is None:
            self._timer = runner.add_timer(self._deadline, self)

    @property
    def cancel_called(self) -> bool:
        if not self._cancel_called and (self._cancel_status is not None or not self._has_been_entered):
            runner = self._runner or GLOBAL.runner
            if runner is not None and runner.clock.current_time() >= self._deadline:
                self.cancel("deadline")
        return self._cancel_called

    @property
    def deadline(self) -> float:
        if self._relative_deadline != math.inf:
            runner = GLOBAL.runner
            if runner is not None:
                return runner.clock.current_time() + self._relative_deadline
        return self._deadline

    @deadline.setter
    def deadline(self, new_deadline: float) -> None:
        if math.isnan(float(new_deadline)):
            raise ValueError("deadline must not be NaN")
        self._relative_deadline = math.inf
        self._deadline = float(new_deadline)
        if self._cancel_status is not None and self._runner is not None:
            if self._runner.clock.current_time() >= self._deadline:
                self.cancel("deadline")
            else:
                self._update_timer()

    @property
    def relative_deadline(self) -> float:
        if self._has_been_entered:
            runner = self._runner
            assert runner is not None
            return self._deadline - runner.clock.current_time()
        if self._deadline != math.inf:
            raise RuntimeError("unentered relative cancel scope does not have a relative deadline")
        return self._relative_deadline

    @relative_deadline.setter
    def relative_deadline(self, value: float) -> None:
        if math.isnan(value):
            raise ValueError("relative deadline must not be NaN")
        if value < 0:
            raise ValueError("relative deadline must be non-negative")
        if self._has_been_entered:
            assert self._runner is not None
            self.deadline = self._runner.clock.current_time() + value
        else:
            self._deadline = math.inf
            self._relative_deadline = value

    @property
    def shield(self) -> bool:
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError("shield must be a bool")
        self._shield = value
        if self._cancel_status is not None:
            self._cancel_status.recalculate()


# ------------------------------------------------------------------------------------------
# roots of the tree
# ------------------------------------------------------------------------------------------


def root_cancel_status(task: Task) -> CancelStatus:
    """A fresh root scope for a run's main task (never cancelled from outside)."""
    scope = CancelScope()
    scope._has_been_entered = True
    scope._runner = task._runner
    status = CancelStatus(scope, None)
    scope._cancel_status = status
    return status


def system_cancel_status(runner: Runner) -> CancelStatus:
    """The status system tasks live under; cancelled when the runner closes."""
    status: CancelStatus | None = getattr(runner, "_system_status", None)
    if status is None:
        scope = CancelScope()
        scope._has_been_entered = True
        scope._runner = runner
        status = CancelStatus(scope, None)
        scope._cancel_status = status
        runner._system_status = status  # type: ignore[attr-defined]
    return status


def cancel_all_tasks(runner: Runner) -> None:
    """Used by ``Runner.close``: cancel the system scope and every task still alive."""
    system_cancel_status(runner).scope.cancel("loop closing")
    for task in list(runner.tasks):
        status = task._cancel_status
        while status is not None and status.parent is not None:
            status = status.parent
        if status is not None:
            status.scope.cancel("loop closing")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def current_effective_deadline() -> float:
    """The nearest deadline that applies to the current task (``-inf`` if already cancelled)."""
    status = current_task()._cancel_status
    deadline = math.inf
    while status is not None:
        if status.effectively_cancelled:
            return -math.inf
        scope = status.scope
        deadline = min(deadline, scope._deadline)
        if scope._shield:
            break
        status = status.parent
    return deadline


def move_on_at(deadline: float, *, shield: bool = False) -> CancelScope:
    return CancelScope(deadline=deadline, shield=shield)


def move_on_after(seconds: float, *, shield: bool = False) -> CancelScope:
    if seconds < 0:
        raise ValueError("timeout must be non-negative")
    return CancelScope(relative_deadline=seconds, shield=shield)


@contextmanager
def fail_at(deadline: float, *, shield: bool = False) -> Iterator[CancelScope]:
    with move_on_at(deadline, shield=shield) as scope:
        yield scope
    if scope.cancelled_caught:
        raise TimeoutError


@contextmanager
def fail_after(seconds: float, *, shield: bool = False) -> Iterator[CancelScope]:
    with move_on_after(seconds, shield=shield) as scope:
        yield scope
    if scope.cancelled_caught:
        raise TimeoutError


# ------------------------------------------------------------------------------------------
# the bridge to IORING_OP_ASYNC_CANCEL
# ------------------------------------------------------------------------------------------


#: Results that mean "our ASYNC_CANCEL ended it" when the waiter asked for the cancel: besides
#: -ECANCELED, an operation interrupted in io-wq (a FIFO open, a blocking read) can report -EINTR
#: or one of the kernel's internal restart codes (ERESTARTSYS 512, ERESTARTNOINTR 513,
#: ERESTARTNOHAND 514, ERESTART_RESTARTBLOCK 516), which no caller could make sense of.
CANCELLED_RESULTS: Final = frozenset({-errno.ECANCELED, -errno.EINTR, -512, -513, -514, -516})


class _OpWaiter:
    """Park/reschedule glue between one task and one Operation."""

    __slots__ = ("_op", "cancel_requested", "raise_cancel", "task")

    def __init__(self, task: Task, op: Operation) -> None:
        self.task = task
        self._op = op
        self.cancel_requested = False
        self.raise_cancel: RaiseCancel | None = None

    def completed(self, op: Operation) -> None:
        self.task._runner.reschedule(self.task, op.result)

    def abort(self, raise_cancel: RaiseCancel) -> Abort:
        op = self._op
        if not op.facts.cancellable:
            return FAILED  # e.g. CLOSE: wait for it; the cancellation lands afterwards
        try:
            withdrawn = op.ring.cancel(op)
        except Exception as exc:
            # ASYNC_CANCEL could not be queued (SQ still full, ring unusable).  Never leave the
            # task parked on a cancel that is not on its way: the run fails loudly instead.
            self.task._runner._crash.append(
                UringInternalError(f"cannot cancel {op!r}: {exc}").with_traceback(exc.__traceback__)
            )
            return FAILED
        if withdrawn:
            return SUCCEEDED  # withdrawn before the kernel saw it
        self.cancel_requested = True
        self.raise_cancel = raise_cancel
        return FAILED  # the final CQE decides


class _ClosableWaiter(_OpWaiter):
    """A waiter whose operation the resource's closer may end (see :class:`InFlight`).

    It is the operation's completion callback and the task's abort callback in one (``__call__``
    tells them apart: the ring passes the operation, the runner a ``raise_cancel``), so a parked
    wait keeps no bound method (memory per idle connection).
    """

    __slots__ = ("ended",)

    def __init__(self, task: Task, op: Operation, ended: bool) -> None:
        # no super().__init__(): one wait per socket operation builds one of these
        self.task = task
        self._op = op
        self.cancel_requested = False
        self.raise_cancel = None
        #: Set by :meth:`end` (the resource is being closed), not by a cancel scope.
        self.ended = ended

    def end(self) -> None:
        """End the operation because its resource is closing (see :func:`end_operation`)."""
        self.ended = True
        end_operation(self._op)

    def __call__(self, arg: Any) -> Any:
        if arg is self._op:  # op.callback: the final CQE
            self.task._runner.reschedule(self.task, arg.result)
            return None
        return self.abort(arg)  # the runner's abort callback


def end_operation(op: Operation) -> None:
    """End ``op``, on which some task is parked in a wait of this module, from outside that task
    (its resource is being closed; its result is no longer wanted).

    If the kernel has not seen the SQE the ring withdraws it and will never call back, so the
    waiter is resumed here (``op`` is done with ``-ECANCELED``); otherwise ``ASYNC_CANCEL`` is
    queued and the waiter stays parked until the final CQE -- ``-ECANCELED``, or a real result,
    which it keeps.  Either way the waiter resumes with a result, never with Cancelled, and the
    memory and fd stay the operation's until its final CQE.  A done operation is left alone.
    """
    if op.done:
        return
    callback = op.callback
    if op.ring.cancel(op) and callback is not None:
        callback(op)


async def end_and_reap(op: Operation) -> int:
    """End ``op``, on which nobody waits, and wait -- shielded -- for its final CQE (the memory
    and fds it names stay lent until then).  Returns its result."""
    if op.callback is not None:
        raise RuntimeError(f"another task is already waiting for {op!r}")
    if not op.done:
        op.ring.cancel(op)
    with CancelScope(shield=True):
        result = await wait_operation(op)
    return result  # noqa: RET504 -- a return inside the scope: mypy sees __exit__ may swallow


async def wait_operation(op: Operation) -> int:
    """Wait for ``op``'s final CQE and return its result (``-errno`` on failure).

    If the task is cancelled meanwhile, the operation is withdrawn or ``ASYNC_CANCEL``-ed and
    the task keeps waiting for the final CQE: ``-ECANCELED`` (or another result our cancel
    caused, see :data:`CANCELLED_RESULTS`) raises the cancellation, any other result is
    returned (and the cancellation lands at the next checkpoint).  An operation that cannot be
    cancelled (``OpFacts.cancellable``: CLOSE) is waited for; the cancellation lands afterwards.
    """
    task = GLOBAL.task
    if task is None:
        task = current_task()  # raises
    if op.callback is not None or op.done:
        return await _not_parkable(op)
    waiter = _OpWaiter(task, op)
    op.callback = waiter.completed
    result: int = await wait_task_rescheduled(waiter.abort)
    if waiter.cancel_requested and result in CANCELLED_RESULTS:
        assert waiter.raise_cancel is not None
        waiter.raise_cancel()
    return result


async def _not_parkable(op: Operation) -> int:
    """The waits' rare cases: ``op`` has a waiter already, or is done."""
    if op.callback is not None:
        raise RuntimeError(f"another task is already waiting for {op!r}")
    # Completed (or withdrawn) before anyone waited: no callback will ever come, and the abort
    # could only answer FAILED -- parking would never end, not even by cancellation.  Hand the
    # result over at a schedule point (not a cancel point: it must not be lost).
    await cancel_shielded_checkpoint()
    assert op.result is not None
    return op.result


async def wait_owned_fd(op: Operation, error: Callable[[int], BaseException] | None = None) -> OwnedFd:
    """:func:`wait_operation` for an operation that returns an fd (``OpFacts.returns_fd``).

    The fd comes back as an :class:`~anyio_uring._ring.OwnedFd`, closed unless taken; a negative
    result raises ``error(result)`` (default: the plain ``OSError``).
    """
    if not op.facts.returns_fd:
        raise ValueError(f"{op!r} does not return a file descriptor")
    res = await wait_operation(op)
    if res < 0:
        raise error(res) if error is not None else OSError(-res, os.strerror(-res))
    return OwnedFd(res)


class InFlight:
    """The operations one resource (a pipe end, a file, a socket) has in flight, so that
    closing the resource can end them -- THE close-while-waiting logic, used by every resource.

    Resources await their operations through :meth:`wait` instead of :func:`wait_operation`.
    Their ``aclose()`` calls :meth:`end_all` before closing the fd: it ends every operation still
    in flight (withdraws it, or ``ASYNC_CANCEL``-s it by user_data), then waits -- shielded --
    until each one has reaped its final CQE and its task has let go.  Only then may the fd be
    closed, so the kernel never touches a recycled fd number, and every waiting task resumes
    with ``-ECANCELED`` (or the real result, if the operation won the race); :attr:`closing`
    tells the resource to translate that into ``ClosedResourceError`` or the like.
    """

    __slots__ = ("_closers", "_more", "_waiter", "closing")

    def __init__(self) -> None:
        # One slot, and a list only for more: a resource has one or two operations in flight
        # (a receive, a send), and an idle connection should cost as little memory as it can.
        self._waiter: _ClosableWaiter | None = None
        self._more: list[_ClosableWaiter] | None = None
        self._closers: list[Task] | None = None  # made by end_all
        #: True from :meth:`end` on.
        self.closing = False

    def __len__(self) -> int:
        return (self._waiter is not None) + (len(self._more) if self._more else 0)

    @types.coroutine
    def wait(self, op: Operation) -> Generator[Any, Any, int]:
        """:func:`wait_operation`, with ``op`` recorded as in flight until its task lets go.

        A generator-based coroutine that parks the task itself (no inner trap frame), with as
        few locals as it can: an idle connection's pending receive waits here, and its frame is
        memory per connection.
        """
        task = GLOBAL.task
        if task is None:
            task = current_task()  # raises
        if op.callback is not None or op.done:
            return (yield from _not_parkable(op).__await__())
        waiter = _ClosableWaiter(task, op, self.closing)
        op.callback = waiter
        if self._waiter is None:
            self._waiter = waiter
        else:
            self._add_more(waiter)
        try:
            result: int = yield waiter  # wait_task_rescheduled(waiter), inlined
        finally:
            if self._waiter is waiter:
                self._waiter = None
                if self._closers:
                    self._closed_one()
            else:
                self._remove_more(waiter)
        if (waiter.cancel_requested or waiter.ended) and result in CANCELLED_RESULTS:
            if waiter.cancel_requested:
                assert waiter.raise_cancel is not None
                waiter.raise_cancel()
            return -errno.ECANCELED
        return result

    def _waiters(self) -> list[_ClosableWaiter]:
        waiters = [] if self._waiter is None else [self._waiter]
        if self._more:
            waiters.extend(self._more)
        return waiters

    def _add_more(self, waiter: _ClosableWaiter) -> None:
        if self._more is None:
            self._more = [waiter]
        else:
            self._more.append(waiter)

    def _remove_more(self, waiter: _ClosableWaiter) -> None:
        assert self._more is not None
        self._more.remove(waiter)
        if self._closers:
            self._closed_one()

    def _closed_one(self) -> None:
        """A waiter let go while a closer waits: wake the closers once none is left."""
        if self._waiter is None and not self._more:
            closers = self._closers
            assert closers is not None
            for closer in closers:
                closer._runner.reschedule(closer)
            closers.clear()

    def end(self) -> None:
        """Mark the resource closing and end every operation in flight, without waiting (for
        synchronous callers such as ``notify_closing``; the fd must stay open until they finish)."""
        self.closing = True
        for waiter in self._waiters():
            waiter.end()

    async def end_all(self) -> None:
        """:meth:`end`, then wait until every operation in flight has finished (shielded: a
        cancelled closer still waits, the memory rule demands it)."""
        self.end()
        if not len(self):
            return
        task = current_task()
        if self._closers is None:
            self._closers = []
        self._closers.append(task)

        def abort(_: RaiseCancel) -> Abort:
            return FAILED  # shielded: the operations' final CQEs end this wait

        await wait_task_rescheduled(abort)


#: What :meth:`MultishotFeed._wake` resumes a waiter with: look at the queue (not an item).
_NO_ITEM: Final = object()


class MultishotFeed:
    """The results of a multishot operation that a resource owns (a listener's multishot
    ``ACCEPT``), handed to tasks one at a time -- the runtime side of DESIGN.md section 5's
    "multishot operations are owned by an object, not by a task".

    Every CQE with ``F_MORE`` appends its result to a queue; :meth:`get` takes the oldest (after a
    checkpoint, so a cancelled ``get`` leaves it for the next one) or parks until one arrives.  A
    cancelled ``get`` merely stops waiting: the operation stays armed and whatever it produces
    waits in the queue, so nothing is lost.  The final CQE (no ``F_MORE``) ends the operation:
    an error in it is reported once by the next :meth:`get`, and the one after re-arms (a
    listener keeps serving after ``EMFILE``).  When ``limit`` results wait untaken, the
    operation is cancelled (back-pressure: the kernel's queue holds the rest) and re-armed by the
    next :meth:`get` that finds the queue empty.

    :meth:`close` ends the operation, waits -- shielded -- for its final CQE and passes every
    untaken result to ``dispose`` (e.g. ``os.close`` for accepted fds); so does garbage
    collection of a feed whose operation is over.
    """

    __slots__ = (
        "_closers",
        "_convert",
        "_dispose",
        "_error",
        "_items",
        "_limit",
        "_op",
        "_waiter",
        "closing",
    )

    def __init__(
        self,
        dispose: Callable[[Any], object],
        limit: int = 64,
        convert: Callable[[Operation, int, int], Any] | None = None,
    ) -> None:
        #: ``convert(op, res, flags)`` turns a CQE with a result ``>= 0`` into the queued item
        #: (default: the result itself); it runs inside the ring's dispatch, so it must be quick
        #: and must consume what the CQE lends (a provided buffer: copy it out, give it back).
        self._convert = convert
        self._items: deque[Any] = deque()
        self._op: Operation | None = None
        self._error: int | None = None
        self._waiter: Task | None = None
        self._closers: list[Task] = []
        self._dispose = dispose
        self._limit = limit
        #: True from :meth:`close` on.
        self.closing = False

    @property
    def armed(self) -> bool:
        """An operation is in flight (until its final CQE)."""
        return self._op is not None

    @property
    def idle(self) -> bool:
        """No operation in flight, nothing queued, no error to report: a :meth:`get` now would
        arm a new operation (its owner may read the resource another way instead)."""
        return self._op is None and not self._items and self._error is None

    def __len__(self) -> int:
        return len(self._items)

    def pause(self) -> None:
        """End the operation (if one is in flight) without closing the feed: what it produced
        stays queued, and the next :meth:`get` that finds the queue empty re-arms."""
        op = self._op
        if op is not None:
            end_operation(op)  # a withdrawn SQE calls back here, so _op is cleared either way

    def _more(self, op: Operation, res: int, flags: int) -> None:
        item = res if self._convert is None or res < 0 else self._convert(op, res, flags)
        task = self._waiter
        if task is not None and not self._items:
            # A task waits and nothing is queued: hand the item over with the wake-up (one
            # task step instead of a wake-up and a schedule point).
            self._waiter = None
            task._runner.reschedule(task, item)
        else:
            self._items.append(item)
        if len(self._items) >= self._limit and not self.closing:
            op.ring.cancel(op)  # nobody takes them: let the kernel's queue hold the rest (once)

    def _done(self, op: Operation) -> None:
        self._op = None
        res = op.result
        assert res is not None
        try:
            if res >= 0:
                # a final CQE may carry a result too
                flags = op.cqe_flags or 0
                self._items.append(res if self._convert is None else self._convert(op, res, flags))
            elif res not in CANCELLED_RESULTS:
                self._error = res
        finally:  # a converter that failed (a bug, raised by the dispatch) still ends every wait
            self._wake()
            for closer in self._closers:
                closer._runner.reschedule(closer)
            self._closers.clear()

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            task._runner.reschedule(task, _NO_ITEM)

    def take_queued(self) -> Any:
        """The oldest queued item, without waiting (``IndexError`` when none is queued)."""
        return self._items.popleft()

    def queued_items(self) -> int:
        return len(self._items) if self._items and type(self._items[0]) is not int else 0

    def unget(self, item: Any) -> None:
        """Put ``item`` back at the head of the queue (the rest of a result its taker could not
        use whole, e.g. bytes beyond a receive's ``max_bytes``)."""
        self._items.appendleft(item)

    async def get(self, arm: Callable[[], Operation | None]) -> Any:
        """The next result (``>= 0``, or the ``-errno`` that ended the operation), arming the
        operation with ``arm()`` when none is in flight; ``-ECANCELED`` once :meth:`close` was
        called.  A schedule point and a cancel point; one task at a time.

        ``arm()`` may decline (return ``None``) when nothing is queued: ``get`` then returns
        ``None`` -- without a checkpoint if it did not wait -- and the owner reads another way."""
        if self._waiter is not None:
            raise RuntimeError("another task is already waiting on this multishot operation")
        while True:
            if self.closing:
                await checkpoint()
                return -errno.ECANCELED
            if self._items or self._error is not None:
                await checkpoint()  # a cancellation here leaves the result queued
                if self._items:
                    return self._items.popleft()
                if self._error is not None:
                    res, self._error = self._error, None
                    return res
                continue
            if self._op is None:
                op = arm()
                if op is None:
                    return None
                op.on_more = self._more
                op.callback = self._done
                self._op = op
            task = GLOBAL.task
            if task is None:
                task = current_task()  # raises
            self._waiter = task

            def abort(_: RaiseCancel) -> Abort:
                self._waiter = None
                return SUCCEEDED  # the operation stays armed; its results stay queued

            item = await wait_task_rescheduled(abort)
            if item is not _NO_ITEM:
                return item  # handed over by _more: a cancellation lands at the next checkpoint

    async def close(self) -> None:
        """End the operation, wait (shielded) for its final CQE, dispose of untaken results."""
        self.closing = True
        self._wake()
        op = self._op
        if op is not None:
            end_operation(op)
        if self._op is not None:
            task = current_task()
            self._closers.append(task)

            def abort(_: RaiseCancel) -> Abort:
                return FAILED  # shielded: the final CQE ends this wait

            await wait_task_rescheduled(abort)
        self._dispose_all()

    def abandon(self) -> None:
        """The owner is gone without :meth:`close` (garbage collection, maybe on another
        thread): end the operation without waiting -- on the loop's thread, soon
        (``Ring.cancel_soon``).  Its final CQE still comes, and once nothing refers to the feed
        any more its untaken results are disposed of."""
        self.closing = True
        op = self._op
        if op is not None and not op.done:
            op.ring.cancel_soon(op)

    def _dispose_all(self) -> None:
        items = self._items
        while items:
            try:
                self._dispose(items.popleft())
            except OSError:
                pass

    def __del__(self) -> None:
        if self._items and self._op is None:
            self._dispose_all()
