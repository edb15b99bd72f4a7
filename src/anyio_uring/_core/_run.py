"""Tasks and the run loop.

Theory of operation
-------------------
One :class:`Runner` per loop, one loop per thread, one :class:`~anyio_uring._ring.Ring` per
runner.  The loop (DESIGN.md section 4)::

    while tasks are alive:
        run every runnable task once (a batch)
        if nothing is runnable: one Ring.wait(time to the nearest deadline)
        else: one Ring.wait(0) -- but only if something was queued on the ring since the last
            wait, or the last wait submitted something, or HARVEST_EVERY task steps have run
            since it (the fairness bound: a task that never blocks cannot starve I/O)
        (a Ring.wait submits queued SQEs, waits, reaps every CQE and calls the operations'
            callbacks -- which reschedule the tasks waiting on them)
        if any timer is armed: fire the expired ones (sleeps, cancel-scope deadlines)

Nothing here knows what a socket or a file is.  A task waits only through
:func:`~anyio_uring._core._traps.wait_task_rescheduled`; whoever owes it a wake-up calls
:meth:`Runner.reschedule`.  Cross-thread traffic (``run_sync_soon``, worker threads) goes through
an entry queue whose eventfd the ring watches with a multishot ``POLL_ADD`` (never a private
futex: see KERNEL-FACTS.md section 4), so the loop's only blocking call stays ``io_uring_enter``.

KeyboardInterrupt: a SIGINT arriving while the loop runs (main thread only) is *delivered to the
main task* like a cancellation, at its current wait or next checkpoint (trio's delivery, without
trio's per-frame KI protection: pure-CPU code with no checkpoint is not interrupted, as in
asyncio).  The loop notices even when blocked in the kernel: ``io_uring_enter`` returns EINTR and
the signal wake-up fd is watched by the ring.  A second Ctrl+C while the first is still pending
raises KeyboardInterrupt immediately, wherever the program is.

Async generators: while the loop runs, ``sys.set_asyncgen_hooks`` points at ``_asyncgens.py``,
which closes an abandoned generator in a system task of the loop and, in :meth:`Runner.close`,
the survivors.  Shutdown order: :meth:`Runner.close`.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
import os
import select
import signal
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import sniffio

from .._errors import UringInternalError
from .._ring import Operation, RingOptions
from ._asyncgens import AsyncGenerators
from ._cancel import cancel_all_tasks, root_cancel_status, system_cancel_status
from ._clock import Clock, SystemClock
from ._context import GLOBAL, Cancelled, current_runner, current_task, current_time
from ._io import IOManager
from ._traps import CHECKPOINT_TRAP, SUCCEEDED, Abort, RaiseCancel, checkpoint, wait_task_rescheduled

if TYPE_CHECKING:
    from ._cancel import CancelStatus

__all__ = [
    "Cancelled",
    "Runner",
    "Task",
    "cancel_pending",
    "checkpoint",
    "checkpoint_if_cancelled",
    "current_runner",
    "current_task",
    "current_time",
    "reschedule",
    "run",
    "sleep",
    "sleep_forever",
    "sleep_until",
    "wait_all_tasks_blocked",
]

T = TypeVar("T")

_task_ids = itertools.count(1)

#: Fairness bound of the run loop: while tasks stay runnable, the ring is polled at least once
#: every this many task steps even when nothing was queued on it (see ``Runner._loop``).  A
#: poll with nothing to do costs about one ``io_uring_enter``; 32 steps of the cheapest task
#: (a bare checkpoint, ~1.5 us) amortise it to a few percent and bound the extra latency of a
#: completion to tens of microseconds.
HARVEST_EVERY = 32


def _in_task() -> bool:
    """Whether a task of a loop in this thread is running (the async-generator hooks ask)."""
    return GLOBAL.task is not None


# ------------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------------


class Error:
    """An exception to throw into a task when it resumes."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def capture_error(raise_cancel: RaiseCancel) -> Error:
    try:
        raise_cancel()
    except BaseException as exc:
        return Error(exc)


