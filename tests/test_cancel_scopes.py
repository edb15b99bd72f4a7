# Nested `with` blocks are the subject here: keeping them apart shows which scope is which.
# ruff: noqa: SIM117, PT012
"""Cancel scopes with trio's semantics.

Most tests run twice, on trio and on anyio_uring, through a thin adapter (``lib``), so the
expected behaviour is trio's *observed* behaviour, not our reading of its docs.  Tests that only
make sense on anyio_uring (real SIGINT delivery, the loop's drain) say so.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import anyio_uring as au
from anyio_uring._core import current_runner
from dual import TRIO, URING, Lib, run_mock

# ============================================================================ the adapter


@pytest.fixture(params=[TRIO, URING], ids=["trio", "uring"])
def lib(request: pytest.FixtureRequest) -> Lib:
    return request.param  # type: ignore[no-any-return]


# ============================================================================ level-triggered


def test_cancellation_is_level_triggered(lib: Lib) -> None:
    async def main() -> int:
        raised = 0
        with lib.CancelScope() as scope:
            scope.cancel()
            for _ in range(3):
                try:
                    await lib.checkpoint()
                except lib.Cancelled:
                    raised += 1
            await lib.sleep(1)  # and once more: this one is not caught here
            pytest.fail("unreachable")
        assert scope.cancelled_caught
        assert scope.cancel_called
        await lib.checkpoint()  # outside the scope: nothing pending
        return raised

    assert run_mock(lib, main) == 3


def test_cancel_before_enter_fires_at_first_checkpoint(lib: Lib) -> None:
    async def main() -> list[str]:
        log = []
        scope = lib.CancelScope()
        scope.cancel()
        with scope:
            log.append("inside")  # no checkpoint yet: nothing raised
            await lib.checkpoint()
            log.append("not reached")
        log.append(f"caught={scope.cancelled_caught}")
        return log

    assert run_mock(lib, main) == ["inside", "caught=True"]


def test_cancel_wakes_a_sleeping_task(lib: Lib) -> None:
    async def main() -> tuple[float, bool]:
        with lib.CancelScope() as scope:

            async def canceller() -> None:
                await lib.sleep(3)
                scope.cancel()

            async with lib.open_nursery() as nursery:
                nursery.start_soon(canceller)
                await lib.sleep(100)
        return lib.current_time(), scope.cancelled_caught

    # the nursery lives inside the scope: its body is cancelled, the canceller already finished
    assert run_mock(lib, main) == (3.0, True)


def test_cancelled_is_not_an_exception(lib: Lib) -> None:
    async def main() -> bool:
        with lib.CancelScope() as scope:
            scope.cancel()
            try:
                await lib.checkpoint()
            except Exception:  # must not catch Cancelled
                pytest.fail("Cancelled caught by 'except Exception'")
        return scope.cancelled_caught

    assert issubclass(lib.Cancelled, BaseException)
    assert not issubclass(lib.Cancelled, Exception)
    assert run_mock(lib, main)


def test_cancel_without_checkpoint_is_not_caught(lib: Lib) -> None:
    async def main() -> tuple[bool, bool, bool, bool]:
        with lib.CancelScope() as quiet:
            quiet.cancel()  # no checkpoint follows
        with pytest.raises(KeyError):
            with lib.CancelScope() as failing:
                failing.cancel()
                raise KeyError("other")
        return quiet.cancel_called, quiet.cancelled_caught, failing.cancel_called, failing.cancelled_caught

    assert run_mock(lib, main) == (True, False, True, False)


# ============================================================================ shielding


def test_shield_hides_outer_cancellation(lib: Lib) -> None:
    async def main() -> list[str]:
        log = []
        with lib.CancelScope() as outer:
            outer.cancel()
            with lib.CancelScope(shield=True) as inner:
                await lib.sleep(1)
                log.append(f"slept under shield until {lib.current_time()}")
            log.append(f"inner caught={inner.cancelled_caught}")
            await lib.checkpoint()
            log.append("not reached")
        log.append(f"outer caught={outer.cancelled_caught}")
        return log

    assert run_mock(lib, main) == [
        "slept under shield until 1.0",
        "inner caught=False",
        "outer caught=True",
    ]


def test_unshielding_delivers_to_a_parked_task(lib: Lib) -> None:
    async def main() -> tuple[float, bool, bool]:
        with lib.CancelScope() as outer:
            with lib.CancelScope(shield=True) as inner:

                async def toggler() -> None:
                    await lib.sleep(1)
                    outer.cancel()  # hidden by the shield
                    await lib.sleep(1)
                    inner.shield = False  # now visible: the sleeper wakes with Cancelled

                async with lib.open_nursery() as nursery:
                    nursery.start_soon(toggler)
                    await lib.sleep(100)
        return lib.current_time(), inner.cancelled_caught, outer.cancelled_caught

    assert run_mock(lib, main) == (2.0, False, True)


def test_shield_must_be_bool(lib: Lib) -> None:
    scope = lib.CancelScope()
    with pytest.raises(TypeError):
        scope.shield = "yes"
    if lib is URING:  # stricter than trio, which only checks the setter
        with pytest.raises(TypeError):
            lib.CancelScope(shield=1)


def test_shielded_cancel_of_inner_scope_still_applies(lib: Lib) -> None:
    async def main() -> bool:
        with lib.CancelScope(shield=True) as scope:
            scope.cancel()  # shielding hides *outer* cancellation only
            await lib.checkpoint()
        return scope.cancelled_caught

    assert run_mock(lib, main)


# ============================================================================ deadlines


def test_deadline_moved_earlier_while_inside(lib: Lib) -> None:
    async def main() -> tuple[float, bool]:
        with lib.CancelScope(deadline=lib.current_time() + 10) as scope:

            async def mover() -> None:
                await lib.sleep(1)
                scope.deadline = lib.current_time() + 2

            async with lib.open_nursery() as nursery:
                nursery.start_soon(mover)
                await lib.sleep(100)
        return lib.current_time(), scope.cancelled_caught

    assert run_mock(lib, main) == (3.0, True)


def test_deadline_moved_later_and_removed(lib: Lib) -> None:
    async def main() -> list[Any]:
        log: list[Any] = []
        with lib.move_on_after(5) as scope:
            await lib.sleep(1)
            scope.deadline += 10  # now 15
            await lib.sleep(10)
            log.append(lib.current_time())  # 11: the old deadline did not fire
            scope.deadline = math.inf
            await lib.sleep(20)
            log.append(lib.current_time())  # 31
        log.append(scope.cancelled_caught)
        return log

    assert run_mock(lib, main) == [11.0, 31.0, False]


def test_deadline_set_in_the_past_cancels_at_next_checkpoint(lib: Lib) -> None:
    async def main() -> tuple[bool, bool, float]:
        with lib.CancelScope() as scope:
            await lib.sleep(1)
            scope.deadline = lib.current_time() - 1
            called = scope.cancel_called
            await lib.checkpoint()
        return called, scope.cancelled_caught, lib.current_time()

    assert run_mock(lib, main) == (True, True, 1.0)


def test_cancel_called_reports_a_passed_deadline_before_any_checkpoint(lib: Lib) -> None:
    async def main(clock: Any) -> list[bool]:
        log = []
        with lib.CancelScope(deadline=lib.current_time() + 1) as scope:
            log.append(scope.cancel_called)
            clock.jump(2)  # time passes without a checkpoint
            log.append(scope.cancel_called)
            await lib.checkpoint()
        log.append(scope.cancelled_caught)
        unentered = lib.CancelScope(deadline=lib.current_time() - 1)
        log.append(unentered.cancel_called)
        return log

    clock = lib.MockClock()  # no autojump: time moves only when told
    assert lib.run(main, clock, clock=clock) == [False, True, True, True]


def test_relative_deadline(lib: Lib) -> None:
    async def main() -> list[Any]:
        log: list[Any] = []
        scope = lib.CancelScope(relative_deadline=5)
        log.append(scope.relative_deadline)
        await lib.sleep(3)  # the clock runs before entry: the deadline is relative to entry
        with scope:
            log.append(scope.deadline)
            await lib.sleep(10)
        log.append(lib.current_time())
        with pytest.raises(ValueError):
            lib.CancelScope(relative_deadline=-1)
        with pytest.raises(ValueError):
            lib.CancelScope(deadline=1, relative_deadline=1)
        return log

    assert run_mock(lib, main) == [5.0, 8.0, 8.0]


def test_invalid_deadlines(lib: Lib) -> None:
    with pytest.raises(ValueError):
        lib.CancelScope(deadline=math.nan)
    with pytest.raises(ValueError):
        lib.move_on_after(-1)
    with pytest.raises(ValueError):
        lib.CancelScope().deadline = math.nan


def test_move_on_and_fail(lib: Lib) -> None:
    async def main() -> list[Any]:
        log: list[Any] = []
        with lib.move_on_after(2) as scope:
            await lib.sleep(5)
        log.append((lib.current_time(), scope.cancelled_caught))
        with lib.move_on_at(lib.current_time() + 1) as scope:
            await lib.sleep(0.5)
        log.append((lib.current_time(), scope.cancelled_caught))
        with pytest.raises(lib.TooSlow):
            with lib.fail_after(1):
                await lib.sleep(5)
        log.append(lib.current_time())
        with lib.fail_at(lib.current_time() + 1):
            await lib.sleep(0.25)
        log.append(lib.current_time())
        return log

    assert run_mock(lib, main) == [(2.0, True), (2.5, False), 3.5, 3.75]


def test_sleep_rejects_nan_and_negative(lib: Lib) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await lib.sleep(-1)
        with pytest.raises(ValueError):
            await lib.sleep(math.nan)

    run_mock(lib, main)


# ============================================================================ cancelled_caught: who catches


def test_outer_cancelled_inner_not(lib: Lib) -> None:
    async def main() -> tuple[bool, bool]:
        with lib.CancelScope() as outer:
            with lib.CancelScope() as inner:
                outer.cancel()
                await lib.checkpoint()
        return outer.cancelled_caught, inner.cancelled_caught

    assert run_mock(lib, main) == (True, False)


def test_both_cancelled_the_outer_catches(lib: Lib) -> None:
    # The inner scope does not catch while its parent's cancellation is visible to it.
    async def main() -> tuple[bool, bool]:
        with lib.CancelScope() as outer:
            with lib.CancelScope() as inner:
                inner.cancel()
                outer.cancel()
                await lib.checkpoint()
        return outer.cancelled_caught, inner.cancelled_caught

    assert run_mock(lib, main) == (True, False)


def test_inner_cancelled_first_outer_later(lib: Lib) -> None:
    # Cancelled raised because of the inner scope, but by exit time the outer one is cancelled
    # too: the inner scope lets it through and the outer one catches it.
    async def main() -> tuple[list[str], bool, bool]:
        log = []
        with lib.CancelScope() as outer:
            with lib.CancelScope() as inner:
                inner.cancel()
                try:
                    await lib.checkpoint()
                finally:
                    outer.cancel()
            log.append("after inner (not reached)")
        return log, outer.cancelled_caught, inner.cancelled_caught

    assert run_mock(lib, main) == ([], True, False)


def test_shielded_inner_catches_its_own(lib: Lib) -> None:
    async def main() -> tuple[bool, bool]:
        with lib.CancelScope() as outer:
            outer.cancel()
            with lib.CancelScope(shield=True) as inner:
                inner.cancel()
                await lib.checkpoint()
            # outer still cancelled: the next checkpoint raises
            await lib.checkpoint()
        return outer.cancelled_caught, inner.cancelled_caught

    assert run_mock(lib, main) == (True, True)


def test_deadline_of_inner_scope_caught_by_inner(lib: Lib) -> None:
    async def main() -> tuple[bool, bool, float]:
        with lib.move_on_after(10) as outer:
            with lib.move_on_after(1) as inner:
                await lib.sleep(5)
            await lib.sleep(2)
        return outer.cancelled_caught, inner.cancelled_caught, lib.current_time()

    assert run_mock(lib, main) == (False, True, 3.0)


def test_scope_strips_cancelled_from_a_group(lib: Lib) -> None:
    async def main() -> tuple[bool, str]:
        with pytest.raises(BaseExceptionGroup) as info:
            with lib.CancelScope() as scope:
                scope.cancel()
                try:
                    await lib.checkpoint()
                except lib.Cancelled as cancelled:
                    raise BaseExceptionGroup("mixed", [cancelled, KeyError("k")]) from None
        return scope.cancelled_caught, repr([type(e).__name__ for e in info.value.exceptions])

    assert run_mock(lib, main) == (True, "['KeyError']")


# ============================================================================ effective deadline


def test_current_effective_deadline(lib: Lib) -> None:
    async def main() -> list[float]:
        log = [lib.current_effective_deadline()]
        with lib.move_on_at(10):
            log.append(lib.current_effective_deadline())
            with lib.move_on_at(20):
                log.append(lib.current_effective_deadline())
                with lib.move_on_at(5):
                    log.append(lib.current_effective_deadline())
                with lib.CancelScope(deadline=30, shield=True):
                    log.append(lib.current_effective_deadline())
            with lib.CancelScope() as cancelled:
                cancelled.cancel()
                log.append(lib.current_effective_deadline())
                with lib.CancelScope(shield=True):
                    log.append(lib.current_effective_deadline())
        return log

    assert run_mock(lib, main) == [math.inf, 10, 10, 5, 30, -math.inf, math.inf]


# ============================================================================ misuse


def test_scope_cannot_be_reentered(lib: Lib) -> None:
    async def main() -> None:
        scope = lib.CancelScope()
        with scope:
            with pytest.raises(RuntimeError, match="single 'with' block"):
                with scope:
                    pass
        with pytest.raises(RuntimeError, match="single 'with' block"):
            with scope:
                pass

    run_mock(lib, main)


def test_misnested_exit_is_reported(lib: Lib) -> None:
    async def main() -> list[Any]:
        outer, inner = lib.CancelScope(), lib.CancelScope()
        outer.__enter__()
        inner.__enter__()
        log: list[Any] = []
        with pytest.raises(RuntimeError, match="Cancel scope stack corrupted"):
            outer.__exit__(None, None, None)
        # The task is moved out of both scopes; the abandoned inner one raises nothing more.
        log.append(inner.cancel_called)
        await lib.checkpoint()
        log.append(inner.__exit__(None, None, None))
        await lib.checkpoint()
        log.append((outer.cancelled_caught, inner.cancelled_caught))
        return log

    assert run_mock(lib, main) == [False, True, (False, False)]


def test_exit_from_another_task_is_refused(lib: Lib) -> None:
    errors: list[str] = []

    async def main() -> None:
        scope = lib.CancelScope()
        scope.__enter__()

        async def intruder() -> None:
            try:
                scope.__exit__(None, None, None)
            except RuntimeError as exc:
                errors.append(str(exc))

        async with lib.open_nursery() as nursery:
            nursery.start_soon(intruder)
        # The scope is gone now (on trio too); exiting it again is refused.
        with pytest.raises(RuntimeError, match="already been exited"):
            scope.__exit__(None, None, None)

    if lib is TRIO:  # trio also reports, at task exit, that its scope stack is corrupted
        with pytest.raises(RuntimeError, match="closed before the task exited"):
            run_mock(lib, main)
    else:
        run_mock(lib, main)
    assert len(errors) == 1
    assert "Cancel scope stack corrupted" in errors[0]


def test_double_exit_is_refused(lib: Lib) -> None:
    async def main() -> None:
        scope = lib.CancelScope()
        scope.__enter__()
        scope.__exit__(None, None, None)
        with pytest.raises(RuntimeError):
            scope.__exit__(None, None, None)

    run_mock(lib, main)


# ============================================================================ clocks and idleness


def test_mock_clock_autojump_makes_sleeps_instant(lib: Lib) -> None:
    async def main() -> float:
        async with lib.open_nursery() as nursery:
            for d in (1000, 3000, 2000):
                nursery.start_soon(lib.sleep, d)
            await lib.sleep(500)
        return lib.current_time()

    start = time.perf_counter()
    assert run_mock(lib, main) == 3000.0
    assert time.perf_counter() - start < 2


def test_mock_clock_jump_and_validation(lib: Lib) -> None:
    clock = lib.MockClock()
    if lib is URING:  # stricter than trio
        with pytest.raises(ValueError):
            lib.MockClock(autojump_threshold=-1)

    async def main() -> float:
        start = lib.current_time()
        clock.jump(5)
        with pytest.raises(ValueError):
            clock.jump(-1)
        return lib.current_time() - start

    assert lib.run(main, clock=clock) == 5.0


def test_autojump_waits_for_io_in_flight() -> None:
    """anyio_uring only, and unlike trio (whose autojump skips over pending I/O): the mock clock
    jumps only when no operation is in flight, so a deadline around real I/O is not hit
    instantly -- the recv gets the data a thread sends 0.2 s (real time) later."""

    async def main() -> tuple[bool, float, int]:
        a, b = socket.socketpair()
        try:
            timer = threading.Timer(0.2, b.send, (b"late",))
            timer.start()
            with au.move_on_after(5) as scope:
                n = await au.wait_operation(current_runner().ring.recv(a.fileno(), bytearray(8)))
            timer.join()
            return scope.cancelled_caught, au.current_time(), n
        finally:
            a.close()
            b.close()

    assert au.run(main, clock=au.MockClock(autojump_threshold=0)) == (False, 0.0, 4)


def test_wait_all_tasks_blocked(lib: Lib) -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def busy(name: str, steps: int) -> None:
            for _ in range(steps):
                await lib.checkpoint()
            log.append(f"{name} parked")
            await lib.sleep_forever()

        async with lib.open_nursery() as nursery:
            nursery.start_soon(busy, "a", 50)
            nursery.start_soon(busy, "b", 5)
            await lib.wait_all_tasks_blocked()
            log.append("all blocked")
            nursery.cancel_scope.cancel()
        return log

    assert run_mock(lib, main) == ["b parked", "a parked", "all blocked"]


def test_wait_all_tasks_blocked_is_cancellable(lib: Lib) -> None:
    async def main() -> bool:
        with lib.move_on_after(0.2) as scope:

            async def spinner() -> None:
                while True:
                    await lib.checkpoint()

            async with lib.open_nursery() as nursery:
                nursery.start_soon(spinner)
                await lib.wait_all_tasks_blocked()
        return scope.cancelled_caught

    # the spinner never blocks; only the deadline ends the wait (real time: no autojump)
    assert lib.run(main)


# ============================================================================ real SIGINT (uring only)

KI_SCRIPT = r"""
import json, os, signal, socket, sys, threading
import anyio_uring as au
from anyio_uring._core import current_runner

