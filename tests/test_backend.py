"""The anyio backend "uring" (backend.py): the adapter, through anyio's public API.

Most async tests run through anyio's own pytest plugin with ``anyio_backend = "uring"`` -- which
exercises the backend's test runner too (one host task per module: fixtures and tests share it).
The last section covers fixes to the runtime found by anyio's conformance suite, at the runtime's
own API where the behaviour is the runtime's.
"""

from __future__ import annotations

import contextvars
import gc
import math
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import sniffio
from anyio import from_thread, to_thread

import anyio_uring as au
from anyio_uring._core._sync import Event
from anyio_uring._core._threads import from_thread_run, to_thread_run_sync
from anyio_uring.backend import UringBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "uring"


def run(fn: Any, *args: Any, **options: Any) -> Any:
    return anyio.run(fn, *args, backend="uring", backend_options=options or None)


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------


def test_run_returns_the_result_and_names_the_main_task() -> None:
    async def main(x: int) -> tuple[int, str | None, str]:
        return x * 2, anyio.get_current_task().name, sniffio.current_async_library()

    value, name, library = run(main, 21)
    assert value == 42
    assert name == f"{__name__}.test_run_returns_the_result_and_names_the_main_task.<locals>.main"
    assert library == "uring"
    assert sniffio.thread_local.name is None  # restored


def test_run_accepts_a_function_returning_a_non_coroutine_awaitable() -> None:
    class Awaitable:
        def __await__(self) -> Any:
            yield from anyio.sleep(0).__await__()
            return "done"

    assert run(Awaitable) == "done"


def test_backend_is_resolved_by_anyio() -> None:
    async def main() -> type[anyio.abc.AsyncBackend]:
        from anyio._core._eventloop import get_async_backend

        return get_async_backend()

    assert run(main) is UringBackend


def test_mock_clock_option_autojumps() -> None:
    async def main() -> float:
        await anyio.sleep(1000)
        return anyio.current_time()

    assert run(main, clock=au.MockClock(autojump_threshold=0)) == 1000


def test_disable_option_masks_features() -> None:
    async def main() -> frozenset[str]:
        runner = anyio.lowlevel.current_token().native_token
        assert isinstance(runner, au.Runner)
        return runner.ring.support.disabled

    disabled = run(main, disable="multishot_poll, ext_arg")
    assert {"multishot_poll", "ext_arg"} <= disabled
    assert {"multishot_poll"} <= run(main, disable=["multishot_poll"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "blue"}, "unknown backend option(s) 'colour'"),
        ({"clock": object()}, "must be an anyio_uring clock"),
        ({"ring_options": {"entries": 8}}, "must be an anyio_uring.RingOptions"),
        ({"debug": "yes"}, "'debug' must be a bool"),
        ({"disable": ["no_such_feature"]}, "unknown io_uring feature name"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    async def main() -> None:
        pass

    with pytest.raises((TypeError, ValueError)) as exc_info:
        run(main, **options)
    assert message in str(exc_info.value)


def test_debug_option_tracks_coroutine_origins() -> None:
    async def main() -> int:
        return sys.get_coroutine_origin_tracking_depth()

    assert run(main, debug=True) > 0
    assert sys.get_coroutine_origin_tracking_depth() == 0


# ------------------------------------------------------------------------------------------
# cancellation and task groups
# ------------------------------------------------------------------------------------------


async def test_cancel_scope_is_the_backends() -> None:
    with anyio.CancelScope(deadline=math.inf) as scope:
        assert type(scope).__module__ == "anyio_uring._anyio._tasks"
        scope.shield = True
        assert scope.shield
        scope.deadline = anyio.current_time() + 0.01
        await anyio.sleep(1)
    assert scope.cancel_called
    assert scope.cancelled_caught
    with pytest.raises(ValueError, match="deadline must not be NaN"):
        anyio.CancelScope(deadline=math.nan)


async def test_cancelled_names_reason_and_canceller() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel("because")
        with pytest.raises(anyio.get_cancelled_exc_class()) as exc_info:
            await anyio.lowlevel.checkpoint()
    message = str(exc_info.value)
    assert "because" in message
    name = anyio.get_current_task().name
    assert name is not None
    assert name in message


async def test_fail_after_cancellation_says_deadline() -> None:
    messages: list[str] = []
    with pytest.raises(TimeoutError):
        await _sleep_recording_cancellation(messages)
    assert len(messages) == 1
    assert "deadline" in messages[0]


async def _sleep_recording_cancellation(messages: list[str]) -> None:
    with anyio.fail_after(0.01):
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            messages.append(str(exc))
            raise


async def test_task_group_start_and_names() -> None:
    async def child(*, task_status: anyio.abc.TaskStatus[str | None]) -> None:
        task_status.started(anyio.get_current_task().name)
        await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        assert await tg.start(child, name="") == ""
        assert await tg.start(child, name="x") == "x"
        assert await tg.start(child) == f"{__name__}.test_task_group_start_and_names.<locals>.child"
        handle = await tg.start(child, name="h", return_handle=True)
        assert handle.start_value == "h"


async def test_start_with_started_called_before_the_coroutine_runs() -> None:
    def early(*, task_status: anyio.abc.TaskStatus[int]) -> Any:
        task_status.started(7)
        return anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        assert await tg.start(early) == 7


async def test_outer_cancellation_leaves_the_group_as_bare_cancelled() -> None:
    caught: list[BaseException] = []
    with anyio.CancelScope() as outer:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep_forever)
                tg.start_soon(anyio.sleep_forever)
                await anyio.wait_all_tasks_blocked()
                outer.cancel()
        except BaseException as exc:
            caught.append(exc)
            raise
    assert outer.cancelled_caught
    assert [type(exc) for exc in caught] == [anyio.get_cancelled_exc_class()]