# ------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------


class Task:
    """A coroutine driven by the runner, with its place in the task and cancellation trees."""

    __slots__ = (
        "__weakref__",
        "_abort_fn",
        "_cancel_status",
        "_child_nurseries",
        "_next_arg",
        "_next_fn",
        "_parent_nursery",
        "_runner",
        "_send",
        "_throw",
        "context",
        "coro",
        "id",
        "name",
        "outcome",
        "parent",
    )

    def __init__(
        self,
        runner: Runner,
        coro: Coroutine[Any, Any, Any],
        name: str,
        context: contextvars.Context,
        parent: Task | None,
        parent_nursery: Any,
        cancel_status: CancelStatus | None,
    ) -> None:
        self._runner = runner
        self.coro = coro
        self.name = name
        self.context = context
        self.parent = parent
        self.id = next(_task_ids)
        self._parent_nursery = parent_nursery
        self._child_nurseries: list[Any] | None = None  # made by the first task group
        self._abort_fn: Callable[[RaiseCancel], Abort] | None = None
        #: ``type(coro).send`` and ``.throw``, called as ``fn(coro, arg)``: the class's own
        #: functions, shared by every task (a bound ``coro.send`` would be 72 bytes per task).
        cls = type(coro)
        self._send: Callable[[Any, Any], Any] = cls.send
        self._throw: Callable[[Any, Any], Any] = cls.throw
        self._next_fn: Callable[[Any, Any], Any] = self._send
        self._next_arg: Any = None
        self.outcome: Error | tuple[Any] | None = None
        self._cancel_status = cancel_status
        if cancel_status is not None:
            # _activate_cancel_status(), for a task that has not run: it is not parked, so a
            # cancellation is not delivered here but at its first cancel point.
            cancel_status.add_task(self)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} id={self.id}>"

    @property
    def parent_nursery(self) -> Any:
        return self._parent_nursery

    @property
    def child_nurseries(self) -> list[Any]:
        return list(self._child_nurseries or ())

    @property
    def parked(self) -> bool:
        return self._abort_fn is not None

    def _activate_cancel_status(self, status: CancelStatus | None) -> None:
        old = self._cancel_status
        if old is not None:
            old.discard_task(self)
        self._cancel_status = status
        if status is not None:
            status.add_task(self)
            if status.effectively_cancelled:
                self._attempt_delivery_of_any_pending_cancel()

    def _attempt_abort(self, raise_cancel: RaiseCancel) -> None:
        abort_fn = self._abort_fn
        if abort_fn is None:
            return
        result = abort_fn(raise_cancel)
        if type(result) is not Abort:
            raise UringInternalError(f"abort function must return Abort, not {result!r}")
        if result is SUCCEEDED:
            self._runner.reschedule_error(self, capture_error(raise_cancel))

    def _attempt_delivery_of_any_pending_cancel(self) -> None:
        if self._abort_fn is None:
            return
        status = self._cancel_status
        if status is None or not status.effectively_cancelled:
            return
        self._attempt_abort(status.raise_cancel)

    def _attempt_delivery_of_pending_ki(self) -> None:
        if self._abort_fn is None:
            return
        runner = self._runner

        def raise_ki() -> NoReturn:
            # Cleared only when the interrupt is really raised: an abort that answers FAILED
            # (an operation that then completes with data) leaves it pending for the next
            # checkpoint instead of losing it.
            runner.ki_pending = False
            raise KeyboardInterrupt

        self._attempt_abort(raise_ki)


# ------------------------------------------------------------------------------------------
# timers
# ------------------------------------------------------------------------------------------


class _SleepTimer:
    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task

    def fire(self) -> None:
        self.task._runner.reschedule(self.task)


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------

_EFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC


