"""Hardening of subprocesses and signal receivers, against trio's observed behaviour.

* Signalling a process that has been reaped does nothing (trio; asyncio raises
  ``ProcessLookupError``), and a signal never reaches a recycled pid: not after our own reaping,
  and -- where a pidfd exists -- not after a foreign ``waitpid`` either.  Pid recycling is forced
  with ``/proc/sys/kernel/ns_last_pid`` (needs CAP_SYS_ADMIN in the pid namespace).
* The pidfd is closed only after every ring operation that references it has reached its final
  CQE (the ownership rule, applied to fds).
* ``open_signal_receiver`` coalesces a signal that is already pending, and re-delivers the
  signals still pending when its block exits to the restored handler.

Process tests run on every way of waiting for a child: ``WAITID`` on a pidfd (the default),
``WAITID`` on the pid (no pidfd), ``POLL_ADD`` on a pidfd (``waitid`` masked) and the polling
loop (neither).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import anyio_uring as au
from anyio_uring import CancelScope, RingOptions
from anyio_uring._core import current_runner
from anyio_uring._proc._process import Process, open_process
from anyio_uring._proc._signals import open_signal_receiver

PY = sys.executable
NO_WAITID = RingOptions(disable=frozenset({"waitid"}))
WITH_WAITID = RingOptions(disable=RingOptions().effective_disable() - {"waitid"}, use_environment=False)
USR1, USR2 = signal.SIGUSR1, signal.SIGUSR2
MODES = ["waitid", "waitid-nopidfd", "pidfd", "polling"]
PIDFD_MODES = ["waitid", "pidfd"]

Runner = Callable[[Callable[[], Awaitable[Any]]], Any]


# ============================================================================ helpers


def make_runner(mode: str, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run an async body on a fresh loop that waits for children the ``mode`` way."""
    options = WITH_WAITID if mode.startswith("waitid") else NO_WAITID
    if mode in ("waitid-nopidfd", "polling"):

        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open disabled by the test")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    def runner(fn: Callable[[], Awaitable[Any]]) -> Any:
        async def body() -> Any:
            ring = current_runner().ring
            assert ring.support.waitid == mode.startswith("waitid")
            result = await fn()
            assert ring.inflight == current_runner().entry.watchers, ring.ledger()
            return result

        return au.run(body, ring_options=options)

    return runner


@pytest.fixture(params=MODES)
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Runner:
    return make_runner(request.param, monkeypatch)


@pytest.fixture(params=PIDFD_MODES)
def run_pidfd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Runner:
    return make_runner(request.param, monkeypatch)


async def spawn(code: str) -> Process:
    return await open_process([PY, "-c", code], stdin=None, stdout=None, stderr=None)


def pidfds() -> set[int]:
    """The fd numbers of this process that are pidfds."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                found.add(int(name))
        except OSError:  # the fd listing itself, closed meanwhile
            pass
    return found


def live_ops(opcode: str) -> int:
    return current_runner().ring.ledger().by_opcode.get(opcode, 0)


#: A decoy that keeps SIGTERM and SIGUSR1 blocked: a signal sent to it stays visibly pending.
DECOY = (
    "import signal, time\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def take_pid(pid: int, decoys: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start a decoy process that gets the (free) ``pid``, by steering the kernel's pid
    allocator; retried because other processes on the machine may fork meanwhile."""
    for _ in range(50):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot steer pid allocation (needs CAP_SYS_ADMIN): {exc}")
        decoy = subprocess.Popen([PY, "-c", DECOY], stdout=subprocess.PIPE)
        decoys.append(decoy)
        if decoy.pid == pid:
            assert decoy.stdout is not None
            assert decoy.stdout.readline() == b"ready\n"
            return decoy
    pytest.skip(f"pid {pid} was not recycled for the decoy (taken by another process?)")