mode = sys.argv[1]
state = {}

async def main():
    runner = current_runner()
    state["ring"] = runner.ring
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    if mode == "await-loop":
        while True:
            await au.checkpoint()
    elif mode == "blocked-recv":
        a, b = socket.socketpair()
        state["socks"] = (a, b)
        buf = bytearray(64)
        op = runner.ring.recv(a.fileno(), buf)
        state["op"], state["buf"] = op, buf
        await au.wait_operation(op)
    elif mode == "thread":
        # parked on a worker thread that cannot be interrupted (abort answers FAILED): the
        # interrupt must survive until the thread returns, then fire at the next checkpoint
        import time
        from anyio_uring._core._threads import to_thread_run_sync
        state["returned"] = await to_thread_run_sync(time.sleep, 0.6)
        await au.checkpoint()
        state["after checkpoint"] = True
    elif mode == "nursery":
        a, b = socket.socketpair()
        state["socks"] = (a, b)
        async def child(buf):
            await au.wait_operation(runner.ring.recv(a.fileno(), buf))
        async with au.open_nursery() as nursery:
            nursery.start_soon(child, bytearray(64))
            nursery.start_soon(au.sleep_forever)
            await au.sleep_forever()

out = {"mode": mode}
try:
    au.run(main)
    out["raised"] = None
