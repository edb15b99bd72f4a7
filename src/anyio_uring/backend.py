"""The anyio backend ``"uring"``: :class:`UringBackend`, a thin adapter over the runtime.

anyio drives every backend through the class methods of ``anyio.abc.AsyncBackend``; this module
maps each of them onto the runtime (``_core``, ``cancel``, ``_taskgroup``, ``_sync``,
``_threads``, and the subprocess / signal / DNS modules).  It holds no scheduling or I/O logic of
its own (DESIGN.md section 3): cancellation, waiting and the ring stay in the runtime.  What lives
here is translation -- anyio's classes wrapping ours, anyio's exception types and messages, and
the shape of anyio's test-runner protocol.

``AsyncBackend`` is not a stable public anyio API, so the package pins a tested anyio range and
CI runs anyio's own test suite against this backend (``conformance/``).

Backend options (``anyio.run(main, backend="uring", backend_options={...})`` or the second
element of an ``anyio_backend`` pytest fixture value):

``clock``
    An :class:`anyio_uring.MockClock` (or any :class:`anyio_uring._core.Clock`) instead of the
    system clock.
``ring_options``
    An :class:`anyio_uring.RingOptions` (SQ/CQ sizes, masked kernel features).
``disable``
    Kernel features to mask, by name (an iterable, or a comma-separated string); merged into
    ``ring_options``.  ``FEATURES`` in ``anyio_uring._probe`` lists the names.
``install_signal_handlers``
    ``False`` leaves SIGINT handling alone (default ``True``: Ctrl+C is delivered to the main
    task as ``KeyboardInterrupt``).
``debug``
    ``True`` records where each coroutine was created, so "coroutine ... was never awaited"
    warnings name the line that forgot the ``await``.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager
from contextvars import Context, copy_context
from dataclasses import dataclass, replace
from functools import partial
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
import anyio.abc
from anyio._core._eventloop import claim_worker_thread  # private, but the pinned range has it

from . import _sync
from ._core import Clock, Runner, Task, current_runner, current_task
from ._core import cancel_shielded_checkpoint as _cancel_shielded_checkpoint
from ._core import checkpoint as _checkpoint
from ._core import checkpoint_if_cancelled as _checkpoint_if_cancelled
from ._core import sleep as _sleep
from ._core import sleep_forever as _sleep_forever
from ._core._run import Cancelled
from ._probe import RingOptions
from ._taskgroup import Nursery, NurseryManager, open_nursery
from ._threads import (
    current_default_thread_limiter as _current_default_thread_limiter,
)
from ._threads import (
    from_thread_check_cancelled,
    from_thread_run,
    from_thread_run_sync,
    to_thread_run_sync,
)
from ._version import __version__
from .cancel import CancelScope as _NativeCancelScope
from .cancel import current_effective_deadline as _current_effective_deadline
from .cancel import wait_operation

if TYPE_CHECKING:
    from socket import AddressFamily, SocketKind
    from socket import socket as Socket
    from typing import Self, TypeVarTuple, Unpack

    from _typeshed import FileDescriptorLike
    from anyio.abc import IPSockAddrType

    PosArgsT = TypeVarTuple("PosArgsT")

__all__ = ["BACKEND_NAME", "CancelScope", "TaskGroup", "UringBackend", "backend_class"]

T = TypeVar("T")
T_Retval = TypeVar("T_Retval")
T_co = TypeVar("T_co", covariant=True)

BACKEND_NAME = "uring"

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _callable_name(func: object, override: object = None) -> str:
    """anyio's task naming: ``str(override)`` if given, else ``module.qualname`` of ``func``."""
    if override is not None:
        return str(override)
    parts = [getattr(func, "__module__", None), getattr(func, "__qualname__", None)]
    return ".".join(part for part in parts if isinstance(part, str) and part)


# ------------------------------------------------------------------------------------------
# run options
# ------------------------------------------------------------------------------------------

_OPTIONS = ("clock", "ring_options", "disable", "install_signal_handlers", "debug")