async def test_task_group_leaves_no_reference_to_its_errors() -> None:
    class Done(Exception):
        pass

    exc = None
    try:
        async with anyio.create_task_group():
            raise Done
    except ExceptionGroup as group:
        exc = group.exceptions[0]
    assert isinstance(exc, Done)
    assert gc.get_referrers(exc) == []


async def test_finished_task_group_does_not_keep_its_host_tasks_error() -> None:
    class Done(Exception):
        pass

    tg = anyio.create_task_group()  # held past its block, as callers may

    async def host() -> None:
        async with tg:
            raise Done

    with pytest.RaisesGroup(pytest.RaisesGroup(Done)) as exc_info:
        async with anyio.create_task_group() as outer:
            outer.start_soon(host)
    exc = exc_info.value.exceptions[0].exceptions[0]
    del exc_info
    assert gc.get_referrers(exc) == []


async def test_cancel_scope_keeps_the_context_of_a_filtered_group() -> None:
    body = RuntimeError("body")
    with pytest.RaisesGroup(RuntimeError) as exc_info, anyio.CancelScope() as scope:
        scope.cancel()
        try:
            raise body
        except RuntimeError:
            try:
                await anyio.lowlevel.checkpoint()
            except BaseException as cancelled:
                original = BaseExceptionGroup("", [body, cancelled])
                raise original from None
    assert exc_info.value.__context__ is original.__context__


async def test_task_info() -> None:
    host = anyio.get_current_task()
    seen: list[anyio.TaskInfo] = []

    async def child() -> None:
        seen.append(anyio.get_current_task())
        with anyio.CancelScope() as scope:
            scope.cancel()
            seen.append(anyio.get_current_task())
            assert anyio.get_current_task().has_pending_cancellation()

    async with anyio.create_task_group() as tg:
        tg.start_soon(child, name="kid")
    assert seen[0].parent_id == host.id
    assert seen[0].name == "kid"
    assert seen[0] == seen[1]
    assert host in anyio.get_running_tasks()
    assert not host.has_pending_cancellation()


# ------------------------------------------------------------------------------------------
# synchronization
# ------------------------------------------------------------------------------------------


async def test_sync_primitives_are_the_backends() -> None:
    lock = anyio.Lock()
    async with lock:
        assert lock.locked()
        with pytest.raises(RuntimeError, match="Attempted to acquire an already held Lock"):
            lock.acquire_nowait()
        stats = lock.statistics()
        assert stats.owner == anyio.get_current_task()
    semaphore = anyio.Semaphore(1, max_value=1, fast_acquire=True)
    async with semaphore:
        with pytest.raises(anyio.WouldBlock):
            semaphore.acquire_nowait()
    event = anyio.Event()
    assert event.statistics().tasks_waiting == 0
    limiter = anyio.CapacityLimiter(0)
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait()
    limiter.total_tokens = 1
    async with limiter:
        assert limiter.statistics().borrowed_tokens == 1
    assert anyio.to_thread.current_default_thread_limiter() is to_thread.current_default_thread_limiter()


# ------------------------------------------------------------------------------------------
# threads
# ------------------------------------------------------------------------------------------


