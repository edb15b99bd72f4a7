"""Nurseries (task groups) with trio's semantics, checked side by side on trio and anyio_uring
through a thin adapter (``lib``): failure propagation, waiting for all children, the shape of
the exception groups, ``start()`` / ``task_status.started()`` and their error cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dual import TRIO, URING, Lib, run_mock


@pytest.fixture(params=[TRIO, URING], ids=["trio", "uring"])
def lib(request: pytest.FixtureRequest) -> Lib:
    return request.param  # type: ignore[no-any-return]


def shape(exc: BaseException) -> Any:
    """A comparable picture of an exception (group): type names, nested, sorted."""
    if isinstance(exc, BaseExceptionGroup):
        return (type(exc).__name__, sorted((shape(e) for e in exc.exceptions), key=repr))
    return type(exc).__name__ + (f"({exc.args[0]!r})" if exc.args else "")


def run_expecting(lib: Lib, fn: Callable[..., Any]) -> tuple[Any, list[str]]:
    """Run ``fn(log)``; return (shape of what run() raised or ('returned', value), log)."""
    log: list[str] = []
    try:
        value = run_mock(lib, fn, log)
    except BaseException as exc:
        return shape(exc), log
    return ("returned", value), log


# ============================================================================ failure and waiting


def test_failing_child_cancels_siblings_and_body(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def failing() -> None:
            await lib.sleep(1)
            raise ValueError("boom")

        async def sibling() -> None:
            try:
                await lib.sleep(10)
            except lib.Cancelled:
                log.append(f"sibling cancelled at {lib.current_time()}")
                raise

        async with lib.open_nursery() as nursery:
            nursery.start_soon(failing)
            nursery.start_soon(sibling)
            try:
                await lib.sleep(10)
            except lib.Cancelled:
                log.append(f"body cancelled at {lib.current_time()}")
                raise

    result, log = run_expecting(lib, main)
    assert result == ("ExceptionGroup", ["ValueError('boom')"])
    assert sorted(log) == ["body cancelled at 1.0", "sibling cancelled at 1.0"]


def test_nursery_waits_for_all_children(lib: Lib) -> None:
    async def main(log: list[str]) -> float:
        async def child(d: float) -> None:
            await lib.sleep(d)
            log.append(f"child {d} done")

        async with lib.open_nursery() as nursery:
            for d in (3, 1, 2):
                nursery.start_soon(child, d)
            log.append("body done")
        return lib.current_time()

    result, log = run_expecting(lib, main)
    assert result == ("returned", 3.0)
    assert log == ["body done", "child 1 done", "child 2 done", "child 3 done"]


def test_waits_even_for_children_that_ignore_cancellation(lib: Lib) -> None:
    async def main(log: list[str]) -> float:
        async def stubborn() -> None:
            with lib.CancelScope(shield=True):
                await lib.sleep(5)
            log.append("stubborn done")

        async with lib.open_nursery() as nursery:
            nursery.start_soon(stubborn)
            await lib.sleep(1)
            nursery.cancel_scope.cancel()
        return lib.current_time()

    assert run_expecting(lib, main) == (("returned", 5.0), ["stubborn done"])


def test_body_exception_cancels_children_and_is_grouped(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def child() -> None:
            try:
                await lib.sleep_forever()
            finally:
                log.append("child unwound")

        async with lib.open_nursery() as nursery:
            nursery.start_soon(child)
            await lib.sleep(1)
            raise KeyError("body")

    assert run_expecting(lib, main) == (("ExceptionGroup", ["KeyError('body')"]), ["child unwound"])


def test_several_failures_are_grouped(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def fail_now(exc: BaseException) -> None:
            raise exc

        async def fail_on_cancel() -> None:
            try:
                await lib.sleep_forever()
            except lib.Cancelled:
                raise RuntimeError("while cancelled") from None

        async with lib.open_nursery() as nursery:
            nursery.start_soon(fail_on_cancel)
            await lib.wait_all_tasks_blocked()
            nursery.start_soon(fail_now, ValueError("a"))
            nursery.start_soon(fail_now, TypeError("b"))
            raise KeyError("body")

    result, _ = run_expecting(lib, main)
    assert result == (
        "ExceptionGroup",
        sorted(["KeyError('body')", "RuntimeError('while cancelled')", "TypeError('b')", "ValueError('a')"]),
    )


def test_base_exception_makes_a_base_group(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def interrupt() -> None:
            await lib.sleep(1)
            raise KeyboardInterrupt

        async with lib.open_nursery() as nursery:
            nursery.start_soon(interrupt)
            nursery.start_soon(lib.sleep_forever)

    assert run_expecting(lib, main)[0] == ("BaseExceptionGroup", ["KeyboardInterrupt"])


def test_nested_nursery_groups_nest(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def inner_group() -> None:
            async with lib.open_nursery() as inner:
                inner.start_soon(lib.sleep_forever)
                await lib.sleep(1)
                raise ValueError("deep")

        async with lib.open_nursery() as nursery:
            nursery.start_soon(inner_group)
            nursery.start_soon(lib.sleep_forever)

    result, _ = run_expecting(lib, main)
    assert result == ("ExceptionGroup", [("ExceptionGroup", ["ValueError('deep')"])])


def test_cancelling_the_nursery_is_not_an_error(lib: Lib) -> None:
    async def main(log: list[str]) -> tuple[float, bool]:
        async with lib.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lib.sleep_forever)
            await lib.sleep(2)
            nursery.cancel_scope.cancel()
            await lib.sleep_forever()  # the body is inside the nursery's scope too
        return lib.current_time(), nursery.cancel_scope.cancelled_caught

    assert run_expecting(lib, main) == (("returned", (2.0, True)), [])


def test_outer_cancellation_passes_through_the_nursery(lib: Lib) -> None:
    async def main(log: list[str]) -> tuple[bool, bool]:
        with lib.CancelScope() as outer:
            async with lib.open_nursery() as nursery:
                nursery.start_soon(lib.sleep_forever)
                nursery.start_soon(lib.sleep_forever)
                await lib.sleep(1)
                outer.cancel()
                await lib.sleep_forever()
            log.append("not reached")
        return outer.cancelled_caught, nursery.cancel_scope.cancelled_caught

    assert run_expecting(lib, main) == (("returned", (True, False)), [])


def test_child_finishing_late_with_error_after_body_done(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def late() -> None:
            await lib.sleep(5)
            raise ValueError("late")

        async with lib.open_nursery() as nursery:
            nursery.start_soon(late)
            log.append("body done")
        log.append("not reached")

    assert run_expecting(lib, main) == (("ExceptionGroup", ["ValueError('late')"]), ["body done"])


def test_start_soon_requires_an_async_function(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        def not_async() -> None:
            pass

        async with lib.open_nursery() as nursery:
            with pytest.raises(TypeError):
                nursery.start_soon(not_async)

    assert run_expecting(lib, main) == (("returned", None), [])


def test_start_soon_on_closed_nursery(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async with lib.open_nursery() as nursery:
            pass
        with pytest.raises(RuntimeError, match="closed"):
            nursery.start_soon(lib.sleep, 1)
        with pytest.raises(RuntimeError, match="closed"):
            await nursery.start(lib.sleep, 1)

    assert run_expecting(lib, main) == (("returned", None), [])


def test_start_soon_while_nursery_is_waiting_for_children(lib: Lib) -> None:
    # A nursery whose body has finished still accepts children until the last one exits.
    async def main(log: list[str]) -> float:
        async def spawner(nursery: Any) -> None:
            await lib.sleep(1)
            nursery.start_soon(lib.sleep, 4)

        async with lib.open_nursery() as nursery:
            nursery.start_soon(spawner, nursery)
        return lib.current_time()

    assert run_expecting(lib, main) == (("returned", 5.0), [])


def test_nursery_introspection(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        me = lib.current_task()
        async with lib.open_nursery() as nursery:
            assert nursery.parent_task is me
            nursery.start_soon(lib.sleep_forever)
            nursery.start_soon(lib.sleep_forever)
            await lib.checkpoint()
            children = nursery.child_tasks
            assert len(children) == 2
            assert all(child.parent_nursery is nursery for child in children)
            assert nursery in me.child_nurseries
            nursery.cancel_scope.cancel()
        assert nursery not in me.child_nurseries
        assert not nursery.child_tasks

    assert run_expecting(lib, main) == (("returned", None), [])


# ============================================================================ start() / started()


def test_start_returns_the_started_value_and_reparents(lib: Lib) -> None:
    async def main(log: list[str]) -> Any:
        async def server(port: int, *, task_status: Any) -> None:
            await lib.sleep(1)
            task_status.started(port + 1)
            log.append(f"after started, parent is target: {lib.current_task().parent_nursery is nursery}")
            await lib.sleep(1)
            log.append("server done")

        async with lib.open_nursery() as nursery:
            value = await nursery.start(server, 8000)
            log.append(f"start returned {value} at {lib.current_time()}")
        return lib.current_time()

    result, log = run_expecting(lib, main)
    assert result == ("returned", 2.0)
    assert sorted(log) == sorted(
        ["after started, parent is target: True", "start returned 8001 at 1.0", "server done"]
    )


def test_started_without_a_value_returns_none(lib: Lib) -> None:
    async def main(log: list[str]) -> Any:
        async def task(*, task_status: Any) -> None:
            task_status.started()

        async with lib.open_nursery() as nursery:
            return await nursery.start(task)

    assert run_expecting(lib, main) == (("returned", None), [])


def test_error_before_started_propagates_from_start(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def broken(*, task_status: Any) -> None:
            await lib.sleep(1)
            raise ValueError("init failed")

        async with lib.open_nursery() as nursery:
            nursery.start_soon(lib.sleep, 3)
            try:
                await nursery.start(broken)
            except ValueError as exc:  # bare, not grouped, and the nursery is not cancelled
                log.append(f"start raised {exc!r} at {lib.current_time()}")
        log.append(f"nursery done at {lib.current_time()}")

    assert run_expecting(lib, main) == (
        ("returned", None),
        ["start raised ValueError('init failed') at 1.0", "nursery done at 3.0"],
    )


def test_error_after_started_goes_to_the_nursery(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def crashes_later(*, task_status: Any) -> None:
            task_status.started("ok")
            await lib.sleep(1)
            raise ValueError("after")

        async with lib.open_nursery() as nursery:
            log.append(await nursery.start(crashes_later))
            await lib.sleep_forever()

    assert run_expecting(lib, main) == (("ExceptionGroup", ["ValueError('after')"]), ["ok"])


def test_started_twice(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def twice(*, task_status: Any) -> None:
            task_status.started(1)
            task_status.started(2)

        async with lib.open_nursery() as nursery:
            log.append(f"start returned {await nursery.start(twice)}")

    result, log = run_expecting(lib, main)
    assert result == ("ExceptionGroup", ["RuntimeError(\"called 'started' twice on the same task status\")"])
    assert log == ["start returned 1"]


def test_child_exits_without_calling_started(lib: Lib) -> None:
    async def main(log: list[str]) -> None:
        async def lazy(*, task_status: Any) -> None:
            await lib.sleep(1)

        async with lib.open_nursery() as nursery:
            with pytest.raises(RuntimeError, match="without calling"):
                await nursery.start(lazy)
            log.append("nursery still usable")

    assert run_expecting(lib, main) == (("returned", None), ["nursery still usable"])


def test_start_cancelled_before_started(lib: Lib) -> None:
    # Until started(), the child runs under the *caller's* cancel scopes.
    async def main(log: list[str]) -> tuple[bool, float]:
        async def slow(*, task_status: Any) -> None:
            try:
                await lib.sleep(10)
            except lib.Cancelled:
                log.append("child cancelled")
                raise
            task_status.started()

        async with lib.open_nursery() as nursery:
            with lib.move_on_after(1) as scope:
                await nursery.start(slow)
            log.append(f"nursery body continues at {lib.current_time()}")
        return scope.cancelled_caught, lib.current_time()

    result, log = run_expecting(lib, main)
    assert result == ("returned", (True, 1.0))
    assert log == ["child cancelled", "nursery body continues at 1.0"]


def test_after_started_the_callers_scope_no_longer_applies(lib: Lib) -> None:
    async def main(log: list[str]) -> float:
        async def service(*, task_status: Any) -> None:
            task_status.started()
            await lib.sleep(5)
            log.append(f"service done at {lib.current_time()}")

        async with lib.open_nursery() as nursery:
            with lib.CancelScope() as scope:
                await nursery.start(service)
                scope.cancel()  # the service now lives in `nursery`: untouched
                await lib.sleep(1)
            log.append(f"scope caught={scope.cancelled_caught}")
        return lib.current_time()

    result, log = run_expecting(lib, main)
    assert result == ("returned", 5.0)
    assert log == ["scope caught=True", "service done at 5.0"]


def test_started_child_is_cancelled_with_its_new_nursery(lib: Lib) -> None:
    async def main(log: list[str]) -> float:
        async def service(*, task_status: Any) -> None:
            task_status.started()
            try:
                await lib.sleep_forever()
            except lib.Cancelled:
                log.append(f"service cancelled at {lib.current_time()}")
                raise

        async with lib.open_nursery() as nursery:
            await nursery.start(service)
            await lib.sleep(2)
            nursery.cancel_scope.cancel()
        return lib.current_time()

    assert run_expecting(lib, main) == (("returned", 2.0), ["service cancelled at 2.0"])


def test_start_into_a_cancelled_nursery(lib: Lib) -> None:
    # started() moves the child under a nursery that is already cancelled: it gets Cancelled
    # at its next checkpoint, and start() still returns the value.
    async def main(log: list[str]) -> None:
        async def service(*, task_status: Any) -> None:
            task_status.started("v")
            try:
                await lib.sleep_forever()
            except lib.Cancelled:
                log.append("service cancelled")
                raise

        async with lib.open_nursery() as nursery:
            nursery.cancel_scope.cancel()
            with lib.CancelScope(shield=True):
                log.append(await nursery.start(service))

    result, log = run_expecting(lib, main)
    assert result == ("returned", None)
    assert sorted(log) == ["service cancelled", "v"]  # same tick: trio shuffles the order


def test_start_from_another_task(lib: Lib) -> None:
    async def main(log: list[str]) -> float:
        async def service(d: float, *, task_status: Any) -> None:
            await lib.sleep(d)
            task_status.started(d)
            await lib.sleep(d)

        async with lib.open_nursery() as target:

            async def starter() -> None:
                log.append(f"started {await target.start(service, 2)} at {lib.current_time()}")

            async with lib.open_nursery() as other:
                other.start_soon(starter)
            log.append(f"starter's nursery done at {lib.current_time()}")
        return lib.current_time()

    result, log = run_expecting(lib, main)
    assert result == ("returned", 4.0)
    assert log == ["started 2 at 2.0", "starter's nursery done at 2.0"]


def test_outer_cancellation_with_a_child_error(lib: Lib) -> None:
    # The outer scope strips the Cancelled exceptions and lets the real error through.
    async def main(log: list[str]) -> None:
        async def cleanup_fails() -> None:
            try:
                await lib.sleep_forever()
            finally:
                raise ValueError("cleanup")

        with lib.CancelScope() as outer:
            async with lib.open_nursery() as nursery:
                nursery.start_soon(cleanup_fails)
                nursery.start_soon(lib.sleep_forever)
                await lib.sleep(1)
                outer.cancel()
                await lib.sleep_forever()
        log.append("not reached")

    assert run_expecting(lib, main) == (("ExceptionGroup", ["ValueError('cleanup')"]), [])


def test_started_while_start_is_cancelled_does_not_move_the_task(lib: Lib) -> None:
    # The child calls started() while a Cancelled from the *caller's* scope propagates through
    # it.  Moving it into the target nursery would carry that Cancelled to a place where no
    # cancelled scope catches it: the target nursery would be cancelled, killing the sibling.
    # trio leaves the child where it is; start() then raises Cancelled in the caller.
    async def main(log: list[str]) -> None:
        async def sibling() -> None:
            await lib.sleep(5)
            log.append(f"sibling done at {lib.current_time()}")

        async def child(*, task_status: Any) -> None:
            try:
                await lib.sleep_forever()
            except lib.Cancelled:
                task_status.started("late")
                raise

        async with lib.open_nursery() as nursery:
            nursery.start_soon(sibling)
            with lib.CancelScope() as scope:

                async def canceller() -> None:
                    await lib.sleep(1)
                    scope.cancel()

                nursery.start_soon(canceller)
                log.append(f"start returned {await nursery.start(child)}")
            log.append(f"caller's scope caught={scope.cancelled_caught} at {lib.current_time()}")

    assert run_expecting(lib, main) == (
        ("returned", None),
        ["caller's scope caught=True at 1.0", "sibling done at 5.0"],
    )
