"""The anyio backend ``"uring"``: :class:`UringBackend`, the method table.

anyio drives every backend through the class methods of ``anyio.abc.AsyncBackend``; each method
here maps onto the runtime (``_core``: tasks, cancel scopes, sync primitives, threads; ``_fs``;
``_proc``: subprocesses, signals, DNS) through the adapter pieces in ``_anyio`` (anyio's classes
wrapping ours, option parsing, the test runner).  Neither holds scheduling, I/O or cancellation
logic of its own (DESIGN.md section 3).  This module's import path is public: the registration
hook (``_anyio_uring_hook``) looks ``UringBackend`` up here.

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
    ``ring_options``.  ``FEATURES`` in ``anyio_uring._ring._probe`` lists the names.
``install_signal_handlers``
    ``False`` leaves SIGINT handling alone (default ``True``: Ctrl+C is delivered to the main
    task as ``KeyboardInterrupt``).
``debug``
    ``True`` records where each coroutine was created, so "coroutine ... was never awaited"
    warnings name the line that forgot the ``await``.
``socket_receive``
    How socket streams receive: ``"auto"`` (default: ``"hybrid"`` where the kernel has
    provided-buffer rings, else ``"poll"``), ``"select"`` (kernel-picked buffers from the loop's
    pool: an idle connection pins no memory), ``"poll"`` (poll, then a non-blocking recv),
    ``"hybrid"`` (``"select"`` for a stream's small size classes, ``"poll"`` from 16 KiB on, and
    a multishot receive kept armed for a small-class TCP stream once it gets data on a busy
    loop, on rings with DEFER_TASKRUN), ``"owned"`` (a receive into the stream's own 64 KiB
    buffer) or ``"multishot"`` (``"hybrid"`` switching every TCP stream to its multishot
    receive at its first data; plain ``"hybrid"`` without DEFER_TASKRUN).  See
    ``anyio_uring._net._pool``.
``receive_pool_limit``
    The most bytes the loop's receive-buffer pool may grow to (default 64 MiB); receives the
    full pool cannot serve poll instead (the data waits in the socket).
"""

from __future__ import annotations

import os
import select
import signal
import socket
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager
from contextvars import copy_context
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.abc
from anyio._core._eventloop import claim_worker_thread  # private, but the pinned range has it

from ._core import cancel_shielded_checkpoint as _cancel_shielded_checkpoint
from ._core import checkpoint as _checkpoint
from ._core import checkpoint_if_cancelled as _checkpoint_if_cancelled
from ._core import current_runner, current_task
from ._core import sleep as _sleep
from ._core._cancel import current_effective_deadline as _current_effective_deadline
from ._core._run import Cancelled
from ._core._threads import (
    current_default_thread_limiter as _current_default_thread_limiter,
)
from ._core._threads import (
    from_thread_check_cancelled,
    from_thread_run,
    from_thread_run_sync,
    to_thread_run_sync,
)

if TYPE_CHECKING:
    from socket import AddressFamily, SocketKind
    from socket import socket as Socket
    from typing import TypeVarTuple, Unpack

    from _typeshed import FileDescriptorLike
    from anyio.abc import IPSockAddrType

    PosArgsT = TypeVarTuple("PosArgsT")

from . import _net
from ._anyio._fds import notify_closing, wait_fd
from ._anyio._options import RunSettings, callable_name, coroutine_function
from ._anyio._processes import shutdown_process_pool
from ._anyio._sync import CapacityLimiter, Event, Lock, Semaphore, default_thread_limiter
from ._anyio._tasks import CancelScope, TaskGroup, UringTaskInfo
from ._anyio._testing import TestRunner
from ._anyio._threads import is_finished, runner_from_token
from ._compat import compat_disabled
from ._errors import IoUringUnavailableError
from ._fallback import blocked, run_on_trio, trio_test_runner

__all__ = ["BACKEND_NAME", "CancelScope", "TaskGroup", "UringBackend", "backend_class"]

T = TypeVar("T")
T_Retval = TypeVar("T_Retval")
T_co = TypeVar("T_co", covariant=True)

