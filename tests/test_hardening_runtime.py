"""Runtime hardening: far deadlines, async-generator hooks, worker threads and ``from_thread``
calls at the end of a run, the main task's TaskInfo.

Expected behaviour is trio's (several tests run the same scenario on trio through anyio to show
it).  Tests that could hang on a broken runtime run in a subprocess with a timeout, or join their
threads with a timeout, so that a regression fails instead of hanging.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

import anyio_uring as au
from anyio_uring._core import current_runner
from anyio_uring._core._threads import to_thread_run_sync
from anyio_uring._ring import Ring

BOTH = pytest.mark.parametrize("backend", ["uring", "trio"])
EXHAUSTED = "garbage collected before it had been exhausted"


def run_uring(fn: Callable[..., Awaitable[Any]], *args: Any, **options: Any) -> Any:
    return anyio.run(fn, *args, backend="uring", backend_options=options or None)


def run_script(script: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; return the JSON object it prints last."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script hung (killed after {timeout} s); stderr: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ============================================================================ 1. far deadlines


async def _far_sleep_maxsize() -> None:
    await anyio.sleep(sys.maxsize)


async def _far_sleep_1e300() -> None:
    await anyio.sleep(1e300)


async def _far_move_on_after() -> None:
    with anyio.move_on_after(1e10):
        await anyio.sleep_forever()


async def _far_fail_after() -> None:
    with anyio.fail_after(10**10):
        await anyio.sleep_forever()


FAR_WAITS = {
    "sleep(sys.maxsize)": _far_sleep_maxsize,
    "sleep(1e300)": _far_sleep_1e300,
    "move_on_after(1e10)": _far_move_on_after,
    "fail_after(10**10)": _far_fail_after,
}


@pytest.mark.parametrize("masked", [False, True], ids=["ext_arg", "ext_arg-masked"])
@pytest.mark.parametrize("far", list(FAR_WAITS))
def test_far_deadline_as_the_earliest_timer_does_not_crash_the_loop(far: str, masked: bool) -> None:
    """The far deadline is the only timer while the loop blocks (the main task waits for a
    worker thread, which needs no timer); the thread's result then ends the run."""

    async def main() -> None:
        if masked:
            assert not current_runner().ring.support.ext_arg
        async with anyio.create_task_group() as tg:
            tg.start_soon(FAR_WAITS[far])
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(time.sleep, 0.02)
            tg.cancel_scope.cancel()

    options = {"disable": "ext_arg"} if masked else {}
    run_uring(main, **options)


@pytest.mark.parametrize("masked", [False, True], ids=["ext_arg", "ext_arg-masked"])
@pytest.mark.parametrize("timeout", [1e10, float(sys.maxsize), 1e300])
def test_ring_wait_accepts_any_finite_timeout(
    make_ring: Callable[..., Ring], timeout: float, masked: bool
) -> None:
    ring = make_ring(disable={"ext_arg"} if masked else frozenset())
    op = ring.nop()
    assert ring.wait(timeout=timeout) == 1
    assert op.done
    assert op.result == 0


def test_ring_wait_rejects_a_nan_timeout(ring: Ring) -> None:
    with pytest.raises(ValueError, match="NaN"):
        ring.wait(timeout=float("nan"))


# ============================================================================ 3. async generators


async def abandon(agen: AsyncGenerator[Any]) -> None:
    """``async for ... : break`` -- the generator is dropped unfinished when this returns."""
    async for _ in agen:
        break


async def numbers(log: list[Any], closed: anyio.Event | None = None) -> AsyncGenerator[int]:
    """Yields 1, 2; its ``finally`` needs the loop: it records where it runs, then sleeps."""
    try:
        yield 1
        yield 2
    finally:
        log.append(("finally", sniffio.current_async_library(), anyio.get_current_task().name))
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            log.append("plain await: cancelled")
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)
            log.append("slept (shielded)")
        if closed is not None:
            closed.set()


