"""Nurseries (task groups) with trio's rules.

* A nursery's body and children share its cancel scope.  The first failure (body or child)
  cancels that scope, so siblings are cancelled.
* ``__aexit__`` waits for every child, whatever happened; it never returns early.
* Failures come out as one ``BaseExceptionGroup`` (strict groups, as trio's default); the
  nursery's scope strips the ``Cancelled`` it caused.
* ``start()`` runs a child inside a private nursery until it calls ``task_status.started(v)``,
  then moves it (and its cancel-status subtree) into this nursery and returns ``v``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from .._errors import UringInternalError
from ._cancel import CancelScope, CancelStatus
from ._run import Cancelled, Error, Task, current_task
from ._traps import FAILED, Abort, RaiseCancel, cancel_shielded_checkpoint, wait_task_rescheduled

__all__ = ["Nursery", "TaskStatus", "open_nursery"]

T = TypeVar("T")


class _NoStatus:
    pass


class TaskStatus(Generic[T]):
    """Passed to a task started with :meth:`Nursery.start` as ``task_status``."""

    __slots__ = ("_called", "_new", "_old", "_value")

    def __init__(self, old: Nursery, new: Nursery) -> None:
        self._old = old
        self._new = new
        self._called = False
        self._value: Any = _NoStatus

    def __repr__(self) -> str:
        return f"<TaskStatus started={self._called}>"

    def started(self, value: T | None = None) -> None:
        """Report that the task has initialized; ``value`` becomes ``start()``'s result."""
        if self._called:
            raise RuntimeError("called 'started' twice on the same task status")
        self._called = True
        self._value = value
        old, new = self._old, self._new
        if old._closed:
            return  # the starting task is already unwinding
        if old._cancel_status.effectively_cancelled:
            # start() is being cancelled: leave the task where it is, it will exit on its own.
            # Moved into the new nursery, a Cancelled propagating out of it (raised by one of
            # the *caller's* scopes) would reach no cancelled scope there and would cancel the
            # whole new nursery instead.
            return
        if new._closed:
            raise RuntimeError("Nursery is closed to new arrivals")
        # Move the tasks...
        tasks = old._children
        old._children = set()
        for task in tasks:
            task._parent_nursery = new
            new._children.add(task)
        # ...and the cancel-status subtree under the new nursery, detaching everything from the
        # old one first (re-attaching under a cancelled nursery runs abort callbacks).
        old_status = old._cancel_status
        children = list(old_status.children or ())
        moved_tasks = [t for t in old_status.tasks if t is not old._parent_task]
        for status in children:
            status.parent = None
        for task in moved_tasks:
            task._activate_cancel_status(None)
        for status in children:
            status.parent = new._cancel_status
        for task in moved_tasks:
            task._activate_cancel_status(new._cancel_status)
        old._check_closed()