class Runner:
    """An event loop on one io_uring.  Re-enterable: :meth:`run` runs one main task to
    completion and returns, keeping the loop (and any parked system tasks) for the next call;
    :meth:`close` cancels what is left, drains every in-flight operation and closes the ring.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ring_options: RingOptions | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        if GLOBAL.runner is not None:
            raise RuntimeError("a loop is already running in this thread (one loop per thread)")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.io = IOManager(ring_options)
        self.ring = self.io.ring
        self.runq: deque[Task] = deque()
        self.tasks: set[Task] = set()
        self.system_tasks: set[Task] = set()
        self.main_task: Task | None = None
        self.ki_pending = False
        self._timers: list[list[Any]] = []
        self._timer_seq = itertools.count()
        self._dead_timers = 0
        self._idle_waiters: list[tuple[float, int, Task]] = []
        self._closed = False
        self._running = False
        self._thread = threading.get_ident()
        self.entry = EntryQueue(self)
        self.ring.call_soon = self.entry.run_sync_soon  # finalizers' way to the loop thread
        self._signal_wakeup: _SignalWakeup | None = None
        self._install_signal_handlers = install_signal_handlers
        self._worker_pool: Any = None  # created lazily by _threads
        self._crash: list[BaseException] = []
        self._asyncgens = AsyncGenerators(self, _in_task)
        #: Set by ``close`` once no task is left and none can run again: spawning fails and the
        #: entry queue refuses callbacks (``from_thread_*`` then raise instead of hanging).
        self._stopped = False
        self.clock.start_clock()

    def __repr__(self) -> str:
        return f"<Runner tasks={len(self.tasks)} {self.ring!r}>"

    # -- scheduling -------------------------------------------------------------------------

    def reschedule(self, task: Task, value: Any = None) -> None:
        """Wake a parked task; it resumes with ``value``."""
        if task._abort_fn is None:
            raise UringInternalError(f"{task!r} rescheduled but it is not parked")
        task._abort_fn = None
        task._next_fn = task._send
        task._next_arg = value
        self.runq.append(task)

    def reschedule_error(self, task: Task, error: Error) -> None:
        """Wake a parked task; it resumes by raising ``error.error``."""
        if task._abort_fn is None:
            raise UringInternalError(f"{task!r} rescheduled but it is not parked")
        task._abort_fn = None
        task._next_fn = task._throw
        task._next_arg = error.error
        self.runq.append(task)

    def spawn(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        nursery: Any,
        name: object = None,
        *,
        system: bool = False,
        context: contextvars.Context | None = None,
        cancel_status: CancelStatus | None = None,
    ) -> Task:
        if self._stopped:
            raise RuntimeError("the loop is closed")
        coro = async_fn(*args)
        if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
            close = getattr(coro, "close", None)
            if close is not None:
                close()
            raise TypeError(
                f"{getattr(async_fn, '__qualname__', async_fn)!r} must be an async function "
                f"returning a coroutine, it returned {type(coro).__qualname__}"
            )
        if name is None:
            name = getattr(async_fn, "__qualname__", None) or repr(async_fn)
        elif type(name) is not str and not isinstance(name, str):
            name = getattr(name, "__qualname__", None) or repr(name)
        if context is None:
            context = contextvars.copy_context()
        if cancel_status is None and nursery is not None:
            cancel_status = nursery._cancel_status
        # A system task can outlive the task that spawned it: it must not keep that task (and the
        # outcome it will have) alive.
        parent = None if system else GLOBAL.task
        task = Task(self, coro, name, context, parent, nursery, cancel_status)
        self.tasks.add(task)
        if system:
            self.system_tasks.add(task)
        if nursery is not None:
            nursery._children.add(task)
        self.runq.append(task)
        return task

    def spawn_system_task(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Task:
        """A task outside every nursery; it is cancelled when the runner closes.  It must not
        raise (wrap it): an exception escaping it crashes the loop."""

        return self.spawn(async_fn, args, None, name, system=True, cancel_status=system_cancel_status(self))

    def _task_exited(self, task: Task, outcome: Error | tuple[Any]) -> None:
        task.outcome = outcome
        status = task._cancel_status
        if status is not None:  # task._activate_cancel_status(None)
            status.discard_task(task)
            task._cancel_status = None
        self.tasks.discard(task)
        if task is self.main_task:
            return
        if task in self.system_tasks:
            self.system_tasks.discard(task)
            if isinstance(outcome, Error) and not isinstance(outcome.error, Cancelled):
                self._crash.append(outcome.error)
            return
        nursery = task._parent_nursery
        if nursery is None:
            raise UringInternalError(f"{task!r} exited without a parent nursery")
        nursery._child_finished(task, outcome)

    # -- timers -----------------------------------------------------------------------------

    def add_timer(self, deadline: float, target: Any) -> list[Any]:
        """Call ``target.fire()`` once the clock reaches ``deadline``.  Returns a handle for
        :meth:`cancel_timer`."""
        entry = [deadline, next(self._timer_seq), target]
        heapq.heappush(self._timers, entry)
        return entry

    def cancel_timer(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] = None
            self._dead_timers += 1
            if self._dead_timers > 64 and self._dead_timers > len(self._timers) // 2:
                self._timers = [e for e in self._timers if e[2] is not None]
                heapq.heapify(self._timers)
                self._dead_timers = 0

    def _next_deadline(self) -> float:
        timers = self._timers
        while timers and timers[0][2] is None:
            heapq.heappop(timers)
            self._dead_timers -= 1
        return timers[0][0] if timers else math.inf

    def _fire_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            target = entry[2]
            if target is None:
                self._dead_timers -= 1
                continue
            entry[2] = None
            target.fire()

    # -- waiting for idleness -----------------------------------------------------------------

    async def wait_all_tasks_blocked(self, cushion: float = 0.0) -> None:
        task = current_task()
        key = (cushion, id(task), task)
        heapq.heappush(self._idle_waiters, key)

        def abort(_: RaiseCancel) -> Abort:
            self._idle_waiters.remove(key)
            heapq.heapify(self._idle_waiters)
            return SUCCEEDED

        await wait_task_rescheduled(abort)

    def _wake_idle_waiters(self) -> None:
        waiters = self._idle_waiters
        cushion = waiters[0][0]
        while waiters and waiters[0][0] == cushion:
            _, _, task = heapq.heappop(waiters)
            self.reschedule(task)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any, name: object = None) -> T:
        """Run ``async_fn(*args)`` as the main task until it finishes; return its result."""
        if self._closed:
            raise RuntimeError("this runner is closed")
        if self._running:
            raise RuntimeError("the runner is already running (runs do not nest)")
        if threading.get_ident() != self._thread:
            raise RuntimeError("a runner can only be used by the thread that created it")
        GLOBAL.runner = self
        GLOBAL.task = None
        self._running = True
        old_sniffio = sniffio.thread_local.name
        sniffio.thread_local.name = "uring"
        restore_signals = self._install_signals()
        restore_asyncgen_hooks = self._asyncgens.install()
        try:
            main = self.spawn(async_fn, args, None, name)
            self.main_task = main

            main._activate_cancel_status(root_cancel_status(main))
            self._loop(main)
            self.main_task = None
            outcome = main.outcome
            self._raise_crash()
            if isinstance(outcome, Error):
                raise outcome.error
            assert outcome is not None
            result: T = outcome[0]
            return result
        finally:
            GLOBAL.task = None
            self._running = False
            restore_asyncgen_hooks()
            restore_signals()
            sniffio.thread_local.name = old_sniffio
            if not self._closed:
                GLOBAL.runner = None

    def run_and_close(self, async_fn: Callable[..., Awaitable[T]], *args: Any, name: object = None) -> T:
        """:meth:`run` then :meth:`close`, whatever happened: the body of :func:`run`."""
        try:
            result = self.run(async_fn, *args, name=name)
        except BaseException:
            try:
                self.close()
            except BaseException as close_exc:  # pragma: no cover - report both
                sys.stderr.write(f"anyio_uring: error while closing the loop: {close_exc!r}\n")
            raise
        self.close()
        return result

    def _raise_crash(self) -> None:
        if self._crash:
            errors, self._crash = self._crash, []
            raise UringInternalError("a system task or run_sync_soon callback raised") from errors[0]

    def _loop(self, main: Task | None) -> None:
        """Run batches until ``main`` has finished -- or, for ``None``, until no task is left
        (see the module docstring).

        Between two batches the loop harvests the ring -- blocking when nothing is runnable.
        While tasks stay runnable it skips the non-blocking harvest when nothing was queued on
        the ring since the last one (the kernel has no new work from us), but never for more
        than :data:`HARVEST_EVERY` task steps, so a task that never blocks cannot starve the
        completions of I/O, timers-by-CQE, worker threads and other threads' calls.
        """
        io = self.io
        ring = self.ring
        clock = self.clock
        g = GLOBAL
        checkpoint_trap = CHECKPOINT_TRAP
        harvest_every = HARVEST_EVERY
        inf = math.inf
        spare: deque[Task] = deque()
        # Task steps run since the last harvest; the ring's queue mark (``Ring._queue_mark``, a
        # plain attribute set to the user_data of every SQE queued -- operations and internal
        # cancels alike, never the same value twice) at the last harvest and at the one before.
        # A harvest that submitted something is followed by one more at the next tick: the
        # kernel finishes some work it was just given in task work that the submitting enter
        # does not run (a poll armed on a ready fd, a quick io-wq job).
        steps = 0
        mark = prev_mark = -1
        tasks = self.tasks
        if (main.outcome is not None) if main is not None else not tasks:
            return
        while True:
            batch = self.runq
            if batch:
                # Two deques take turns: tasks woken during this batch go to the other one.
                self.runq = runq = spare
                steps += len(batch)
                for task in batch:
                    g.task = task
                    arg = task._next_arg
                    task._next_arg = None
                    try:
                        yielded = task.context.run(task._next_fn, task.coro, arg)
                    except StopIteration as stop:
                        g.task = None
                        self._task_exited(task, (stop.value,))
                        continue
                    except BaseException as exc:
                        g.task = None
                        self._task_exited(task, Error(exc))
                        continue
                    if yielded is checkpoint_trap:
                        # Resumed with itself: checkpoint() needs no thread-local lookup.
                        task._next_fn = task._send
                        task._next_arg = task
                        runq.append(task)
                    elif callable(yielded):
                        task._abort_fn = yielded
                        status = task._cancel_status
                        if status is not None and status.effectively_cancelled:
                            g.task = None
                            task._attempt_delivery_of_any_pending_cancel()
                        elif self.ki_pending and task is self.main_task:
                            g.task = None
                            task._attempt_delivery_of_pending_ki()
                    else:
                        task._next_fn = task._throw
                        task._next_arg = TypeError(
                            f"anyio_uring tasks cannot await {yielded!r}: it belongs to another "
                            "event loop (asyncio/trio) -- use anyio or anyio_uring primitives"
                        )
                        runq.append(task)
                g.task = None
                batch.clear()
                spare = batch
                if (main.outcome is not None) if main is not None else not tasks:
                    break
            if self.runq:
                # Runnable tasks: poll the ring (timeout 0) only if it has work from us or
                # the fairness budget is spent.
                if ring._queue_mark != mark or mark != prev_mark or steps >= harvest_every:
                    prev_mark, mark = mark, ring._queue_mark
                    steps = 0
                    io.get_events(0.0)
                if self.ki_pending:
                    self._deliver_ki()
                if self._crash:
                    self._raise_crash()
                if self._timers:
                    self._fire_timers(clock.current_time())
                continue
            # Nothing runnable: block until a completion or the nearest deadline.
            wake_idle = do_jump = False
            t = inf
            if self._timers:
                deadline = self._next_deadline()
                if deadline != inf:
                    t = max(clock.deadline_to_sleep_time(deadline), 0.0)
            idle_cushion = self._idle_waiters[0][0] if self._idle_waiters else inf
            autojump = clock.autojump_threshold
            if idle_cushion <= t and idle_cushion != inf:
                wake_idle, t = True, idle_cushion
            elif autojump < t:
                do_jump, t = True, autojump
            prev_mark = mark = ring._queue_mark  # a blocking wait also runs the kernel's task work
            steps = 0
            events = io.get_events(None if t == inf else t)
            if self.ki_pending:
                self._deliver_ki()
            if self._crash:
                self._raise_crash()
            if self._timers:
                self._fire_timers(clock.current_time())
            if not events and not self.runq:
                if wake_idle:
                    self._wake_idle_waiters()
                elif do_jump:
                    self._autojump()

    def _autojump(self) -> None:
        deadline = self._next_deadline()
        if deadline == math.inf:
            return
        now = self.clock.current_time()
        if deadline > now and self._io_idle():
            self.clock.jump(deadline - now)
            self._fire_timers(self.clock.current_time())

    def _io_idle(self) -> bool:
        """No operation but the loop's own watchers is in flight and no worker is busy."""
        busy_threads = self._worker_pool.busy if self._worker_pool is not None else 0
        return self.ring.inflight <= self.entry.watchers and busy_threads == 0

    def _deliver_ki(self) -> None:
        main = self.main_task
        if main is not None and main.outcome is None:
            main._attempt_delivery_of_pending_ki()

    # -- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        if not self._install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return lambda: None
        if self._signal_wakeup is None:
            self._signal_wakeup = _SignalWakeup(self)
        restore_wakeup = self._signal_wakeup.install()
        old_handler = signal.getsignal(signal.SIGINT)
        if old_handler is not signal.default_int_handler:
            return restore_wakeup

        def handler(signum: int, frame: Any) -> None:
            if self.ki_pending:
                raise KeyboardInterrupt  # second Ctrl+C: do not wait for a checkpoint
            self.ki_pending = True

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            if signal.getsignal(signal.SIGINT) is handler:
                signal.signal(signal.SIGINT, old_handler)
            restore_wakeup()

        return restore

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the loop down (DESIGN.md invariant 4), in this order:

        1. cancel every remaining task (system tasks: the main task is done) and run the loop
           until all have finished;
        2. close the async generators still alive (``_asyncgens``), until none is left;
        3. stop: no task can be spawned any more, the entry queue refuses new callbacks and runs
           the queued ones (a ``from_thread_run`` waiting there gets an error, not a hang);
        4. join the worker threads -- except those running a job whose task abandoned it
           (``abandon_on_cancel=True``): they finish on their own, and their later calls into
           the loop raise;
        5. drain every in-flight operation and close the ring.
        """
        if self._closed:
            return
        if threading.get_ident() != self._thread:
            raise RuntimeError("a runner must be closed by the thread that created it")
        GLOBAL.runner = self
        try:
            sniffio_old = sniffio.thread_local.name
            sniffio.thread_local.name = "uring"
            restore_asyncgen_hooks = self._asyncgens.install()
            try:
                # Also when no task is left: a system task spawned from now on (``from_thread_run``
                # racing the close) must start cancelled, or it could keep the loop alive.
                cancel_all_tasks(self)
                self._loop(None)
                self._finalize_asyncgens()
            finally:
                restore_asyncgen_hooks()
                sniffio.thread_local.name = sniffio_old
            self._stopped = True
            self.entry.stop()
            self.io.abandon_orphans()
            if self._worker_pool is not None:
                self._worker_pool.shutdown()
            self.entry.close()
            if self._signal_wakeup is not None:
                self._signal_wakeup.close()
            self.io.close()
        finally:
            self._closed = self._stopped = True
            self.entry.stop()  # also after a crash: no from_thread call may wait on a dead loop
            GLOBAL.runner = None
            GLOBAL.task = None
        self._raise_crash()

    def _finalize_asyncgens(self) -> None:
        """Step 2 of :meth:`close`: no task is left, so every async generator still alive is
        suspended at a ``yield``; close them all (in a system task), and those that this
        creates or the garbage collector hands over meanwhile, until none is left."""
        gens = self._asyncgens
        gens.begin_shutdown()
        while True:
            self.entry.run_queued()  # finalizers queued by the GC add their generator to ``alive``
            if gens.alive:
                self.spawn_system_task(gens.finalize_remaining, name="close async generators (end of run)")
            elif not self.tasks:
                return
            self._loop(None)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------
# cross-thread entry
# ------------------------------------------------------------------------------------------


class EntryQueue:
    """Callbacks queued from any thread, run on the loop's thread between task batches.

    Woken through an eventfd watched by a multishot ``POLL_ADD`` (each write posts a CQE, so the
    counter never needs draining), or a re-armed single-shot poll on kernels without multishot.

    ``_lock`` makes "check closed, append, write the eventfd" one step against :meth:`stop`
    and :meth:`close`: a callback is either refused or run (never queued after the last
    drain), and the eventfd is never written after it is closed (its number may belong to
    another file by then).  It is re-entrant because a signal handler on the loop thread may
    call :meth:`run_sync_soon` while the interrupted code holds it.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.queue: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self.fd = os.eventfd(0, _EFD_FLAGS)
        self._lock = threading.RLock()
        self._woken = False
        self._closed = False
        self._multishot = runner.ring.support.multishot_poll
        self.watchers = 0
        self._op: Operation | None = None
        self._arm()

    def _arm(self) -> None:
        op = self.runner.ring.poll_add(self.fd, select.POLLIN, multishot=self._multishot)
        op.on_more = self._on_cqe
        op.callback = self._on_final
        self._op = op
        self.watchers += 1

    def _on_cqe(self, op: Operation, res: int, flags: int) -> None:
        self.run_queued()

    def _on_final(self, op: Operation) -> None:
        self.watchers -= 1
        self._op = None
        if not self._multishot or (op.result is not None and op.result >= 0):
            try:
                os.eventfd_read(self.fd)
            except (BlockingIOError, OSError):
                pass
        self.run_queued()
        if not self._closed:
            self._arm()  # a multishot can end on CQ overflow: re-arm whenever F_MORE is absent

    def run_queued(self) -> None:
        """Run every queued callback (loop thread only); an exception crashes the loop."""
        self._woken = False
        queue = self.queue
        while queue:
            fn, args = queue.popleft()
            try:
                fn(*args)
            except BaseException as exc:
                self.runner._crash.append(exc)

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop thread.  Thread-safe and signal-safe enough.

        Raises ``RuntimeError`` once the loop has stopped (``Runner.close``): then ``fn`` will
        never run.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the loop is closed")
            self.queue.append((fn, args))
            if not self._woken:
                self._woken = True
                try:
                    os.eventfd_write(self.fd, 1)
                except BlockingIOError:  # counter saturated: a wake-up is pending anyway
                    pass

    def stop(self) -> None:
        """Refuse new callbacks from now on, and run those already queued."""
        with self._lock:
            self._closed = True
        self.run_queued()

    def close(self) -> None:
        """:meth:`stop`, then disarm the eventfd watcher and close the eventfd."""
        self.stop()
        if self._op is not None:
            self.runner.io.drain(self._op)
        self.run_queued()
        with self._lock:
            os.close(self.fd)


