"""open_signal_receiver: real signals (os.kill of our own pid), delivered through the runner's
wake-up fd on the ring."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import anyio_uring as au
from anyio_uring._core import current_runner
from anyio_uring._core._threads import to_thread_run_sync
from anyio_uring._proc._signals import open_signal_receiver

USR1, USR2 = signal.SIGUSR1, signal.SIGUSR2


@pytest.fixture(autouse=True)
def _handlers_are_restored() -> Any:
    """Every test leaves the process's handlers and wake-up fd as it found them."""
    before = {sig: signal.getsignal(sig) for sig in (USR1, USR2, signal.SIGINT, signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    after = {sig: signal.getsignal(sig) for sig in before}
    assert after == before
    assert signal.set_wakeup_fd(wakeup) == wakeup


def run(fn: Callable[[], Awaitable[Any]], **kwargs: Any) -> Any:
    return au.run(fn, **kwargs)


def test_receive_in_arrival_order() -> None:
    async def main() -> None:
        with open_signal_receiver(USR1, USR2) as signals:
            os.kill(os.getpid(), USR1)
            os.kill(os.getpid(), USR2)
            with au.fail_after(5):
                first = await signals.__anext__()
                second = await signals.__anext__()
        assert type(first) is signal.Signals
        assert (first, second) == (USR1, USR2)

    run(main)


def test_pending_arrivals_are_coalesced() -> None:
    """A signal arriving while it is still pending is reported once (trio's behaviour; see
    tests/test_hardening_proc.py for the comparison with trio)."""

    async def main() -> None:
        with open_signal_receiver(USR1, USR2) as signals:
            for sig in (USR1, USR1, USR2, USR1):
                os.kill(os.getpid(), sig)
            got = []
            with au.fail_after(5):
                got.append(await signals.__anext__())
                got.append(await signals.__anext__())
                os.kill(os.getpid(), USR2)  # the next item must be this one
                got.append(await signals.__anext__())
        assert got == [USR1, USR2, USR2]

    run(main)


def test_signal_sent_from_another_thread_wakes_the_loop() -> None:
    async def main() -> None:
        with open_signal_receiver(USR1) as signals:
            async with au.open_nursery() as nursery:

                async def kill_later() -> None:
                    await au.wait_all_tasks_blocked()
                    await to_thread_run_sync(os.kill, os.getpid(), USR1)

                nursery.start_soon(kill_later)
                with au.fail_after(5):
                    assert await signals.__anext__() == USR1

    run(main)


def test_handlers_installed_and_restored() -> None:
    def previous(signum: int, frame: Any) -> None:
        raise AssertionError("the previous handler must not run while the receiver is open")

    async def main() -> None:
        old = signal.signal(USR1, previous)
        try:
            with open_signal_receiver(USR1, USR1) as signals:  # duplicates are fine
                assert signal.getsignal(USR1) not in (previous, old)
                os.kill(os.getpid(), USR1)
                with au.fail_after(5):
                    assert await signals.__anext__() == USR1
            assert signal.getsignal(USR1) is previous
        finally:
            signal.signal(USR1, old)

    run(main)


def test_sigint_receiver_replaces_keyboard_interrupt() -> None:
    async def main() -> None:
        with open_signal_receiver(signal.SIGINT) as signals:
            os.kill(os.getpid(), signal.SIGINT)
            with au.fail_after(5):
                assert await signals.__anext__() == signal.SIGINT
        assert not current_runner().ki_pending

    run(main)


def test_nested_receivers_innermost_wins() -> None:
    async def main() -> None:
        with open_signal_receiver(USR1) as outer:
            with open_signal_receiver(USR1) as inner:
                os.kill(os.getpid(), USR1)
                with au.fail_after(5):
                    assert await inner.__anext__() == USR1
            os.kill(os.getpid(), USR1)
            with au.fail_after(5):
                assert await outer.__anext__() == USR1
            # the outer one never saw the first signal
            with au.move_on_after(0.05) as scope:
                await outer.__anext__()
            assert scope.cancelled_caught

    run(main)


def test_cancelled_iteration() -> None:
    async def main() -> None:
        with open_signal_receiver(USR1) as signals:
            async with au.open_nursery() as nursery:

                async def consume() -> None:
                    async for _ in signals:
                        pytest.fail("no signal was sent")

                nursery.start_soon(consume)
                await au.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            # still usable after a cancelled wait
            os.kill(os.getpid(), USR1)
            with au.fail_after(5):
                assert await signals.__anext__() == USR1

    run(main)


def test_iterating_outside_the_block_raises() -> None:
    async def main() -> None:
        receiver = open_signal_receiver(USR1)
        with pytest.raises(RuntimeError, match="inside its 'with' block"):
            await receiver.__anext__()
        with receiver:
            pass
        with pytest.raises(RuntimeError, match="inside its 'with' block"):
            await receiver.__anext__()
        with pytest.raises(RuntimeError, match="only once"), receiver:
            pass

    run(main)


def test_waiter_is_woken_when_the_block_exits() -> None:
    async def main() -> None:
        errors: list[BaseException] = []
        with open_signal_receiver(USR1) as signals:
            async with au.open_nursery() as nursery:

                async def consume() -> None:
                    try:
                        await signals.__anext__()
                    except RuntimeError as exc:
                        errors.append(exc)

                nursery.start_soon(consume)
                await au.wait_all_tasks_blocked()
                signals.__exit__(None, None, None)
        assert len(errors) == 1

    run(main)


def test_works_without_the_runners_signal_handling() -> None:
    """A loop started with install_signal_handlers=False has no wake-up fd of its own: the
    receiver installs one for its duration and puts the old one back."""

    async def main() -> None:
        before = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(before)
        with open_signal_receiver(USR2) as signals:
            os.kill(os.getpid(), USR2)
            with au.fail_after(5):
                assert await signals.__anext__() == USR2
        assert signal.set_wakeup_fd(before) == before

    run(main, install_signal_handlers=False)


def test_invalid_signals() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="is not a valid Signals"):
            open_signal_receiver(12345)
        # Installed in signal-number order: USR1 (10) succeeds, then SIGSTOP (19) fails; USR1's
        # previous handler is put back (the fixture checks it).
        receiver = open_signal_receiver(signal.SIGSTOP, USR1)
        with pytest.raises(OSError, match="Invalid argument"), receiver:
            pass
        assert signal.getsignal(USR1) is not receiver._handler

    run(main)


def test_outside_a_loop() -> None:
    with pytest.raises(RuntimeError, match=r"inside anyio_uring\.run"):
        open_signal_receiver(USR1)


def test_not_in_the_main_thread() -> None:
    errors: list[BaseException] = []

    async def main() -> None:
        with pytest.raises(RuntimeError, match="main thread"):
            open_signal_receiver(USR1)

    def thread() -> None:
        try:
            au.run(main)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert errors == []