async def test_worker_threads_round_trip() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)

    def worker() -> tuple[str | None, int, int]:
        var.set(5)
        in_loop = from_thread.run_sync(var.get)
        async_value = from_thread.run(anyio.sleep, 0)
        assert async_value is None
        return _library_or_none(), in_loop, var.get()

    assert await to_thread.run_sync(worker) == (None, 5, 5)


def _library_or_none() -> str | None:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


async def test_worker_payload_is_released_when_the_result_arrives() -> None:
    class Payload:
        pass

    payload = Payload()
    await to_thread.run_sync(lambda p: None, payload)
    assert gc.get_referrers(payload) == []


async def test_from_thread_run_inherits_the_waiting_tasks_cancel_scope() -> None:
    async def time_bomb() -> None:
        scope.cancel()
        with anyio.fail_after(1):
            await anyio.sleep(3)

    with anyio.CancelScope() as scope:
        await to_thread.run_sync(from_thread.run, time_bomb)
    assert scope.cancelled_caught


def test_tokens_of_a_finished_loop() -> None:
    async def main() -> anyio.lowlevel.EventLoopToken:
        return anyio.lowlevel.current_token()

    token = run(main)
    with pytest.raises(anyio.RunFinishedError):
        from_thread.run(anyio.sleep, 0, token=token)
    with pytest.raises(anyio.RunFinishedError):
        from_thread.run_sync(print, token=token)


async def test_check_cancelled_in_a_worker() -> None:
    started = threading.Event()
    release = threading.Event()

    def worker() -> None:
        started.set()
        release.wait(5)
        from_thread.check_cancelled()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await to_thread.run_sync(started.wait, 5)
                scope.cancel()
                release.set()

            tg.start_soon(cancel_soon)
            await to_thread.run_sync(worker)
    assert scope.cancelled_caught


# ------------------------------------------------------------------------------------------
# file descriptors
# ------------------------------------------------------------------------------------------


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