class _SignalWakeup:
    """A pipe installed with ``signal.set_wakeup_fd`` and watched by the ring, so a signal
    arriving just before ``io_uring_enter`` still wakes the loop.  Received signal numbers are
    handed to ``listeners`` (used by ``open_signal_receiver``)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listeners: list[Callable[[int], None]] = []
        self._op: Operation | None = None
        self._closed = False

    def install(self) -> Callable[[], None]:
        old = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        if self._op is None:
            self._arm()

        def restore() -> None:
            signal.set_wakeup_fd(old)

        return restore

    def _arm(self) -> None:
        op = self.runner.ring.poll_add(self.rfd, select.POLLIN, multishot=False)
        op.callback = self._on_ready
        self._op = op
        self.runner.entry.watchers += 1

    def _on_ready(self, op: Operation) -> None:
        self.runner.entry.watchers -= 1
        self._op = None
        try:
            data = os.read(self.rfd, 4096)
        except BlockingIOError:
            data = b""
        for signum in data:
            for listener in list(self.listeners):
                listener(signum)
        if not self._closed:
            self._arm()

    def close(self) -> None:
        self._closed = True
        if self._op is not None:
            self.runner.io.drain(self._op)
        os.close(self.rfd)
        os.close(self.wfd)


# ------------------------------------------------------------------------------------------
# task-level primitives
# ------------------------------------------------------------------------------------------


def reschedule(task: Task, value: Any = None) -> None:
    task._runner.reschedule(task, value)


def cancel_pending() -> bool:
    """Whether a cancellation (or KeyboardInterrupt) waits for the current task -- the test of
    ``checkpoint_if_cancelled`` without a coroutine, for the hot paths:
    ``if cancel_pending(): await checkpoint_if_cancelled()``."""
    task = GLOBAL.task
    if task is None:
        return True  # not in a task: let checkpoint_if_cancelled raise its RuntimeError
    status = task._cancel_status
    if status is not None and status.effectively_cancelled:
        return True
    runner = task._runner
    return runner.ki_pending and task is runner.main_task


async def checkpoint_if_cancelled() -> None:
    """A cancel point, and a schedule point only if cancelled."""
    task = current_task()
    status = task._cancel_status
    runner = task._runner
    if (status is not None and status.effectively_cancelled) or (
        runner.ki_pending and task is runner.main_task
    ):
        await checkpoint()
        raise UringInternalError("checkpoint did not raise")  # pragma: no cover


async def sleep_forever() -> NoReturn:
    """Park until cancelled."""
    await wait_task_rescheduled(lambda _: SUCCEEDED)
    raise UringInternalError("sleep_forever woke up")  # pragma: no cover


async def sleep_until(deadline: float) -> None:
    """Sleep until the clock reaches ``deadline`` (a cancel point either way)."""
    if math.isnan(deadline):
        raise ValueError("deadline must not be NaN")
    task = current_task()
    runner = task._runner
    if deadline <= runner.clock.current_time():
        await checkpoint()
        return
    if deadline == math.inf:
        await sleep_forever()
    entry = runner.add_timer(deadline, _SleepTimer(task))

    def abort(_: RaiseCancel) -> Abort:
        runner.cancel_timer(entry)
        return SUCCEEDED

    await wait_task_rescheduled(abort)


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (0: just a checkpoint)."""
    if seconds == 0:  # anyio.sleep(0) is a common way to checkpoint
        await checkpoint()
        return
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if math.isnan(seconds):
        raise ValueError("sleep length must not be NaN")
    await sleep_until(current_runner().clock.current_time() + seconds)


async def wait_all_tasks_blocked(cushion: float = 0.0) -> None:
    """Return once every other task is blocked and the loop would sleep for ``cushion``."""
    await current_runner().wait_all_tasks_blocked(cushion)


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: Any,
    clock: Clock | None = None,
    ring_options: RingOptions | None = None,
    install_signal_handlers: bool = True,
) -> T:
    """Run ``async_fn(*args)`` on a new io_uring loop and return its result.

    Returns only once every task, operation and worker thread the run started has finished --
    except a worker thread whose task abandoned it (``abandon_on_cancel=True``), as in trio.
    """
    runner = Runner(clock=clock, ring_options=ring_options, install_signal_handlers=install_signal_handlers)
    return runner.run_and_close(async_fn, *args)