except BaseException as exc:
    out["raised"] = type(exc).__name__
    if isinstance(exc, BaseExceptionGroup):
        out["group"] = sorted(type(e).__name__ for e in exc.exceptions)
ring = state["ring"]
out["ring_closed"] = ring.closed
out["inflight"] = ring.inflight
out["bytes_pinned"] = ring.bytes_pinned
op = state.get("op")
if op is not None:
    out["op_result"] = op.result
out["after checkpoint"] = state.get("after checkpoint", False)
print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["await-loop", "blocked-recv", "thread", "nursery"])
def test_sigint_stops_the_program_and_drains(mode: str) -> None:
    """A real SIGINT, sent from a timer thread, stops a program spinning through checkpoints,
    one blocked in the kernel on an idle recv, one waiting for a worker thread (delivered when
    the thread returns, at the next checkpoint), and one waiting in a nursery whose children are
    blocked: ``run()`` raises KeyboardInterrupt (grouped, from inside a nursery) and returns only
    after every operation was drained.  (A subprocess: the test runner keeps its own SIGINT.)"""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", KI_SCRIPT, mode], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if mode == "nursery":  # as on trio: the nursery reports it in a group
        assert out["raised"] == "BaseExceptionGroup", out
        assert out["group"] == ["KeyboardInterrupt"], out
    else:
        assert out["raised"] == "KeyboardInterrupt", out
    assert out["ring_closed"], out
    assert out["inflight"] == 0, out
    assert out["bytes_pinned"] == 0, out
    if mode == "blocked-recv":
        assert out["op_result"] == -125, out  # -ECANCELED: drained before run() returned
    assert not out["after checkpoint"], out
    assert time.perf_counter() - start < 30
