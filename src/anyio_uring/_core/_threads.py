"""Worker threads (``to_thread_run_sync``) and entry from other threads (``from_thread_*``).

A :class:`WorkerPool` per runner keeps idle threads for ``idle_timeout`` seconds, so a burst of
hand-offs reuses threads and an idle program keeps none.  A job's result travels back through the
runner's entry queue (an eventfd CQE), and the waiting task is rescheduled with it.

Cancellation: with ``abandon_on_cancel=False`` (the default) a cancelled task keeps waiting for
its thread -- the thread cannot be interrupted -- gets the result and sees the cancellation at its
next checkpoint.  With ``abandon_on_cancel=True`` the task raises at once; the thread runs on,
keeps its limiter token until it finishes, and its result is dropped.

Shutdown (``Runner.close``): ``run()`` returns only after every worker thread it started has
finished (DESIGN.md invariant 4) -- *except* one running a job its task abandoned, as in trio: the
loop does not wait for it.  By then no task is left, so no worker can be running a job that a task
still waits for.  An abandoned worker finishes on its own; its result is dropped, and its calls
into the finished loop (``from_thread_run``/``from_thread_run_sync``) raise ``RuntimeError``
("the loop is closed"; anyio's ``RunFinishedError`` through the backend) instead of waiting for a
loop that will never run them.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sniffio

from .._errors import UringInternalError
from ._context import GLOBAL
from ._run import Error, Runner, Task, checkpoint_if_cancelled, current_runner, current_task
from ._sync import CapacityLimiter
from ._traps import Abort, RaiseCancel, wait_task_rescheduled

__all__ = [
    "WorkerPool",
    "current_default_thread_limiter",
    "from_thread_check_cancelled",
    "from_thread_run",
    "from_thread_run_sync",
    "to_thread_run_sync",
]

T = TypeVar("T")

DEFAULT_THREAD_LIMIT = 40
IDLE_TIMEOUT = 10.0


class _WorkerLocal(threading.local):
    runner: Runner | None = None
    task: Task | None = None
    job: _Job | None = None


#: What a worker thread knows about the loop that started its current job.
worker_local = _WorkerLocal()


class _Job:
    __slots__ = (
        "abandonable",
        "abandoned",
        "args",
        "cancelled",
        "context",
        "deliver",
        "fn",
        "runner",
        "task",
    )

    def __init__(
        self,
        runner: Runner,
        task: Task | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        context: contextvars.Context,
        deliver: Callable[[Any], None],
    ) -> None:
        self.runner = runner
        self.task = task
        self.fn = fn
        self.args = args
        self.context = context
        self.deliver = deliver
        self.abandonable = False
        self.abandoned = False
        self.cancelled = False


class _Worker:
    __slots__ = ("_job", "_wake", "current", "pool", "thread")

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._wake = threading.Semaphore(0)
        self._job: _Job | None = None
        #: The job assigned and not yet finished, for ``WorkerPool.shutdown`` (set on the loop
        #: thread by ``assign``, so a job not yet picked up by this thread counts too).
        self.current: _Job | None = None
        self.thread = threading.Thread(target=self._main, name="anyio_uring worker", daemon=True)
        self.thread.start()

    def assign(self, job: _Job | None) -> None:
        """Hand over a job (``None``: exit).  Loop thread only."""
        self._job = self.current = job
        self._wake.release()

    def _main(self) -> None:
        pool = self.pool
        while True:
            if not self._wake.acquire(timeout=pool.idle_timeout):
                with pool.lock:
                    if self in pool.idle:  # still idle: expire
                        pool.idle.remove(self)
                        pool.all.discard(self)
                        return
                continue  # being assigned right now
            job, self._job = self._job, None
            if job is None:
                return  # shutdown
            if not self._run(job):
                return

    def _run(self, job: _Job) -> bool:
        """Run one job and post its result; return whether to stay in the pool."""
        pool = self.pool
        worker_local.runner = job.runner
        worker_local.task = job.task
        worker_local.job = job
        try:
            result: Any = (job.context.run(job.fn, *job.args),)
        except BaseException as exc:
            result = Error(exc)
        finally:
            worker_local.runner = worker_local.task = worker_local.job = None
            # Drop the payload now: once the result is posted, the task may resume (and
            # expect fn, its arguments and its context to be freeable) before this thread
            # gets to run its next line.
            del job.fn, job.args, job.context
        with pool.lock:
            self.current = None
            stay = not pool.closed
            if stay:
                pool.idle.append(self)
            else:
                pool.all.discard(self)
        try:
            job.runner.entry.run_sync_soon(job.deliver, result)
        except RuntimeError:
            # The loop has stopped.  It stops only once no task is left, so no task can be
            # waiting for this result -- unless the job was abandoned, nobody should be here.
            if not job.abandoned:
                raise UringInternalError(
                    f"a worker thread finished {job!r} after its loop stopped, but no task "
                    "abandoned it: the loop should have waited for this thread"
                ) from None
        return stay


class WorkerPool:
    """The runner's worker threads."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.all: set[_Worker] = set()
        self.busy = 0
        #: Set by :meth:`shutdown`: a worker finishing its job then leaves instead of idling.
        self.closed = False

    def submit(self, job: _Job) -> None:
        with self.lock:
            if self.closed:
                raise RuntimeError("the loop is closed")
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = _Worker(self)
            with self.lock:
                self.all.add(worker)
        self.busy += 1
        worker.assign(job)

    def shutdown(self) -> None:
        """Stop every worker; join every one but those running an abandoned job.

        Called by ``Runner.close`` once no task is left and the entry queue has stopped, so a
        busy worker's job is an abandoned one: it is left to finish on its own (it then leaves
        the pool, see ``_Worker._run``).  A busy worker whose job was *not* abandoned would be a
        bug (the task waiting for it would still be alive); it is joined all the same.
        """
        with self.lock:
            self.closed = True
            workers = list(self.all)
            self.all.clear()
            idle = set(self.idle)
            self.idle.clear()
            abandoned = {
                w for w in workers if w not in idle and w.current is not None and w.current.abandoned
            }
        for worker in idle:
            worker.assign(None)
        for worker in workers:
            if worker not in abandoned:
                worker.thread.join()