@BOTH
def test_abandoned_async_generator_is_closed_inside_the_loop(backend: str) -> None:
    async def main() -> tuple[list[Any], str | None]:
        log: list[Any] = []
        closed = anyio.Event()
        with pytest.warns(ResourceWarning, match=EXHAUSTED):
            await abandon(numbers(log, closed))
        log.append("main: after break")
        with anyio.fail_after(5):
            await closed.wait()
        return log, anyio.get_current_task().name

    log, main_name = anyio.run(main, backend=backend)
    assert log[0] == "main: after break"
    step, library, task_name = log[1]
    assert (step, library) == ("finally", backend)
    assert task_name != main_name
    assert "numbers" in task_name  # its own system task, named after the generator
    # Finalized like trio: in a cancelled, shielded scope -- only shielded waits can run.
    assert log[2:] == ["plain await: cancelled", "slept (shielded)"]


@BOTH
def test_abandoned_async_generator_releases_its_subprocess(backend: str) -> None:
    """The reviewer's case: what the generator holds (a child process, its pipes) is closed
    by its own ``async with`` when the loop finalizes it -- not leaked."""
    child = "import time; print('ready', flush=True); time.sleep(60)"

    async def lines(box: list[Any], closed: anyio.Event) -> AsyncGenerator[bytes]:
        try:
            async with await anyio.open_process([sys.executable, "-c", child]) as proc:
                box.append(proc)
                async for chunk in proc.stdout:  # type: ignore[union-attr]
                    yield chunk
        finally:
            closed.set()

    async def main() -> int | None:
        box: list[Any] = []
        closed = anyio.Event()
        with pytest.warns(ResourceWarning, match=EXHAUSTED):
            await abandon(lines(box, closed))
        with anyio.fail_after(10):
            await closed.wait()
        returncode: int | None = box[0].returncode
        return returncode

    assert anyio.run(main, backend=backend) is not None  # killed and reaped


@BOTH
def test_surviving_async_generators_are_closed_at_the_end_of_the_run(backend: str) -> None:
    log: list[Any] = []
    keep: list[AsyncGenerator[int]] = []

    async def main() -> None:
        gen = numbers(log)
        assert await gen.asend(None) == 1
        keep.append(gen)  # still referenced when the run ends: no GC finalization
        log.append("main: done")

    anyio.run(main, backend=backend)
    assert log[0] == "main: done"
    assert log[1][:2] == ("finally", backend)  # closed inside the loop, before run() returned
    assert log[2:] == ["plain await: cancelled", "slept (shielded)"]


def test_survivors_are_closed_after_the_system_tasks_have_finished() -> None:
    """trio's order: main task done -> system tasks cancelled and finished -> survivors closed
    (none of them can then be in the middle of an iteration) -> shutdown."""
    log: list[str] = []
    keep: list[AsyncGenerator[int]] = []

    async def gen() -> AsyncGenerator[int]:
        try:
            yield 1
        finally:
            log.append(f"generator closed ({sniffio.current_async_library()})")

    async def system_task() -> None:
        try:
            await au.sleep_forever()
        except au.Cancelled:
            log.append("system task cancelled")
            raise

    async def main() -> None:
        current_runner().spawn_system_task(system_task)
        agen = gen()
        await agen.asend(None)
        keep.append(agen)
        log.append("main: done")

    au.run(main)
    assert log == ["main: done", "system task cancelled", "generator closed (uring)"]


def test_hooks_are_installed_during_the_run_and_restored_after_it() -> None:
    def firstiter(agen: Any) -> None:
        pass

    def finalizer(agen: Any) -> None:
        pass

    seen_inside: list[Any] = []

    async def main() -> None:
        seen_inside.append(sys.get_asyncgen_hooks())

    async def crash() -> None:
        raise ZeroDivisionError

    async def crash_the_loop() -> None:
        current_runner().entry.run_sync_soon(lambda: 1 / 0)  # crashes the loop, not a task
        await au.sleep_forever()

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter, finalizer)
    try:
        run_uring(main)
        inside = seen_inside[0]
        assert inside.firstiter not in (None, firstiter)
        assert inside.finalizer not in (None, finalizer)
        assert sys.get_asyncgen_hooks() == (firstiter, finalizer)
        with pytest.raises(ZeroDivisionError):
            run_uring(crash)
        assert sys.get_asyncgen_hooks() == (firstiter, finalizer)
        with pytest.raises(au.UringInternalError) as info:
            au.run(crash_the_loop)
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        assert sys.get_asyncgen_hooks() == (firstiter, finalizer)
    finally:
        sys.set_asyncgen_hooks(*old)