@dataclass(frozen=True, slots=True)
class _RunSettings:
    """Parsed ``backend_options`` (see the module docstring)."""

    clock: Clock | None = None
    ring_options: RingOptions | None = None
    install_signal_handlers: bool = True
    debug: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> _RunSettings:
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown backend option(s) {', '.join(map(repr, unknown))} for the anyio backend "
                f"'uring'; valid options: {', '.join(_OPTIONS)}"
            )
        clock = options.get("clock")
        if clock is not None and not all(
            callable(getattr(clock, name, None))
            for name in ("start_clock", "current_time", "deadline_to_sleep_time")
        ):
            raise TypeError(
                f"backend option 'clock' must be an anyio_uring clock (e.g. anyio_uring.MockClock()), "
                f"not {clock!r}"
            )
        ring_options = options.get("ring_options")
        if ring_options is not None and not isinstance(ring_options, RingOptions):
            raise TypeError(
                f"backend option 'ring_options' must be an anyio_uring.RingOptions, not {ring_options!r}"
            )
        disable = options.get("disable")
        if disable is not None:
            if isinstance(disable, str):
                names = frozenset(name.strip() for name in disable.split(",") if name.strip())
            else:
                names = frozenset(disable)
            base = ring_options if ring_options is not None else RingOptions()
            ring_options = replace(base, disable=base.disable | names)
        install = options.get("install_signal_handlers", True)
        debug = options.get("debug", False)
        for name, value in (("install_signal_handlers", install), ("debug", debug)):
            if not isinstance(value, bool):
                raise TypeError(f"backend option {name!r} must be a bool, not {value!r}")
        return cls(cast("Clock | None", clock), ring_options, install, debug)

    def new_runner(self) -> Runner:
        return Runner(
            clock=self.clock,
            ring_options=self.ring_options,
            install_signal_handlers=self.install_signal_handlers,
        )

    @contextmanager
    def debugging(self) -> Iterator[None]:
        if not self.debug:
            yield
            return
        old = sys.get_coroutine_origin_tracking_depth()
        sys.set_coroutine_origin_tracking_depth(max(old, 16))
        try:
            yield
        finally:
            sys.set_coroutine_origin_tracking_depth(old)