async def test_wait_readable_and_writable(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    await anyio.wait_writable(a)
    with anyio.move_on_after(0.05) as scope:
        await anyio.wait_readable(a)
    assert scope.cancelled_caught
    b.send(b"x")
    with anyio.fail_after(5):
        await anyio.wait_readable(a)


async def test_wait_readable_twice_is_busy(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = sockpair

    async def wait() -> None:
        await anyio.wait_readable(a)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await anyio.wait_readable(a)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("withdrawn", [True, False], ids=["before-submit", "in-kernel"])
async def test_notify_closing_wakes_the_waiter(
    sockpair: tuple[socket.socket, socket.socket], withdrawn: bool
) -> None:
    a, _ = sockpair
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await anyio.wait_readable(a)
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        if withdrawn:
            await anyio.lowlevel.cancel_shielded_checkpoint()  # parked, SQE not yet submitted
        else:
            await anyio.wait_all_tasks_blocked()
        anyio.notify_closing(a)
    assert len(errors) == 1


# ------------------------------------------------------------------------------------------
# subprocesses, signals, name resolution, sockets
# ------------------------------------------------------------------------------------------


async def test_run_process() -> None:
    result = await anyio.run_process([sys.executable, "-c", "print('hi')"])
    assert result.stdout == b"hi\n"


async def test_to_process_pool_is_reaped_at_shutdown() -> None:
    assert await anyio.to_process.run_sync(math.factorial, 5) == 120


async def test_signal_receiver_yields_signals() -> None:
    with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
        signal.raise_signal(signal.SIGUSR1)
        async for signum in signals:
            assert signum is signal.SIGUSR1
            break


async def test_getaddrinfo_and_getnameinfo() -> None:
    infos = await anyio.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert infos[0][4] == ("127.0.0.1", 80)
    host, port = await anyio.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    assert (host, port) == ("127.0.0.1", "80")


async def test_connect_tcp_refused_is_an_oserror() -> None:
    """anyio's happy eyeballs needs a failed connect to be an OSError (here: refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(OSError, match="All connection attempts failed") as info:
            await anyio.connect_tcp("127.0.0.1", port)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_udp_round_trip() -> None:
    a = await anyio.create_udp_socket(local_host="127.0.0.1")
    port = a.extra(anyio.abc.SocketAttribute.local_port)
    async with a, await anyio.create_connected_udp_socket("127.0.0.1", port, local_host="127.0.0.1") as b:
        await b.send(b"ping")
        data, addr = await a.receive()
        assert data == b"ping"
        await a.sendto(b"pong", *addr)
        assert await b.receive() == b"pong"


# ------------------------------------------------------------------------------------------
# the test runner
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def module_group() -> AsyncIterator[tuple[anyio.abc.TaskGroup, list[int]]]:
    """A task group entered by a module-scoped async generator fixture and left at its
    teardown: the background task keeps running between the tests of this module."""
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(len(ticks))
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        yield tg, ticks
        tg.cancel_scope.cancel()


async def test_fixture_task_group_spans_tests_1(module_group: tuple[anyio.abc.TaskGroup, list[int]]) -> None:
    await anyio.sleep(0.01)
    assert module_group[1]


async def test_fixture_task_group_spans_tests_2(module_group: tuple[anyio.abc.TaskGroup, list[int]]) -> None:
    before = len(module_group[1])
    await anyio.sleep(0.01)
    assert len(module_group[1]) > before


def test_test_runner_reports_errors_and_options() -> None:
    with UringBackend.create_test_runner({"clock": au.MockClock(autojump_threshold=0)}) as runner:
        assert not runner.is_running()

        async def slow() -> float:
            assert runner.is_running()
            await anyio.sleep(3600)
            return anyio.current_time()

        async def boom(kind: str) -> None:
            raise ValueError(kind)

        value = 0.0

        async def record() -> None:
            nonlocal value
            value = await slow()

        runner.run_test(record, {})
        assert value == 3600
        with pytest.raises(ValueError, match="x"):
            runner.run_fixture(boom, {"kind": "x"})


def test_sniffio_is_restored_after_the_test_runner() -> None:
    assert sniffio.thread_local.name is None


# ------------------------------------------------------------------------------------------
# runtime fixes found by the conformance suite (at the runtime's own API)
# ------------------------------------------------------------------------------------------


def test_runtime_capacity_limiter_accepts_zero_tokens() -> None:
    from anyio_uring._core._sync import CapacityLimiter

    assert CapacityLimiter(0).total_tokens == 0
    with pytest.raises(ValueError, match="total_tokens must be >= 0"):
        CapacityLimiter(-1)


def test_runtime_worker_threads_are_not_in_async_context() -> None:
    async def main() -> str | None:
        sniffio.current_async_library_cvar.set("something")
        return await to_thread_run_sync(_library_or_none)

    assert au.run(main) is None


def test_runtime_from_thread_run_runs_under_the_waiting_tasks_scopes() -> None:
    scope = au.CancelScope()

    async def time_bomb() -> None:
        scope.cancel()
        with au.fail_after(1):
            await au.sleep(3)

    async def main() -> None:
        with scope:
            await to_thread_run_sync(from_thread_run, time_bomb)

    au.run(main)
    assert scope.cancelled_caught


def test_runtime_start_with_an_empty_name() -> None:
    async def child(*, task_status: au.TaskStatus[str]) -> None:
        task_status.started(au.current_task().name)

    names: list[str] = []

    async def main() -> None:
        async with au.open_nursery() as nursery:
            names.append(await nursery.start(child, name=""))

    au.run(main)
    assert names == [""]


def test_runtime_cancelled_message() -> None:
    async def main() -> str:
        with au.CancelScope() as scope:
            scope.cancel("why")
            try:
                await au.checkpoint()
            except au.Cancelled as exc:
                return str(exc)
        return "not cancelled"

    message = au.run(main)
    assert message.startswith("cancelled (why) by <Task ")


def test_runtime_from_thread_run_from_an_abandonable_thread_runs_under_the_system_scope() -> None:
    scope = au.CancelScope()
    finished: list[bool] = []
    host_left = Event()

    async def outlives_its_host() -> None:
        scope.cancel()  # the host abandons its thread; fn must not be cancelled with it
        await au.checkpoint()
        with au.fail_after(5):
            await host_left.wait()
        finished.append(True)

    async def main() -> None:
        with scope:
            await to_thread_run_sync(from_thread_run, outlives_its_host, abandon_on_cancel=True)
        host_left.set()
        with au.fail_after(5):
            while not finished:
                await au.sleep(0.001)

    au.run(main)
    assert scope.cancelled_caught
    assert finished == [True]


def test_runtime_system_task_does_not_keep_its_spawner_alive() -> None:
    """The test runner's host task is spawned by the first call's main task: an error that call
    raised must not stay referenced for the life of the runner."""

    class Boom(Exception):
        pass

    async def fail() -> None:
        raise Boom

    async def nothing() -> None:
        pass

    with UringBackend.create_test_runner({}) as runner:
        with pytest.raises(Boom):
            runner.run_test(fail, {})
        runner.run_test(nothing, {})
        gc.collect()
        assert not [obj for obj in gc.get_objects() if type(obj) is Boom]
