"""The run loop's poll budget: a task that never blocks must not starve completions.

While tasks stay runnable, ``Runner._loop`` skips the non-blocking ``io_uring_enter`` when
nothing was queued on the ring since the last one, but polls at least every
``HARVEST_EVERY`` task steps.  Each test parks a task on something only a harvest (or the
timer check) can deliver, keeps a second task spinning on checkpoints, and counts the
spinner's steps between the moment the completion became available and the waiter's wake-up:
a loop that skipped the harvest for good would hit the spin limit instead.  Counting steps,
not seconds, keeps the bounds deterministic on a loaded machine.

Both ring modes run: with ``DEFER_TASKRUN`` (the default) a completion is posted only inside
our ``io_uring_enter``; without it, the kernel posts it at once and only the reaping waits.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

import anyio_uring as au
from anyio_uring import RingOptions
from anyio_uring._core import current_runner, current_time
from anyio_uring._core._run import HARVEST_EVERY
from anyio_uring._core._threads import to_thread_run_sync

RING_MODES = {"defer_taskrun": None, "no_defer_taskrun": RingOptions(disable=frozenset({"defer_taskrun"}))}

#: The spinner gives up (and the test fails) after this many checkpoints: far more than any
#: bound below, so only a starved completion gets there.
SPIN_LIMIT = 2_000_000

#: Steps a completion may wait once it is available: the budget, plus the step in which it
#: became available and the batch that runs the woken task.
BOUND = HARVEST_EVERY + 2


def run(main: Any, mode: RingOptions | None) -> Any:
    return au.run(main, ring_options=mode)


class Spinner:
    """Checkpoints until ``done``, counting steps after ``available`` became true."""

    def __init__(self) -> None:
        self.done = False
        self.available = False
        self.steps = 0
        self.late_steps = 0

    async def spin(self, before_step: Any = None) -> None:
        while not self.done:
            if before_step is not None:
                before_step(self)
            await au.checkpoint()
            self.steps += 1
            if self.available and not self.done:
                self.late_steps += 1
            if self.steps >= SPIN_LIMIT:
                pytest.fail(f"starved: still waiting after {self.steps} checkpoints of a busy task")


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_pipe_read_completes_while_a_task_spins(mode: RingOptions | None) -> None:
    """The read is queued (and submitted at once); its data is written later, by the spinner,
    so only a budgeted harvest -- nothing is queued any more -- can reap the completion."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    spinner = Spinner()
    result: list[bytes] = []

    async def reader() -> None:
        buf = bytearray(16)
        op = current_runner().ring.read(rfd, buf)
        n = await au.wait_operation(op)
        result.append(bytes(buf[:n]))
        spinner.done = True

    def write_once(s: Spinner) -> None:
        if s.steps == 10 and not s.available:
            os.write(wfd, b"ping")
            s.available = True

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(spinner.spin, write_once)

    try:
        run(main, mode)
    finally:
        os.close(rfd)
        os.close(wfd)
    assert result == [b"ping"]
    assert spinner.late_steps <= BOUND, spinner.late_steps


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_cross_thread_wakeup_is_run_while_a_task_spins(mode: RingOptions | None) -> None:
    """``run_sync_soon`` wakes the loop through the entry queue's eventfd, whose poll is armed
    already: its CQE is the kind of completion that nothing queued announces."""
    spinner = Spinner()

    def callback() -> None:
        spinner.done = True

    def wake_once(s: Spinner) -> None:
        if s.steps == 10 and not s.available:
            current_runner().entry.run_sync_soon(callback)
            s.available = True

    async def main() -> None:
        await spinner.spin(wake_once)

    run(main, mode)
    assert spinner.done
    assert spinner.late_steps <= BOUND, spinner.late_steps


def test_sleep_ends_while_a_task_spins() -> None:
    """Timers are checked after every batch that ran while any timer is armed."""
    spinner = Spinner()
    deadline: list[float] = []

    async def sleeper() -> None:
        deadline.append(current_time() + 0.002)
        await au.sleep_until(deadline[0])
        spinner.done = True

    def watch_clock(s: Spinner) -> None:
        if deadline and not s.available and current_time() >= deadline[0]:
            s.available = True

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            nursery.start_soon(spinner.spin, watch_clock)

    run(main, None)
    assert spinner.done
    assert spinner.late_steps <= 2, spinner.late_steps


def test_deadline_cancels_a_spinning_task() -> None:
    """A cancel-scope deadline reaches a task that only ever checkpoints."""

    async def main() -> int:
        steps = 0
        with au.move_on_after(0.002):
            while steps < SPIN_LIMIT:
                await au.checkpoint()
                steps += 1
        return steps

    assert au.run(main) < SPIN_LIMIT


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_to_thread_result_is_delivered_while_a_task_spins(mode: RingOptions | None) -> None:
    """A worker thread's result comes back through the entry queue.  (How soon the worker gets
    the GIL from the spinner is up to the interpreter, so this bounds nothing but starvation.)"""
    spinner = Spinner()
    worker_done = threading.Event()

    def work() -> str:
        worker_done.set()
        return "from the thread"

    result: list[str] = []

    async def waiter() -> None:
        result.append(await to_thread_run_sync(work))
        spinner.done = True

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(spinner.spin)

    run(main, mode)
    assert result == ["from the thread"]
    assert worker_done.is_set()


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_queued_operation_is_submitted_at_the_next_tick(mode: RingOptions | None) -> None:
    """Something queued on the ring is submitted after the batch that queued it, not after the
    budget: a NOP (which completes during its submission) wakes its task within a few steps."""
    spinner = Spinner()

    async def nop() -> None:
        spinner.available = True
        assert await au.wait_operation(current_runner().ring.nop()) == 0
        spinner.done = True

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(spinner.spin)
            nursery.start_soon(nop)

    run(main, mode)
    assert spinner.done
    assert spinner.late_steps <= 3, spinner.late_steps


def test_ki_reaches_a_spinning_main_task() -> None:
    """A pending KeyboardInterrupt is delivered at the main task's next checkpoint, whether or
    not the ring was polled."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT handling needs the main thread")
    import signal

    async def main() -> int:
        steps = 0
        try:
            while steps < SPIN_LIMIT:
                if steps == 5:
                    signal.raise_signal(signal.SIGINT)
                await au.checkpoint()
                steps += 1
        except KeyboardInterrupt:
            return steps
        return -1

    assert au.run(main) in (5, 6)
