"""anyio's cancel scopes, task groups and task info over the runtime's."""

from __future__ import annotations

import weakref
from collections.abc import (
    Callable,
    Coroutine,
)
from contextvars import Context
from functools import partial
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
import anyio.abc

from .._core import Task
from .._core._cancel import CancelScope as _NativeCancelScope
from .._core._run import Cancelled
from .._core._taskgroup import Nursery, NurseryManager
from ._options import callable_name

if TYPE_CHECKING:
    from typing import Self


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


# mypy takes both bases for "disjoint" (each has __slots__); anyio's only slot is __weakref__,
# which CPython does not count as a layout of its own, so the two combine (checked at import).
class CancelScope(_NativeCancelScope, anyio.CancelScope):  # type: ignore[misc]
    """anyio's ``CancelScope``: the runtime's :class:`anyio_uring.cancel.CancelScope` itself
    (its methods and properties are anyio's API already), registered as anyio's class.

    anyio's ``CancelScope(...)`` asks the backend for a scope and then calls ``__init__`` on
    what it got back once more: the runtime's scope is built in ``__new__`` and has object's
    ``__init__``, so that costs nothing.
    """

    __slots__ = ()


class _NoValue:
    """``started()`` has not been called yet."""


class _TaskStatus(anyio.abc.TaskStatus[T]):
    """The ``task_status`` anyio code receives from :meth:`TaskGroup.start`.

    The coroutine is created before the task that runs it; a synchronous function that calls
    ``task_status.started()`` while creating it reports early, and the value is forwarded once
    the runtime's status exists.
    """

    __slots__ = ("early_value", "native")

    def __init__(self) -> None:
        self.native: Any = None
        self.early_value: object = _NoValue

    def started(self, value: T | None = None) -> None:
        if self.native is not None:
            self.native.started(value)
        elif self.early_value is not _NoValue:
            raise RuntimeError("called 'started' twice on the same task status")
        else:
            self.early_value = value


class TaskGroup(anyio.abc.TaskGroup):
    """anyio's task group over a runtime nursery (trio's rules, strict exception groups)."""

    def __init__(self) -> None:
        self._entered = False
        self._active = False
        self._manager: NurseryManager | None = NurseryManager(scope_type=CancelScope)
        self._nursery: Nursery | None = None
        self.cancel_scope = cast("CancelScope", None)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("TaskGroup cannot be entered more than once")
        self._entered = True
        assert self._manager is not None
        self._nursery = await self._manager.__aenter__()
        self.cancel_scope = cast("CancelScope", self._nursery.cancel_scope)
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool:
        try:
            assert self._manager is not None
            return await self._manager.__aexit__(exc_type, exc_val, exc_tb)
        except BaseExceptionGroup as group:
            if _only_cancelled(group):
                # Only cancellations from an enclosing scope: anyio code expects the bare
                # cancellation exception, so that ``except get_cancelled_exc_class()`` works.
                raise Cancelled(*_first_leaf(group).args) from group
            raise
        finally:
            del exc_val, exc_tb  # this frame stays reachable from the traceback
            self._active = False
            # A task group outlives its block (the caller may hold it): let go of the nursery,
            # which holds the host task and, through it, the exception it may have raised.
            self._manager = self._nursery = None

    def _check_active(self, coro: Coroutine[Any, Any, Any] | None = None) -> Nursery:
        if not self._active or self._nursery is None:
            if coro is not None:
                coro.close()
            raise RuntimeError("This task group is not active; no new tasks can be started.")
        return self._nursery

    def create_task(
        self,
        coro: Coroutine[Any, Any, T_co],
        *,
        name: object = None,
        context: Context | None = None,
    ) -> anyio.TaskHandle[T_co]:
        if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
            raise TypeError(f"expected a coroutine, got {coro.__class__.__qualname__}")
        nursery = self._check_active(coro)
        task_name = _coro_name(coro, name)  # a str: the handle's name is the same string
        handle: anyio.TaskHandle[T_co] = anyio.TaskHandle(coro, task_name)
        if context is None:
            nursery.start_soon(handle._run_coro, name=task_name)
        else:  # the task's context is a copy of ``context``, made by the spawn running in it
            context.run(partial(nursery.start_soon, handle._run_coro, name=task_name))
        return handle

    async def start(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        name: object = None,
        return_handle: Literal[False, True] = False,
    ) -> Any:
        nursery = self._check_active()
        final_name = callable_name(func, name)
        handles: list[anyio.TaskHandle[Any]] = []

        async def run_started(*, task_status: Any) -> None:
            status: _TaskStatus[Any] = _TaskStatus()
            coro = _call_for_coroutine(func, args, status)
            if status.early_value is not _NoValue:
                task_status.started(status.early_value)
            else:
                status.native = task_status
            handle: anyio.TaskHandle[Any] = anyio.TaskHandle(coro, final_name)
            handles.append(handle)
            await handle._run_coro()

        value = await nursery.start(run_started, name=final_name)
        if return_handle:
            handle = handles[0]
            handle._start_value = value
            return handle
        return value


def _only_cancelled(group: BaseExceptionGroup[BaseException]) -> bool:
    return all(
        _only_cancelled(exc) if isinstance(exc, BaseExceptionGroup) else isinstance(exc, Cancelled)
        for exc in group.exceptions
    )


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _coro_name(coro: Coroutine[Any, Any, Any], override: object) -> str:
    if override is not None:
        return str(override)
    frame = getattr(coro, "cr_frame", None)
    module = frame.f_globals.get("__name__") if frame is not None else None
    parts = [module, getattr(coro, "__qualname__", None)]
    return ".".join(part for part in parts if isinstance(part, str) and part)


def _call_for_coroutine(
    func: Callable[..., Any], args: tuple[Any, ...], task_status: _TaskStatus[Any]
) -> Coroutine[Any, Any, Any]:
    coro = func(*args, task_status=task_status)
    if not isinstance(coro, Coroutine):
        prefix = f"{func.__module__}." if hasattr(func, "__module__") else ""
        raise TypeError(
            f"Expected {prefix}{func.__qualname__}() to return a coroutine, but the return value "
            f"({coro!r}) is not a coroutine object"
        )
    return coro


class UringTaskInfo(anyio.TaskInfo):
    """anyio's view of a runtime :class:`~anyio_uring.Task`.

    ``parent_id`` is the id of the task that owns the task's nursery.  The main task and system
    tasks have none: ``None``, as on asyncio.  (trio reports its hidden ``<init>`` task as their
    parent; our runner drives the main task itself and has no such task, so any other value
    would name a task that does not exist.)
    """

    __slots__ = ("_task",)

    def __init__(self, task: Task) -> None:
        nursery = task.parent_nursery
        parent = getattr(nursery, "parent_task", None)
        super().__init__(id(task), id(parent) if parent is not None else None, task.name, task.coro)
        self._task = weakref.ref(task)

    def has_pending_cancellation(self) -> bool:
        task = self._task()
        if task is None:
            return False
        status = task._cancel_status
        return status is not None and status.effectively_cancelled