def test_generator_first_iterated_outside_our_tasks_goes_to_the_previous_hooks() -> None:
    """A generator first iterated on the loop thread but outside any task (here: in a
    ``from_thread.run_sync`` callback) is not ours: the previous hooks get it, and the loop does
    not finalize it."""
    calls: list[tuple[str, str]] = []
    log: list[Any] = []

    def firstiter(agen: Any) -> None:
        calls.append(("firstiter", agen.__qualname__))

    def finalizer(agen: Any) -> None:
        calls.append(("finalizer", agen.__qualname__))  # and leave it unclosed

    def first_step(agen: AsyncGenerator[int]) -> None:
        step = agen.asend(None)
        with pytest.raises(StopIteration) as stop:
            step.send(None)
        assert stop.value.value == 1

    async def main() -> None:
        agen = numbers(log)
        await anyio.to_thread.run_sync(anyio.from_thread.run_sync, first_step, agen)
        assert calls == [("firstiter", "numbers")]
        del agen
        gc.collect()
        assert calls == [("firstiter", "numbers"), ("finalizer", "numbers")]
        await anyio.sleep(0.01)  # give a (wrong) loop finalization the time to happen

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter, finalizer)
    try:
        run_uring(main)
    finally:
        sys.set_asyncgen_hooks(*old)
    assert log == []  # its finally never ran: the previous finalizer chose not to close it


@pytest.fixture
def runner() -> Iterator[au.Runner]:
    runner = au.Runner()
    try:
        yield runner
    finally:
        runner.close()


def test_hooks_with_a_reentered_runner(runner: au.Runner) -> None:
    """A re-enterable runner (anyio's test runner) installs the hooks for each run and restores
    them in between; a generator started in one run stays usable in the next (an async-generator
    fixture), one dropped between runs is closed by the next run, and survivors at ``close()``."""
    outside = sys.get_asyncgen_hooks()
    log: list[Any] = []
    gens: dict[str, AsyncGenerator[int]] = {}

    async def start(name: str) -> None:
        gens[name] = numbers(log)
        assert await gens[name].asend(None) == 1

    async def resume() -> None:
        assert await gens["fixture"].asend(None) == 2

    runner.run(start, "fixture")
    assert sys.get_asyncgen_hooks() == outside
    runner.run(resume)
    assert log == []  # not finalized at the end of a run

    runner.run(start, "dropped")
    with pytest.warns(ResourceWarning, match=EXHAUSTED):
        gens.pop("dropped")  # the last reference
    assert log == []  # queued: only a running loop can close it

    async def wait_for_it() -> None:
        with au.fail_after(5):
            while "slept (shielded)" not in log:
                await au.sleep(0.001)

    runner.run(wait_for_it)
    assert log[0][:2] == ("finally", "uring")
    log.clear()
    runner.close()
    assert log[0][:2] == ("finally", "uring")  # the "fixture" survivor, closed at close()
    assert sys.get_asyncgen_hooks() == outside


# ============================================================================ 4. abandoned threads

ABANDONED_THEN_CALLS_BACK = """
    import json, threading, anyio

    release, finished, calls = threading.Event(), threading.Event(), []

    def worker():
        release.wait()
        for call in (lambda: anyio.from_thread.run(anyio.sleep, 0), lambda: anyio.from_thread.run_sync(int)):
            try:
                call()
                calls.append("returned")
            except anyio.RunFinishedError:
                calls.append("RunFinishedError")
            except BaseException as exc:
                calls.append(repr(exc))
        finished.set()

    async def main():
        with anyio.move_on_after(0.05):
            await anyio.to_thread.run_sync(worker, abandon_on_cancel=True)

    anyio.run(main, backend="uring")
    returned_first = not finished.is_set()
    release.set()
    finished.wait(30)
    print(json.dumps({"returned_first": returned_first, "calls": calls}))
"""


def test_run_does_not_wait_for_an_abandoned_thread() -> None:
    """The thread only proceeds once ``run()`` has returned; its later calls into the finished
    loop raise RunFinishedError (trio: the same)."""
    result = run_script(ABANDONED_THEN_CALLS_BACK)
    assert result == {"returned_first": True, "calls": ["RunFinishedError", "RunFinishedError"]}