def _coroutine_function(
    func: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """``func`` if it returns coroutines; else a wrapper that awaits whatever it returns.

    anyio accepts any callable returning an awaitable; the runtime's tasks run coroutines.
    """

    def call(*args: Any) -> Coroutine[Any, Any, T]:
        awaitable = func(*args)
        if isinstance(awaitable, Coroutine) or not isinstance(awaitable, Awaitable):
            return cast("Coroutine[Any, Any, T]", awaitable)  # a non-awaitable: the runtime reports it

        async def await_it() -> T:
            return await awaitable

        return await_it()

    return call


# ------------------------------------------------------------------------------------------
# cancel scopes and task groups
# ------------------------------------------------------------------------------------------


class CancelScope(anyio.CancelScope):
    """anyio's ``CancelScope`` over the runtime's :class:`anyio_uring.cancel.CancelScope`."""

    __slots__ = ("_native",)

    _native: _NativeCancelScope

    def __new__(cls, *, deadline: float = math.inf, shield: bool = False) -> Self:
        return object.__new__(cls)

    def __init__(self, *, deadline: float = math.inf, shield: bool = False) -> None:
        self._native = _NativeCancelScope(deadline=deadline, shield=shield)

    @classmethod
    def _wrap(cls, native: _NativeCancelScope) -> CancelScope:
        scope = object.__new__(cls)
        scope._native = native
        return scope

    def __repr__(self) -> str:
        return repr(self._native)

    def __enter__(self) -> Self:
        self._native.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool:
        try:
            return self._native.__exit__(exc_type, exc_val, exc_tb)
        finally:
            del exc_val, exc_tb

    def cancel(self, reason: str | None = None) -> None:
        self._native.cancel(reason)

    @property
    def deadline(self) -> float:
        return self._native.deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._native.deadline = value

    @property
    def cancel_called(self) -> bool:
        return self._native.cancel_called

    @property
    def cancelled_caught(self) -> bool:
        return self._native.cancelled_caught

    @property
    def shield(self) -> bool:
        return self._native.shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._native.shield = value


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
        self._manager: NurseryManager | None = open_nursery()
        self._nursery: Nursery | None = None
        self.cancel_scope = cast("CancelScope", None)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("TaskGroup cannot be entered more than once")
        self._entered = True
        assert self._manager is not None
        self._nursery = await self._manager.__aenter__()
        self.cancel_scope = CancelScope._wrap(self._nursery.cancel_scope)
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
        if not isinstance(coro, Coroutine):
            raise TypeError(f"expected a coroutine, got {coro.__class__.__qualname__}")
        nursery = self._check_active(coro)
        handle: anyio.TaskHandle[T_co] = anyio.TaskHandle(coro, _coro_name(coro, name))
        spawn = partial(nursery.start_soon, handle._run_coro, name=handle.name)
        if context is not None:
            context.run(spawn)
        else:
            spawn()
        return handle

    async def start(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *args: Any,
        name: object = None,
        return_handle: Literal[False, True] = False,
    ) -> Any:
        nursery = self._check_active()
        final_name = _callable_name(func, name)
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


# ------------------------------------------------------------------------------------------
# synchronization primitives
# ------------------------------------------------------------------------------------------


class Event(anyio.Event):
    __slots__ = ("_native",)

    def __new__(cls) -> Self:
        return object.__new__(cls)

    def __init__(self) -> None:
        self._native = _sync.Event()

    def set(self) -> None:
        self._native.set()

    def is_set(self) -> bool:
        return self._native.is_set()

    async def wait(self) -> None:
        await self._native.wait()

    def statistics(self) -> anyio.EventStatistics:
        return anyio.EventStatistics(tasks_waiting=self._native.waiters)


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
        owner = _UringTaskInfo(stats.owner) if stats.owner is not None else None
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


# ------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------


class _UringTaskInfo(anyio.TaskInfo):
    """anyio's view of a runtime :class:`~anyio_uring.Task`."""

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


# ------------------------------------------------------------------------------------------
# waiting for file descriptors
# ------------------------------------------------------------------------------------------


class _FdWait:
    """One task waiting (``POLL_ADD``) for one fd and direction; ``closed`` is set by
    ``notify_closing``."""

    __slots__ = ("closed", "op")

    def __init__(self, op: Any) -> None:
        self.op = op
        self.closed = False


#: Per runner: (fd, poll events) -> the one task allowed to wait for it.
_fd_waits: weakref.WeakKeyDictionary[Runner, dict[tuple[int, int], _FdWait]] = weakref.WeakKeyDictionary()


def _fileno(obj: FileDescriptorLike) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


async def _wait_fd(obj: FileDescriptorLike, events: int, what: str) -> None:
    fd = _fileno(obj)
    runner = current_runner()
    waits = _fd_waits.setdefault(runner, {})
    key = (fd, events)
    if key in waits:
        raise anyio.BusyResourceError(what)
    op = runner.ring.poll_add(fd, events)
    wait = waits[key] = _FdWait(op)
    try:
        result = await wait_operation(op)
    finally:
        del waits[key]
    if wait.closed:
        raise anyio.ClosedResourceError
    if result < 0:
        raise OSError(-result, os.strerror(-result))


def _notify_closing(obj: FileDescriptorLike) -> None:
    fd = _fileno(obj)
    waits = _fd_waits.get(current_runner())
    if not waits:
        return
    for events in (select.POLLIN, select.POLLOUT):
        wait = waits.get((fd, events))
        if wait is None or wait.closed:
            continue
        wait.closed = True
        op = wait.op
        callback = op.callback
        if op.ring.cancel(op) and callback is not None:
            # Withdrawn before the kernel saw it: the ring will not call back, so we do (the
            # operation is done with -ECANCELED); otherwise its final CQE wakes the waiter.
            callback(op)


# ------------------------------------------------------------------------------------------
# threads
# ------------------------------------------------------------------------------------------


def _runner_from_token(token: object) -> Runner | None:
    if token is None or isinstance(token, Runner):
        return token
    raise TypeError(f"not an anyio_uring event loop token: {token!r}")


def _is_finished(runner: Runner | None) -> bool:
    if runner is None:
        from ._threads import worker_local

        runner = worker_local.runner
    return runner is not None and (runner._closed or runner.entry._closed)


# ------------------------------------------------------------------------------------------
# process pools
# ------------------------------------------------------------------------------------------


async def _shutdown_process_pool(workers: set[anyio.abc.Process]) -> None:
    """System task: when the loop closes, kill the worker processes still alive and reap all."""
    try:
        await _sleep_forever()
    except Cancelled:
        for process in workers:
            if process.returncode is None:
                process.kill()
        with _NativeCancelScope(shield=True):
            for process in workers:
                await process.aclose()


def _no_sockets(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"sockets are not yet supported on the anyio 'uring' backend (anyio_uring {__version__}); "
        f"{what} will be available in a later release. Run networking code on the 'asyncio' or "
        "'trio' backend until then."
    )


# ------------------------------------------------------------------------------------------
# the test runner
# ------------------------------------------------------------------------------------------


class _Job:
    """One fixture or test call handed to the runner's host task."""

    __slots__ = ("awaitable", "done", "error", "value")

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable
        self.done = _sync.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class TestRunner(anyio.abc.TestRunner):
    """anyio's pytest-plugin runner, on one re-enterable :class:`~anyio_uring.Runner`.

    Every fixture and test of a module (whatever shares anyio's runner lease) runs in one
    long-lived *host* task -- a system task of the runner -- so that an async generator fixture
    can enter a task group or a cancel scope in one call and leave it in another.  Each call
    runs the loop (``Runner.run``) with a small main task that hands the job to the host task
    and waits for it; between calls the loop and the host task stay parked.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, **options: Any) -> None:
        self._settings = _RunSettings.parse(options)
        self._runner: Runner | None = None
        self._jobs: deque[_Job] = deque()
        self._job_waiting = _sync.ParkingLot()
        self._host: Task | None = None

    def __enter__(self) -> Self:
        self._runner = self._settings.new_runner()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with self._settings.debugging():
                runner.close()

    def is_running(self) -> bool:
        return self._runner is not None and self._runner._running

    async def _host_main(self) -> None:
        while True:
            while not self._jobs:
                await self._job_waiting.park()
            job = self._jobs.popleft()
            try:
                job.value = await job.awaitable
            except BaseException as exc:
                job.error = exc
            finally:
                job.done.set()
                del job

    async def _submit(self, func: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: Any) -> T:
        if self._host is None or self._host.outcome is not None:
            self._host = current_runner().spawn_system_task(self._host_main, name="anyio_uring test runner")
        job = _Job(func(*args, **kwargs))
        self._jobs.append(job)
        self._job_waiting.unpark()
        await job.done.wait()
        if job.error is not None:
            try:
                raise job.error
            finally:
                job = None  # type: ignore[assignment]
        value: T = job.value
        return value

    def _call(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        runner = self._runner
        if runner is None:
            raise RuntimeError("the anyio_uring test runner is not open (use it as a context manager)")
        with self._settings.debugging():
            result: T = runner.run(self._submit, func, args, kwargs, name="anyio_uring test call")
        return result

    def run_asyncgen_fixture(
        self,
        fixture_func: Callable[..., AsyncGenerator[T_Retval, Any]],
        kwargs: dict[str, Any],
    ) -> Iterable[T_Retval]:
        asyncgen = fixture_func(**kwargs)
        value: T_Retval = self._call(asyncgen.asend, None)
        yield value
        try:
            self._call(asyncgen.asend, None)
        except StopAsyncIteration:
            pass
        else:
            self._call(asyncgen.aclose)
            raise RuntimeError("Async generator fixture did not stop")

    def run_fixture(
        self,
        fixture_func: Callable[..., Coroutine[Any, Any, T_Retval]],
        kwargs: dict[str, Any],
    ) -> T_Retval:
        return self._call(fixture_func, **kwargs)

    def run_test(self, test_func: Callable[..., Coroutine[Any, Any, Any]], kwargs: dict[str, Any]) -> None:
        self._call(test_func, **kwargs)


# ------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------


class UringBackend(anyio.abc.AsyncBackend):
    """The anyio backend ``"uring"`` (see the module docstring for ``backend_options``)."""

    # -- running --------------------------------------------------------------------------

    @classmethod
    def run(
        cls,
        func: Callable[[Unpack[PosArgsT]], Awaitable[T_Retval]],
        args: tuple[*PosArgsT],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> T_Retval:
        if kwargs:
            raise TypeError("the anyio backend 'uring' does not pass keyword arguments to the main function")
        settings = _RunSettings.parse(options)
        with settings.debugging():
            runner = settings.new_runner()
            return runner.run_and_close(_coroutine_function(func), *args, name=_callable_name(func))

    @classmethod
    def current_token(cls) -> object:
        return current_runner()

    @classmethod
    def current_time(cls) -> float:
        return current_runner().clock.current_time()

    @classmethod
    def cancelled_exception_class(cls) -> type[BaseException]:
        return Cancelled

    @classmethod
    async def checkpoint(cls) -> None:
        await _checkpoint()

    @classmethod
    async def checkpoint_if_cancelled(cls) -> None:
        await _checkpoint_if_cancelled()

    @classmethod
    async def cancel_shielded_checkpoint(cls) -> None:
        await _cancel_shielded_checkpoint()

    @classmethod
    async def sleep(cls, delay: float) -> None:
        await _sleep(delay)

    # -- cancellation and tasks -------------------------------------------------------------

    @classmethod
    def create_cancel_scope(cls, *, deadline: float = math.inf, shield: bool = False) -> anyio.CancelScope:
        return CancelScope(deadline=deadline, shield=shield)

    @classmethod
    def current_effective_deadline(cls) -> float:
        return _current_effective_deadline()

    @classmethod
    def create_task_group(cls) -> anyio.abc.TaskGroup:
        return TaskGroup()

    @classmethod
    def get_current_task(cls) -> anyio.TaskInfo:
        return _UringTaskInfo(current_task())

    @classmethod
    def get_running_tasks(cls) -> Sequence[anyio.TaskInfo]:
        return [_UringTaskInfo(task) for task in current_runner().tasks]

    @classmethod
    async def wait_all_tasks_blocked(cls) -> None:
        await current_runner().wait_all_tasks_blocked()

    # -- synchronization ---------------------------------------------------------------------

    @classmethod
    def create_event(cls) -> anyio.Event:
        return Event()

    @classmethod
    def create_lock(cls, *, fast_acquire: bool) -> anyio.Lock:
        return Lock(fast_acquire=fast_acquire)

    @classmethod
    def create_semaphore(
        cls, initial_value: int, *, max_value: int | None = None, fast_acquire: bool = False
    ) -> anyio.Semaphore:
        return Semaphore(initial_value, max_value=max_value, fast_acquire=fast_acquire)

    @classmethod
    def create_capacity_limiter(cls, total_tokens: float) -> anyio.CapacityLimiter:
        return CapacityLimiter(total_tokens)

    @classmethod
    def current_default_thread_limiter(cls) -> anyio.CapacityLimiter:
        runner = current_runner()
        limiter = _default_limiters.get(runner)
        if limiter is None:
            limiter = CapacityLimiter(native=_current_default_thread_limiter())
            _default_limiters[runner] = limiter
        return limiter

    # -- threads -----------------------------------------------------------------------------

    @classmethod
    async def run_sync_in_worker_thread(
        cls,
        func: Callable[[Unpack[PosArgsT]], T_Retval],
        args: tuple[*PosArgsT],
        abandon_on_cancel: bool = False,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> T_Retval:
        runner = current_runner()

        def in_worker() -> T_Retval:
            with claim_worker_thread(UringBackend, runner):
                return func(*args)

        native: Any
        if limiter is None:
            native = _current_default_thread_limiter()
        elif isinstance(limiter, CapacityLimiter):
            native = limiter._native
        else:  # another anyio limiter (e.g. created before the loop): it has the same methods
            native = limiter
        return await to_thread_run_sync(in_worker, abandon_on_cancel=abandon_on_cancel, limiter=native)

    @classmethod
    def check_cancelled(cls) -> None:
        from_thread_check_cancelled()

    @classmethod
    def run_async_from_thread(
        cls,
        func: Callable[[Unpack[PosArgsT]], Coroutine[Any, Any, T_co]],
        args: tuple[*PosArgsT],
        token: object,
    ) -> T_co:
        runner = _runner_from_token(token)
        if _is_finished(runner):
            raise anyio.RunFinishedError
        try:
            return from_thread_run(func, *args, runner=runner)
        except RuntimeError:
            if _is_finished(runner):
                raise anyio.RunFinishedError from None
            raise

    @classmethod
    def run_sync_from_thread(
        cls,
        func: Callable[[Unpack[PosArgsT]], T_Retval],
        args: tuple[*PosArgsT],
        token: object,
    ) -> T_Retval:
        runner = _runner_from_token(token)
        if _is_finished(runner):
            raise anyio.RunFinishedError
        context = copy_context()  # the caller's context variables, as for run_async_from_thread
        try:
            result: T_Retval = from_thread_run_sync(context.run, func, *args, runner=runner)
            return result
        except RuntimeError:
            if _is_finished(runner):
                raise anyio.RunFinishedError from None
            raise

    @classmethod
    def run_sync_soon(
        cls,
        func: Callable[[Unpack[PosArgsT]], object],
        args: tuple[*PosArgsT],
        token: object,
    ) -> None:
        runner = _runner_from_token(token)
        if runner is None:
            raise TypeError("run_sync_soon needs the event loop token")
        try:
            runner.entry.run_sync_soon(copy_context().run, func, *args)
        except RuntimeError:
            if _is_finished(runner):
                raise anyio.RunFinishedError from None
            raise

    # -- subprocesses --------------------------------------------------------------------------

    @classmethod
    async def open_process(
        cls,
        command: StrOrBytesPath | Sequence[StrOrBytesPath],
        *,
        stdin: int | IO[Any] | None,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        cwd: StrOrBytesPath | None = None,
        env: Mapping[str, str] | None = None,
        startupinfo: Any = None,
        creationflags: int = 0,
        start_new_session: bool = False,
        pass_fds: Sequence[int] = (),
        user: str | int | None = None,
        group: str | int | None = None,
        extra_groups: Iterable[str | int] | None = None,
        umask: int = -1,
        **kwargs: Any,
    ) -> anyio.abc.Process:
        # startupinfo and creationflags are Windows-only; anyio passes their neutral defaults.
        if kwargs:
            raise TypeError(f"open_process() got unexpected keyword argument(s): {', '.join(kwargs)}")
        from ._process import open_process

        process: anyio.abc.Process = await open_process(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=start_new_session,
            pass_fds=pass_fds,
            user=user,
            group=group,
            extra_groups=extra_groups,
            umask=umask,
        )
        return process

    @classmethod
    def setup_process_pool_exit_at_shutdown(cls, workers: set[anyio.abc.Process]) -> None:
        current_runner().spawn_system_task(
            _shutdown_process_pool, workers, name="anyio_uring process pool shutdown"
        )

    # -- name resolution -----------------------------------------------------------------------

    @classmethod
    async def getaddrinfo(
        cls,
        host: bytes | str | None,
        port: str | int | None,
        *,
        family: int | AddressFamily = 0,
        type: int | SocketKind = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Sequence[
        tuple[
            AddressFamily,
            SocketKind,
            int,
            str,
            tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
        ]
    ]:
        from ._dns import getaddrinfo

        result: Sequence[Any] = await getaddrinfo(host, port, family, type, proto, flags)
        return result

    @classmethod
    async def getnameinfo(cls, sockaddr: IPSockAddrType, flags: int = 0) -> tuple[str, str]:
        from ._dns import getnameinfo

        result: tuple[str, str] = await getnameinfo(sockaddr, flags)
        return result

    # -- file descriptors --------------------------------------------------------------------

    @classmethod
    async def wait_readable(cls, obj: FileDescriptorLike) -> None:
        await _wait_fd(obj, select.POLLIN, "reading from")

    @classmethod
    async def wait_writable(cls, obj: FileDescriptorLike) -> None:
        await _wait_fd(obj, select.POLLOUT, "writing to")

    @classmethod
    def notify_closing(cls, obj: FileDescriptorLike) -> None:
        _notify_closing(obj)

    # -- signals -----------------------------------------------------------------------------

    @classmethod
    def open_signal_receiver(
        cls, *signals: signal.Signals
    ) -> AbstractContextManager[AsyncIterator[signal.Signals]]:
        from ._signals import open_signal_receiver

        return open_signal_receiver(*signals)

    # -- testing -----------------------------------------------------------------------------

    @classmethod
    def create_test_runner(cls, options: dict[str, Any]) -> anyio.abc.TestRunner:
        return TestRunner(**options)

    # -- sockets (a later release) -----------------------------------------------------------

    @classmethod
    async def connect_tcp(
        cls, host: str, port: int, local_address: IPSockAddrType | None = None
    ) -> anyio.abc.SocketStream:
        raise _no_sockets("connect_tcp()")

    @classmethod
    async def connect_unix(cls, path: str | bytes, kind: Any = None) -> anyio.abc.UNIXSocketStream:
        raise _no_sockets("connect_unix()")

    @classmethod
    def create_tcp_listener(cls, sock: Socket) -> anyio.abc.SocketListener:
        raise _no_sockets("TCP listeners")

    @classmethod
    def create_unix_listener(cls, sock: Socket) -> anyio.abc.SocketListener:
        raise _no_sockets("UNIX listeners")

    @classmethod
    async def create_udp_socket(
        cls,
        family: AddressFamily,
        local_address: IPSockAddrType | None,
        remote_address: IPSockAddrType | None,
        reuse_port: bool,
    ) -> anyio.abc.UDPSocket | anyio.abc.ConnectedUDPSocket:
        raise _no_sockets("UDP sockets")

    @classmethod
    async def create_unix_datagram_socket(  # type: ignore[override]
        cls, raw_socket: Socket, remote_path: str | bytes | None
    ) -> anyio.abc.UNIXDatagramSocket | anyio.abc.ConnectedUNIXDatagramSocket:
        raise _no_sockets("UNIX datagram sockets")

    @classmethod
    async def wrap_listener_socket(cls, sock: Socket) -> anyio.abc.SocketListener:
        raise _no_sockets("wrap_listener_socket()")

    @classmethod
    async def wrap_stream_socket(cls, sock: Socket) -> anyio.abc.SocketStream:
        raise _no_sockets("wrap_stream_socket()")

    @classmethod
    async def wrap_unix_stream_socket(cls, sock: Socket) -> anyio.abc.UNIXSocketStream:
        raise _no_sockets("wrap_unix_stream_socket()")

    @classmethod
    async def wrap_udp_socket(cls, sock: Socket) -> anyio.abc.UDPSocket:
        raise _no_sockets("wrap_udp_socket()")

    @classmethod
    async def wrap_connected_udp_socket(cls, sock: Socket) -> anyio.abc.ConnectedUDPSocket:
        raise _no_sockets("wrap_connected_udp_socket()")

    @classmethod
    async def wrap_unix_datagram_socket(cls, sock: Socket) -> anyio.abc.UNIXDatagramSocket:
        raise _no_sockets("wrap_unix_datagram_socket()")

    @classmethod
    async def wrap_connected_unix_datagram_socket(cls, sock: Socket) -> anyio.abc.ConnectedUNIXDatagramSocket:
        raise _no_sockets("wrap_connected_unix_datagram_socket()")


#: What anyio looks for in ``anyio._backends._<name>`` (see ``_anyio_uring_hook``).
backend_class = UringBackend