class Nursery:
    """A task group: ``async with open_nursery() as nursery: nursery.start_soon(fn, ...)``."""

    def __init__(self, parent_task: Task, scope: CancelScope) -> None:
        self._parent_task = parent_task
        self.cancel_scope = scope
        status = scope._cancel_status
        assert status is not None
        self._cancel_status: CancelStatus = status
        self._children: set[Task] = set()
        self._pending_excs: list[BaseException] = []
        self._nested_child_running = True
        self._parent_waiting_in_aexit = False
        self._pending_starts = 0
        self._closed = False
        if parent_task._child_nurseries is None:
            parent_task._child_nurseries = [self]
        else:
            parent_task._child_nurseries.append(self)

    def __repr__(self) -> str:
        return f"<Nursery children={len(self._children)} closed={self._closed}>"

    @property
    def child_tasks(self) -> frozenset[Task]:
        return frozenset(self._children)

    @property
    def parent_task(self) -> Task:
        return self._parent_task

    def _add_exc(self, exc: BaseException) -> None:
        self._pending_excs.append(exc)
        self.cancel_scope.cancel("a task in the task group failed")

    def _check_closed(self) -> None:
        if not (self._nested_child_running or self._children or self._pending_starts):
            self._closed = True
            if self._parent_waiting_in_aexit:
                self._parent_waiting_in_aexit = False
                self._parent_task._runner.reschedule(self._parent_task)

    def _child_finished(self, task: Task, outcome: Error | tuple[Any]) -> None:
        self._children.discard(task)
        if isinstance(outcome, Error):
            self._add_exc(outcome.error)
        if not self._children:  # (_check_closed() does nothing while children remain)
            self._check_closed()

    async def _nested_child_finished(self, nested_exc: BaseException | None) -> BaseException | None:
        if nested_exc is not None:
            self._add_exc(nested_exc)
        self._nested_child_running = False
        self._check_closed()
        if not self._closed:

            def aborted(raise_cancel: RaiseCancel) -> Abort:
                try:
                    raise_cancel()
                except Cancelled:
                    pass
                except BaseException as exc:  # KeyboardInterrupt: keep it
                    self._add_exc(exc)
                return FAILED

            self._parent_waiting_in_aexit = True
            await wait_task_rescheduled(aborted)
        else:
            try:
                await cancel_shielded_checkpoint()
            except BaseException as exc:
                self._add_exc(exc)
        stack = self._parent_task._child_nurseries
        popped = stack.pop() if stack else None
        if popped is not self:
            raise UringInternalError("nursery stack corrupted")
        if self._pending_excs:
            excs, self._pending_excs = self._pending_excs, []
            return BaseExceptionGroup("Exceptions from task group", excs)
        return None

    def start_soon(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> None:
        """Start ``async_fn(*args)`` as a child of this nursery."""
        if self._closed:
            raise RuntimeError("Nursery is closed to new arrivals")
        self._parent_task._runner.spawn(async_fn, args, self, name)

    async def start(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None) -> Any:
        """Start ``async_fn(*args, task_status=...)`` and wait until it calls
        ``task_status.started(value)``; return ``value``."""
        if self._closed:
            raise RuntimeError("Nursery is closed to new arrivals")
        try:
            self._pending_starts += 1
            try:
                async with open_nursery() as old:
                    status: TaskStatus[Any] = TaskStatus(old, self)
                    thunk = functools.partial(async_fn, task_status=status)
                    task_name = async_fn if name is None else name
                    self._parent_task._runner.spawn(thunk, args, old, task_name)
            except BaseExceptionGroup as group:
                if len(group.exceptions) == 1:
                    exc = group.exceptions[0]
                    try:
                        raise exc
                    finally:
                        del exc
                raise UringInternalError("the private nursery of start() had several tasks") from group
            if status._value is _NoStatus:
                raise RuntimeError("child exited without calling task_status.started()")
            return status._value
        finally:
            self._pending_starts -= 1
            self._check_closed()


class NurseryManager:
    """``async with open_nursery() as nursery``."""

    __slots__ = ("_nursery", "_scope", "_scope_type")

    def __init__(self, *, scope_type: type[CancelScope] = CancelScope) -> None:
        #: The class of the nursery's cancel scope (the anyio adapter passes its subclass, so
        #: that ``TaskGroup.cancel_scope`` is the nursery's scope itself).
        self._scope_type = scope_type
        self._scope: CancelScope | None = None
        self._nursery: Nursery | None = None

    async def __aenter__(self) -> Nursery:
        scope = self._scope_type()
        scope.__enter__()
        self._scope = scope
        self._nursery = Nursery(current_task(), scope)
        return self._nursery

    async def __aexit__(
        self, etype: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        nursery, scope = self._nursery, self._scope
        assert nursery is not None
        assert scope is not None
        # Single use: let go of the nursery (and through it the parent task and its outcome),
        # since this manager stays reachable from a raised exception's traceback.
        self._nursery = self._scope = None
        new_exc = await nursery._nested_child_finished(exc)
        combined = scope._close(new_exc)
        if combined is None:
            return True
        if combined is exc:
            return False
        context = combined.__context__
        try:
            raise combined
        finally:
            combined.__context__ = context
            # This frame stays reachable from the traceback: drop its references to the
            # exceptions and the nursery, or they (and all they reference) live on in a cycle.
            del combined, context, new_exc, exc, tb, nursery, scope


def open_nursery() -> NurseryManager:
    """Open a task group (trio's ``open_nursery``, strict exception groups)."""
    return NurseryManager()
