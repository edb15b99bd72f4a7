"""anyio's pytest-plugin test runner on a re-enterable runtime Runner."""

from __future__ import annotations

from collections import deque
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from .._compat import compat_disabled
from .._core import Runner, Task, _sync, current_runner
from .._errors import IoUringUnavailableError
from ._options import RunSettings

if TYPE_CHECKING:
    from typing import Self


T = TypeVar("T")
T_Retval = TypeVar("T_Retval")


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
        self._settings = RunSettings.parse(options)
        self._runner: Runner | None = None
        self._jobs: deque[_Job] = deque()
        self._job_waiting = _sync.ParkingLot()
        self._host: Task | None = None

    def __enter__(self) -> Self:
        runner = self._settings.new_runner()
        if isinstance(runner, IoUringUnavailableError):
            raise runner  # the plugin asked the backend first (create_test_runner falls back)
        self._runner = runner
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
        with self._settings.debugging(), compat_disabled(not self._settings.compat):
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