def pending_signals(pid: int) -> int:
    """The signals pending for process ``pid`` (a bit mask: ShdPnd in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no ShdPnd for {pid}")


@pytest.fixture
def decoys() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for decoy in started:
        decoy.kill()
        decoy.wait()
        assert decoy.stdout is not None
        decoy.stdout.close()


@asynccontextmanager
async def child(code: str) -> AsyncIterator[Process]:
    """A child process that is killed (if still running) and reaped however the test ends."""
    p = await spawn(code)
    try:
        yield p
    finally:
        if p.returncode is None:
            p.kill()
        with CancelScope(shield=True):
            await p.aclose()


# ============================================================================ 6: signalling after exit


def test_signalling_a_reaped_process_does_nothing(run: Runner) -> None:
    """kill/terminate/send_signal after the process was reaped (by wait, by returncode or by
    the signalling itself) neither raise nor send anything; the return code is unchanged."""

    async def main() -> None:
        p = await spawn("pass")
        assert await p.wait() == 0
        p.kill()
        p.terminate()
        p.send_signal(signal.SIGUSR1)
        assert p.returncode == 0

        # The common idiom: the process has exited by the time the finally block runs.
        q = await spawn("import sys; sys.exit(3)")
        try:
            assert await q.wait() == 3
        finally:
            q.kill()
        assert q.returncode == 3

        # Exited but not reaped yet: like Popen.send_signal, it is reaped, not signalled.
        r = await spawn("import sys; sys.exit(4)")
        os.waitid(os.P_PID, r.pid, os.WEXITED | os.WNOWAIT)  # a zombie now, still unreaped
        r.terminate()
        assert r.returncode == 4  # not -SIGTERM
        assert await r.wait() == 4
        for proc in (p, q, r):
            await proc.aclose()

    run(main)


@pytest.mark.parametrize("backend", ["trio", "uring"])
def test_signalling_after_wait_matches_trio(backend: str) -> None:
    """Differential: the ``try: await p.wait() finally: p.kill()`` idiom on anyio's trio
    backend and on ours."""

    async def main() -> list[str]:
        outcomes = []
        async with await anyio.open_process([PY, "-c", "pass"]) as p:
            await p.wait()
            for method in (p.kill, p.terminate, lambda: p.send_signal(signal.SIGUSR1)):
                try:
                    method()
                except BaseException as exc:
                    outcomes.append(type(exc).__name__)
                else:
                    outcomes.append("ok")
        return outcomes

    assert anyio.run(main, backend=backend) == ["ok", "ok", "ok"]


def test_no_signal_reaches_a_recycled_pid_after_reaping(
    run: Runner, decoys: list[subprocess.Popen[bytes]]
) -> None:
    """After our own reaping the pid is free; a decoy gets it; kill() must leave it alone."""

    async def main() -> None:
        p = await spawn("pass")
        assert await p.wait() == 0
        decoy = take_pid(p.pid, decoys)
        p.terminate()
        p.send_signal(signal.SIGUSR1)
        assert pending_signals(decoy.pid) == 0
        p.kill()
        assert decoy.poll() is None
        assert p.returncode == 0
        await p.aclose()

    run(main)


def test_no_signal_reaches_a_recycled_pid_after_a_foreign_reap(
    run_pidfd: Runner, decoys: list[subprocess.Popen[bytes]]
) -> None:
    """Someone else reaps our child (a stray ``waitpid``) and the pid is recycled for another
    child of ours: with a pidfd, neither the signal nor the reaping goes to that child.
    (Without a pidfd nothing can tell the two apart; ``subprocess.Popen`` has the same limit.)"""

    async def main() -> None:
        p = await spawn("import sys; sys.exit(5)")
        os.waitpid(p.pid, 0)  # the foreign reaper: the status is gone, the pid is free
        decoy = take_pid(p.pid, decoys)
        p.terminate()
        p.send_signal(signal.SIGUSR1)
        assert pending_signals(decoy.pid) == 0
        p.kill()
        assert decoy.poll() is None
        with au.fail_after(5):
            assert await p.wait() == 0  # subprocess's convention for a lost status
        assert decoy.poll() is None  # not reaped (nor waited for) in the process's place
        await p.aclose()

    run_pidfd(main)


# ============================================================================ 14: pidfd lifetime


def test_pidfd_outlives_the_operations_that_reference_it(run_pidfd: Runner) -> None:
    """Two tasks wait (each with a POLL_ADD or WAITID on the pidfd in flight); the process is
    reaped synchronously (``returncode``) before the loop has seen those CQEs.  The pidfd must
    stay open until both operations are done -- its number must not be handed to a new fd
    meanwhile -- and be closed after."""

    async def main() -> None:
        opcode = "WAITID" if current_runner().ring.support.waitid else "POLL_ADD"
        base = live_ops(opcode)
        results: list[int] = []
        async with child("import time; time.sleep(30)") as p:

            async def waiter() -> None:
                results.append(await p.wait())

            async with au.open_nursery() as nursery:
                nursery.start_soon(waiter)
                nursery.start_soon(waiter)
                await au.wait_all_tasks_blocked()
                assert live_ops(opcode) == base + 2
                held = pidfds()
                assert held, "the waits reference a pidfd"
                # No checkpoint from here on: the loop cannot reap the waits' CQEs meanwhile.
                p.kill()
                os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # returns once it is a zombie
                assert p.returncode == -signal.SIGKILL  # reaped, here and now
                assert live_ops(opcode) == base + 2  # both operations are still in flight...
                assert pidfds() == held  # ...so the fd they name is still the pidfd
                r, w = os.pipe()
                os.close(r)
                os.close(w)
                assert not {r, w} & held  # a new fd does not get the pidfd's number
            assert results == [-signal.SIGKILL] * 2
            assert pidfds() == set()  # closed once the last operation was done

    run_pidfd(main)


def test_pidfd_closed_after_a_cancelled_wait(run_pidfd: Runner) -> None:
    """A cancelled wait releases its hold on the pidfd (after its final CQE); reaping closes it."""

    async def main() -> None:
        async with child("import time; time.sleep(30)") as p:
            held = pidfds()
            assert len(held) == 1
            with au.move_on_after(0.01) as scope:
                await p.wait()
            assert scope.cancelled_caught
            assert pidfds() == held  # the process is not reaped: the pidfd stays
            p.kill()
            assert await p.wait() == -signal.SIGKILL
            assert pidfds() == set()

    run_pidfd(main)


# ============================================================================ 15b: signal receivers


@pytest.fixture
def handlers_restored() -> Iterator[None]:
    """The test leaves the process's handlers and wake-up fd as it found them."""
    before = {sig: signal.getsignal(sig) for sig in (USR1, USR2)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup


@pytest.fixture
def recorder(handlers_restored: None) -> Iterator[list[int]]:
    """A Python handler for USR1 and USR2 that records the signals it gets."""
    got: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)

    old = {sig: signal.signal(sig, handler) for sig in (USR1, USR2)}
    yield got
    for sig, previous in old.items():
        signal.signal(sig, previous)