BACKEND_NAME = "uring"

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


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
        settings = RunSettings.parse(options)
        with settings.debugging():
            runner = settings.new_runner()
            if isinstance(runner, IoUringUnavailableError):
                if not settings.falls_back(runner):
                    raise runner
                return run_on_trio(func, args, runner, settings.clock)
            with compat_disabled(not settings.compat):
                return runner.run_and_close(coroutine_function(func), *args, name=callable_name(func))

    @classmethod
    def current_token(cls) -> object:
        return current_runner()

    @classmethod
    def current_time(cls) -> float:
        return current_runner().clock.current_time()

    @classmethod
    def cancelled_exception_class(cls) -> type[BaseException]:
        return Cancelled

    # The runtime's own checkpoints, not wrappers around them: ``anyio.lowlevel.checkpoint()``
    # then costs one generator frame here, not a coroutine frame more.  (They are awaitable
    # generators, not coroutine objects; anyio only ever awaits them.)
    checkpoint = staticmethod(cast("Callable[[], Coroutine[Any, Any, None]]", _checkpoint))
    checkpoint_if_cancelled = staticmethod(_checkpoint_if_cancelled)
    cancel_shielded_checkpoint = staticmethod(
        cast("Callable[[], Coroutine[Any, Any, None]]", _cancel_shielded_checkpoint)
    )

    @classmethod
    async def sleep(cls, delay: float) -> None:
        await _sleep(delay)

    # -- cancellation and tasks -------------------------------------------------------------

    #: The adapter's scope class itself: ``anyio.CancelScope()`` costs no wrapper call here.
    create_cancel_scope = staticmethod(CancelScope)

    @classmethod
    def current_effective_deadline(cls) -> float:
        return _current_effective_deadline()

    @classmethod
    def create_task_group(cls) -> anyio.abc.TaskGroup:
        return TaskGroup()

    @classmethod
    def get_current_task(cls) -> anyio.TaskInfo:
        return UringTaskInfo(current_task())

    @classmethod
    def get_running_tasks(cls) -> Sequence[anyio.TaskInfo]:
        return [UringTaskInfo(task) for task in current_runner().tasks]

    @classmethod
    async def wait_all_tasks_blocked(cls) -> None:
        await current_runner().wait_all_tasks_blocked()

    # -- synchronization ---------------------------------------------------------------------

    #: The adapter's class itself (no wrapper call per ``anyio.Event()``).
    create_event = staticmethod(Event)

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
        return default_thread_limiter()

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
        runner = runner_from_token(token)
        if is_finished(runner):
            raise anyio.RunFinishedError
        try:
            return from_thread_run(func, *args, runner=runner)
        except RuntimeError:
            if is_finished(runner):
                raise anyio.RunFinishedError from None
            raise

    @classmethod
    def run_sync_from_thread(
        cls,
        func: Callable[[Unpack[PosArgsT]], T_Retval],
        args: tuple[*PosArgsT],
        token: object,
    ) -> T_Retval:
        runner = runner_from_token(token)
        if is_finished(runner):
            raise anyio.RunFinishedError
        context = copy_context()  # the caller's context variables, as for run_async_from_thread
        try:
            result: T_Retval = from_thread_run_sync(context.run, func, *args, runner=runner)
            return result
        except RuntimeError:
            if is_finished(runner):
                raise anyio.RunFinishedError from None
            raise

    @classmethod
    def run_sync_soon(
        cls,
        func: Callable[[Unpack[PosArgsT]], object],
        args: tuple[*PosArgsT],
        token: object,
    ) -> None:
        runner = runner_from_token(token)
        if runner is None:
            raise TypeError("run_sync_soon needs the event loop token")
        try:
            runner.entry.run_sync_soon(copy_context().run, func, *args)
        except RuntimeError:
            if is_finished(runner):
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
        from ._proc._process import open_process

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
            shutdown_process_pool, workers, name="anyio_uring process pool shutdown"
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
        from ._proc._dns import getaddrinfo

        result: Sequence[Any] = await getaddrinfo(host, port, family, type, proto, flags)
        return result

    @classmethod
    async def getnameinfo(cls, sockaddr: IPSockAddrType, flags: int = 0) -> tuple[str, str]:
        from ._proc._dns import getnameinfo

        result: tuple[str, str] = await getnameinfo(sockaddr, flags)
        return result

    # -- file descriptors --------------------------------------------------------------------

    @classmethod
    async def wait_readable(cls, obj: FileDescriptorLike) -> None:
        await wait_fd(obj, select.POLLIN, "reading from")

    @classmethod
    async def wait_writable(cls, obj: FileDescriptorLike) -> None:
        await wait_fd(obj, select.POLLOUT, "writing to")

    @classmethod
    def notify_closing(cls, obj: FileDescriptorLike) -> None:
        notify_closing(obj)

    # -- signals -----------------------------------------------------------------------------

    @classmethod
    def open_signal_receiver(
        cls, *signals: signal.Signals
    ) -> AbstractContextManager[AsyncIterator[signal.Signals]]:
        from ._proc._signals import open_signal_receiver

        return open_signal_receiver(*signals)

    # -- testing -----------------------------------------------------------------------------

    @classmethod
    def create_test_runner(cls, options: dict[str, Any]) -> anyio.abc.TestRunner:
        settings = RunSettings.parse(options)
        exc = blocked()
        if exc is not None and settings.falls_back(exc):
            return trio_test_runner(exc, settings.clock)
        return TestRunner(**options)

    # -- sockets ------------------------------------------------------------------------------

    @classmethod
    async def connect_tcp(
        cls, host: str, port: int, local_address: IPSockAddrType | None = None
    ) -> anyio.abc.SocketStream:
        return await _net.connect_tcp(host, port, local_address)

    @classmethod
    async def connect_unix(cls, path: str | bytes, kind: Any = None) -> anyio.abc.UNIXSocketStream:
        return await _net.connect_unix(path, socket.SOCK_STREAM if kind is None else kind)

    @classmethod
    def create_tcp_listener(cls, sock: Socket) -> anyio.abc.SocketListener:
        return _net.listener(sock)

    @classmethod
    def create_unix_listener(cls, sock: Socket) -> anyio.abc.SocketListener:
        return _net.listener(sock)

    @classmethod
    async def create_udp_socket(
        cls,
        family: AddressFamily,
        local_address: IPSockAddrType | None,
        remote_address: IPSockAddrType | None,
        reuse_port: bool,
    ) -> anyio.abc.UDPSocket | anyio.abc.ConnectedUDPSocket:
        return await _net.create_udp_socket(family, local_address, remote_address, reuse_port)

    @classmethod
    async def create_unix_datagram_socket(  # type: ignore[override]
        cls, raw_socket: Socket, remote_path: str | bytes | None
    ) -> anyio.abc.UNIXDatagramSocket | anyio.abc.ConnectedUNIXDatagramSocket:
        return await _net.create_unix_datagram_socket(raw_socket, remote_path)

    @classmethod
    async def wrap_listener_socket(cls, sock: Socket) -> anyio.abc.SocketListener:
        return _net.listener(sock)

    @classmethod
    async def wrap_stream_socket(cls, sock: Socket) -> anyio.abc.SocketStream:
        return _net.SocketStream(sock)

    @classmethod
    async def wrap_unix_stream_socket(cls, sock: Socket) -> anyio.abc.UNIXSocketStream:
        return _net.UNIXSocketStream(sock)

    @classmethod
    async def wrap_udp_socket(cls, sock: Socket) -> anyio.abc.UDPSocket:
        return _net.UDPSocket(sock)

    @classmethod
    async def wrap_connected_udp_socket(cls, sock: Socket) -> anyio.abc.ConnectedUDPSocket:
        return _net.ConnectedUDPSocket(sock)

    @classmethod
    async def wrap_unix_datagram_socket(cls, sock: Socket) -> anyio.abc.UNIXDatagramSocket:
        return _net.UNIXDatagramSocket(sock)

    @classmethod
    async def wrap_connected_unix_datagram_socket(cls, sock: Socket) -> anyio.abc.ConnectedUNIXDatagramSocket:
        return _net.ConnectedUNIXDatagramSocket(sock)


#: What anyio looks for in ``anyio._backends._<name>`` (see ``_anyio_uring_hook``).
backend_class = UringBackend
