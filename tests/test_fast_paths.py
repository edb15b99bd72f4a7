"""The hot paths' shortcuts keep the slow paths' semantics.

Each shortcut in the scheduler -- the checkpoint trap resumed with its task, a cancel scope's
inline enter and fast exit, the event's own wait list, a task joining and leaving its cancel
status inline, anyio's classes being the runtime's (built once) -- stands for a general code
path; these tests pin what the general path guarantees at the edges where the shortcut hands
over to it, on the runtime's API and through anyio.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import anyio_uring as au
from anyio_uring import Cancelled, CancelScope
from anyio_uring._core import current_runner
from anyio_uring._core._sync import Event

# ============================================================================ checkpoints


def test_checkpoint_sees_a_cancellation_made_during_its_schedule_point() -> None:
    """The cancel check follows the schedule point (as in trio): a task whose scope another
    task cancels while the first is between batches raises at that very checkpoint."""
    log: list[str] = []

    async def victim(scopes: list[CancelScope]) -> None:
        with CancelScope() as scope:
            scopes.append(scope)
            await au.checkpoint()  # the canceller runs now, in this batch
            log.append("not reached")
        log.append(f"caught={scope.cancelled_caught}")

    async def canceller(scopes: list[CancelScope]) -> None:
        scopes[0].cancel()
        log.append("cancelled")

    async def main() -> None:
        scopes: list[CancelScope] = []
        async with au.open_nursery() as nursery:
            nursery.start_soon(victim, scopes)
            nursery.start_soon(canceller, scopes)

    au.run(main)
    assert log == ["cancelled", "caught=True"]


def test_cancel_shielded_checkpoint_is_not_a_cancel_point() -> None:
    async def main() -> str:
        with CancelScope() as scope:
            scope.cancel()
            await au.cancel_shielded_checkpoint()
            with pytest.raises(Cancelled):
                await au.checkpoint()
        return "ok"

    assert au.run(main) == "ok"


def test_anyio_checkpoints_through_the_backend() -> None:
    async def main() -> list[str]:
        log = []
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anyio.lowlevel.cancel_shielded_checkpoint()
            log.append("shielded checkpoint passed")
            try:
                await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class():
                log.append("checkpoint raised")
                raise
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await anyio.sleep(0)
            except anyio.get_cancelled_exc_class():
                log.append("sleep(0) raised")
                raise
        return log

    expected = ["shielded checkpoint passed", "checkpoint raised", "sleep(0) raised"]
    assert anyio.run(main, backend="uring") == expected


# ============================================================================ cancel scopes


def test_leaving_a_shielded_scope_inside_a_cancelled_one() -> None:
    """The fast exit moves the task back under a cancelled status: the next checkpoint raises."""

    async def main() -> tuple[bool, bool]:
        with CancelScope() as outer:
            outer.cancel()
            with CancelScope(shield=True) as inner:
                await au.checkpoint()  # shielded: no raise
            await au.checkpoint()
            pytest.fail("the outer scope's cancellation was lost")
        return inner.cancelled_caught, outer.cancelled_caught

    assert au.run(main) == (False, True)


def test_a_scope_cancelled_without_a_checkpoint_catches_nothing() -> None:
    async def main() -> tuple[bool, bool]:
        with CancelScope() as scope:
            scope.cancel()
        return scope.cancel_called, scope.cancelled_caught

    assert au.run(main) == (True, False)


def test_exiting_a_deadline_scope_disarms_its_timer_and_restores_the_outer_deadline() -> None:
    async def main() -> tuple[float, float, int]:
        runner = current_runner()
        with au.move_on_at(1000.0):
            with au.move_on_at(500.0):
                inner = au.current_effective_deadline()
            outer = au.current_effective_deadline()
        live = sum(1 for entry in runner._timers if entry[2] is not None)
        return inner, outer, live

    assert au.run(main, clock=au.MockClock()) == (500.0, 1000.0, 0)


def test_a_scope_whose_deadline_has_passed_is_cancelled_on_entry() -> None:
    async def main() -> tuple[bool, str | None]:
        with CancelScope(deadline=-math.inf) as scope:
            await au.checkpoint()
        return scope.cancelled_caught, scope.cancel_reason

    assert au.run(main) == (True, "deadline")


def test_scopes_exited_out_of_order_still_fail_loudly() -> None:
    async def main() -> None:
        outer = CancelScope()
        inner = CancelScope()
        outer.__enter__()
        inner.__enter__()
        with pytest.raises(RuntimeError, match="still within a child scope"):
            outer.__exit__(None, None, None)
        inner.__exit__(None, None, None)  # abandoned by the misnesting: it just goes
        assert au.current_task()._cancel_status is not None
        with pytest.raises(RuntimeError, match="already been exited"):
            outer.__exit__(None, None, None)

    au.run(main)


def test_anyio_cancel_scope_keeps_its_arguments() -> None:
    """anyio's ``CancelScope(...)`` calls ``__init__`` again on the scope the backend built:
    that must neither reset nor rebuild it."""

    async def main() -> None:
        deadline = anyio.current_time() + 1000.0
        scope = anyio.CancelScope(deadline=deadline, shield=True)
        assert (scope.deadline, scope.shield, scope.cancel_called) == (deadline, True, False)
        assert isinstance(scope, anyio.CancelScope)
        with pytest.raises(TypeError):
            anyio.CancelScope(shield=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            anyio.CancelScope(deadline=math.nan)
        with anyio.move_on_after(1000) as timed:
            assert anyio.current_effective_deadline() == timed.deadline
        with anyio.fail_after(0):
            await anyio.sleep(1)  # raises TimeoutError at once

    with pytest.raises(TimeoutError):
        anyio.run(main, backend="uring")


def test_task_group_cancel_scope_is_the_nurserys_own() -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def child() -> None:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                log.append("child cancelled")
                raise

        async with anyio.create_task_group() as tg:
            assert isinstance(tg.cancel_scope, anyio.CancelScope)
            tg.start_soon(child)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        log.append(f"caught={tg.cancel_scope.cancelled_caught}")
        return log

    assert anyio.run(main, backend="uring") == ["child cancelled", "caught=True"]


# ============================================================================ events


@pytest.mark.parametrize("make", [Event, anyio.Event], ids=["runtime", "anyio"])
def test_event_wakes_waiters_oldest_first_and_forgets_cancelled_ones(make: Any) -> None:
    log: list[str] = []

    async def waiter(event: Any, name: str, scopes: dict[str, CancelScope]) -> None:
        with CancelScope() as scope:
            scopes[name] = scope
            await event.wait()
            log.append(name)
        if scope.cancelled_caught:
            log.append(f"{name} cancelled")

    async def main() -> None:
        event = make()
        scopes: dict[str, CancelScope] = {}
        async with au.open_nursery() as nursery:
            for name in "abcd":
                nursery.start_soon(waiter, event, name, scopes)
                await au.wait_all_tasks_blocked()
            assert _waiting(event) == 4
            scopes["b"].cancel()
            await au.wait_all_tasks_blocked()
            assert _waiting(event) == 3
            event.set()
            assert event.is_set()
            assert _waiting(event) == 0

    anyio.run(main, backend="uring") if make is anyio.Event else au.run(main)
    assert log == ["b cancelled", "a", "c", "d"]


def _waiting(event: Any) -> int:
    return event.statistics().tasks_waiting if isinstance(event, anyio.Event) else event.waiters


@pytest.mark.parametrize("make", [Event, anyio.Event], ids=["runtime", "anyio"])
def test_waiting_on_a_set_event_is_a_checkpoint(make: Any) -> None:
    async def main() -> list[str]:
        log: list[str] = []
        event = make()
        event.set()
        event.set()  # idempotent

        async def other() -> None:
            log.append("other ran")

        async with au.open_nursery() as nursery:
            nursery.start_soon(other)
            await event.wait()  # a schedule point: `other` runs first
            log.append("waited")
        with CancelScope() as scope:
            scope.cancel()
            await event.wait()  # a cancel point
            log.append("not reached")
        log.append(f"caught={scope.cancelled_caught}")
        return log

    runner: Any = (lambda m: anyio.run(m, backend="uring")) if make is anyio.Event else au.run
    assert runner(main) == ["other ran", "waited", "caught=True"]


def test_anyio_event_is_built_once_and_not_reset() -> None:
    async def main() -> None:
        event = anyio.Event()
        event.set()
        type(event).__init__(event)  # what anyio's Event() does after create_event()
        assert event.is_set()
        assert event.statistics().tasks_waiting == 0

    anyio.run(main, backend="uring")


# ============================================================================ spawning


def test_a_task_spawned_into_a_cancelled_nursery_runs_until_its_first_checkpoint() -> None:
    log: list[str] = []

    async def child() -> None:
        log.append("child started")
        try:
            await au.checkpoint()
        except Cancelled:
            log.append("child cancelled")
            raise

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.cancel_scope.cancel()
            nursery.start_soon(child)

    au.run(main)
    assert log == ["child started", "child cancelled"]


def test_anyio_create_task_copies_the_given_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def main() -> list[str]:
        seen: list[str] = []

        async def child() -> None:
            seen.append(var.get())
            var.set("changed by child")

        context = contextvars.copy_context()
        context.run(var.set, "from context")
        async with anyio.create_task_group() as tg:
            tg.create_task(child(), context=context)
            tg.start_soon(child)
        seen.append(context.run(var.get))
        return seen

    assert anyio.run(main, backend="uring") == ["from context", "unset", "from context"]


def test_spawning_something_that_is_not_a_coroutine_function_fails() -> None:
    def not_async() -> int:
        return 1

    async def main() -> None:
        async with au.open_nursery() as nursery:
            with pytest.raises(TypeError, match="must be an async function"):
                nursery.start_soon(not_async)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            with pytest.raises(TypeError):
                tg.create_task(not_async())  # type: ignore[arg-type]

    anyio.run(main, backend="uring")