BACKENDS = ["trio", "uring"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pending_signal_is_coalesced(backend: str, handlers_restored: None) -> None:
    """A signal delivered again while it is pending is reported once (trio); one delivered
    after it was read is reported again."""

    async def main() -> list[int]:
        got: list[int] = []
        with anyio.open_signal_receiver(USR1, USR2) as signals, anyio.fail_after(5):
            for sig in (USR1, USR1, USR2, USR1):
                os.kill(os.getpid(), sig)
            got.append(await signals.__anext__())
            got.append(await signals.__anext__())
            os.kill(os.getpid(), USR2)  # a marker: the next item must be this one
            got.append(await signals.__anext__())
            os.kill(os.getpid(), USR1)  # read already: pending again
            got.append(await signals.__anext__())
        return got

    assert anyio.run(main, backend=backend) == [USR1, USR2, USR2, USR1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unread_signals_are_redelivered_on_exit(backend: str, recorder: list[int]) -> None:
    """Signals still pending when the block exits go to the restored handler, in order."""

    async def main() -> None:
        with anyio.open_signal_receiver(USR1, USR2) as signals, anyio.fail_after(5):
            for sig in (USR2, USR1, USR2):
                os.kill(os.getpid(), sig)
            assert await signals.__anext__() == USR2  # all three were dispatched by now
            assert recorder == []
        # trio re-delivers from the loop (a tick later); wait for it, boundedly.
        with anyio.fail_after(5):
            while len(recorder) < 1:
                await anyio.sleep(0.001)
        await anyio.lowlevel.checkpoint()

    anyio.run(main, backend=backend)
    assert recorder == [USR1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_signals_not_yet_dispatched_are_redelivered_on_exit(backend: str, recorder: list[int]) -> None:
    """Signals that arrived just before the block exits -- caught by the receiver's handler but
    not yet seen by the loop -- are re-delivered too, not dropped."""

    async def main() -> None:
        with anyio.open_signal_receiver(USR1, USR2):
            os.kill(os.getpid(), USR1)
            os.kill(os.getpid(), USR2)
            assert recorder == []
        with anyio.fail_after(5):
            while len(recorder) < 2:
                await anyio.sleep(0.001)

    anyio.run(main, backend=backend)
    assert recorder == [USR1, USR2]


def test_nested_receiver_redelivers_to_the_outer_one(handlers_restored: None) -> None:
    """The restored handler may be an outer receiver's: it then gets the unread signal."""

    async def main() -> None:
        with open_signal_receiver(USR1) as outer:
            with open_signal_receiver(USR1):
                os.kill(os.getpid(), USR1)
            with au.fail_after(5):
                assert await outer.__anext__() == USR1

    au.run(main)