def _pool(runner: Runner) -> WorkerPool:
    pool: WorkerPool | None = runner._worker_pool
    if pool is None:
        pool = runner._worker_pool = WorkerPool()
    return pool


def current_default_thread_limiter() -> CapacityLimiter:
    """The loop's default limiter for worker threads (40 tokens)."""
    runner = current_runner()
    limiter: CapacityLimiter | None = getattr(runner, "_default_limiter", None)
    if limiter is None:
        limiter = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        runner._default_limiter = limiter  # type: ignore[attr-defined]
    return limiter


async def to_thread_run_sync(
    fn: Callable[..., T],
    *args: Any,
    abandon_on_cancel: bool = False,
    limiter: CapacityLimiter | None = None,
) -> T:
    """Run ``fn(*args)`` in a worker thread (in a copy of the current context) and return its
    result."""
    await checkpoint_if_cancelled()
    task = current_task()
    runner = task._runner
    if limiter is None:
        limiter = current_default_thread_limiter()
    borrower = object()
    await limiter.acquire_on_behalf_of(borrower)
    job: _Job

    def deliver(result: Any) -> None:
        runner._worker_pool.busy -= 1
        limiter.release_on_behalf_of(borrower)
        if not job.abandoned:
            runner.reschedule(task, result)

    context = contextvars.copy_context()
    # The thread is not in async context, even if sniffio's context variable says otherwise.
    context.run(sniffio.current_async_library_cvar.set, None)
    job = _Job(runner, task, fn, args, context, deliver)
    job.abandonable = abandon_on_cancel

    def abort(raise_cancel: RaiseCancel) -> Abort:
        job.cancelled = True
        if abandon_on_cancel:
            job.abandoned = True
            return Abort.SUCCEEDED
        return Abort.FAILED

    try:
        _pool(runner).submit(job)
    except BaseException:
        limiter.release_on_behalf_of(borrower)
        raise
    result = await wait_task_rescheduled(abort)
    if isinstance(result, Error):
        try:
            raise result.error
        finally:
            del result
    value: T = result[0]
    return value