CALLS_BACK_WHILE_THE_LOOP_CLOSES = """
    import functools, json, threading, anyio, anyio_uring

    started, finished, outcome = threading.Event(), threading.Event(), []

    def worker():
        started.set()
        try:
            while True:
                anyio.from_thread.run(anyio.sleep, 0)
        except (anyio.RunFinishedError, anyio_uring.Cancelled) as exc:
            outcome.append(type(exc).__name__)
        except BaseException as exc:
            outcome.append(repr(exc))
        finished.set()

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(anyio.to_thread.run_sync, worker, abandon_on_cancel=True))
            await anyio.to_thread.run_sync(started.wait)
            tg.cancel_scope.cancel()

    for _ in range(5):
        started.clear(), finished.clear()
        anyio.run(main, backend="uring")
        finished.wait(30)
    print(json.dumps({"outcome": outcome}))
"""


def test_abandoned_thread_calling_back_during_shutdown_does_not_deadlock() -> None:
    """The thread keeps calling ``from_thread.run`` while the loop shuts down: the loop must
    neither wait for it nor leave its call unanswered."""
    result = run_script(CALLS_BACK_WHILE_THE_LOOP_CLOSES)
    assert len(result["outcome"]) == 5
    assert set(result["outcome"]) <= {"RunFinishedError", "Cancelled"}, result


def test_a_worker_whose_task_waits_for_it_is_still_joined() -> None:
    """Structured concurrency: a worker thread that was *not* abandoned -- here one started by a
    system task, cancelled only when the runner closes -- is waited for and joined."""
    threads: list[threading.Thread] = []
    finished = threading.Event()
    started = threading.Event()

    def slow() -> None:
        threads.append(threading.current_thread())
        started.set()
        time.sleep(0.2)
        finished.set()

    async def system_task() -> None:
        await to_thread_run_sync(slow)

    async def main() -> None:
        current_runner().spawn_system_task(system_task)
        await to_thread_run_sync(started.wait)

    au.run(main)
    assert finished.is_set()
    for thread in threads:
        assert not thread.is_alive()


# ============================================================================ 5. from_thread races


@pytest.mark.parametrize("call", ["run", "run_sync"])
def test_from_thread_racing_the_end_of_the_run_returns_or_raises(call: str) -> None:
    """A plain thread calls into the loop (by token) in a loop while the run ends, many times:
    every call must return or raise; none may block forever."""
    allowed: tuple[type[BaseException], ...] = (anyio.RunFinishedError,)
    if call == "run":
        allowed += (au.Cancelled,)  # its task was cancelled by the loop's shutdown (trio: same)

    def hammer(token: anyio.lowlevel.EventLoopToken, outcome: list[BaseException]) -> None:
        try:
            while True:
                if call == "run":
                    anyio.from_thread.run(anyio.lowlevel.checkpoint, token=token)
                else:
                    anyio.from_thread.run_sync(int, token=token)
        except BaseException as exc:
            outcome.append(exc)

    async def main(outcome: list[BaseException]) -> threading.Thread:
        token = anyio.lowlevel.current_token()
        thread = threading.Thread(target=hammer, args=(token, outcome), daemon=True)
        thread.start()
        await anyio.sleep(0)
        return thread

    for attempt in range(150):
        outcome: list[BaseException] = []
        thread = run_uring(main, outcome)
        thread.join(10)
        assert not thread.is_alive(), f"attempt {attempt}: from_thread.{call} blocked after the run ended"
        assert isinstance(outcome[0], allowed), f"attempt {attempt}: {outcome[0]!r}"


# ============================================================================ 15a. TaskInfo


def test_main_task_has_no_parent_task() -> None:
    """Deliberately *not* trio's value.  Through anyio, trio reports the main task's parent as
    its hidden ``<init>`` task; our runtime has no such task (``Runner.run`` drives the main
    task itself), so, as on asyncio, the main task's ``parent_id`` is ``None`` and every
    ``parent_id`` that is not ``None`` names a task that exists."""

    async def main() -> None:
        me = anyio.get_current_task()
        assert me.parent_id is None
        children: list[anyio.TaskInfo] = []

        async def child() -> None:
            children.append(anyio.get_current_task())
            await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            await anyio.wait_all_tasks_blocked()
            running = {task.id for task in anyio.get_running_tasks()}
            assert children[0].parent_id == me.id
            assert all(t.parent_id in running for t in anyio.get_running_tasks() if t.parent_id is not None)

    run_uring(main)