def _loop_runner_for_this_thread() -> Runner:
    runner = worker_local.runner
    if runner is None:
        raise RuntimeError(
            "this thread was not started by anyio_uring's to_thread_run_sync; pass the loop's token"
        )
    return runner


def _check_not_loop_thread(runner: Runner) -> None:
    if GLOBAL.runner is runner:
        raise RuntimeError("this function must not be called from the event loop's own thread")


def from_thread_run_sync(fn: Callable[..., T], *args: Any, runner: Runner | None = None) -> T:
    """From another thread: run ``fn(*args)`` on the loop thread and return its result.

    Raises ``RuntimeError`` ("the loop is closed") if the loop has stopped (``Runner.close``)
    before running it: a call either runs or fails, it never waits for a loop that is gone.
    """
    runner = runner or _loop_runner_for_this_thread()
    _check_not_loop_thread(runner)
    done = threading.Event()
    box: list[Any] = []

    def call() -> None:
        try:
            box.append((fn(*args),))
        except BaseException as exc:
            box.append(Error(exc))
        finally:
            done.set()

    runner.entry.run_sync_soon(call)
    done.wait()
    result: T = _unbox(box[0])
    return result


def from_thread_run(fn: Callable[..., Awaitable[T]], *args: Any, runner: Runner | None = None) -> T:
    """From another thread: run ``await fn(*args)`` in a new system task and return its result.

    Called from a worker thread whose task waits for it (``abandon_on_cancel=False``), the new
    task runs under that task's cancel scopes, as in trio: cancelling them cancels ``fn``.  From
    any other thread, or from one its task may abandon (whose scopes may close while ``fn`` still
    runs), it runs under the loop's system scope.

    While the loop closes, the new task starts cancelled (the system scope is); once it has
    stopped running tasks, the call raises ``RuntimeError`` ("the loop is closed") instead.
    """
    runner = runner or _loop_runner_for_this_thread()
    _check_not_loop_thread(runner)
    done = threading.Event()
    box: list[Any] = []
    context = contextvars.copy_context()
    job = worker_local.job if worker_local.runner is runner else None

    async def wrapper() -> None:
        try:
            box.append((await fn(*args),))
        except BaseException as exc:
            box.append(Error(exc))
        finally:
            done.set()

    def spawn() -> None:
        host = job.task if job is not None and not job.abandonable else None
        status = host._cancel_status if host is not None else None
        try:
            if status is None:
                status = _system(runner)
            runner.spawn(wrapper, (), None, fn, system=True, context=context, cancel_status=status)
        except BaseException as exc:
            box.append(Error(exc))
            done.set()

    runner.entry.run_sync_soon(spawn)
    done.wait()
    result: T = _unbox(box[0])
    return result


def _system(runner: Runner) -> Any:
    from ._cancel import system_cancel_status

    return system_cancel_status(runner)


def from_thread_check_cancelled() -> None:
    """In a worker thread: raise the loop's Cancelled if the task that started this thread has
    been cancelled (its wait has been aborted)."""
    from ._run import Cancelled

    job = worker_local.job
    if job is None:
        raise RuntimeError("from_thread_check_cancelled must be called from a worker thread")
    if job.cancelled:
        raise Cancelled


def _unbox(item: Any) -> Any:
    if isinstance(item, Error):
        try:
            raise item.error
        finally:
            del item
    return item[0]
