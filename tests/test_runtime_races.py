"""Named races between cancellation and completion, run by the real runtime on real sockets and
files (DESIGN.md invariants 1-4; KERNEL-FACTS.md section 2).

Each test states the race it forces, and each one fails if the runtime lets go of an
operation's memory, or of its result, before the operation's *final* CQE.  Two ring modes are
exercised where the kernel's behaviour differs: the default ``SINGLE_ISSUER|DEFER_TASKRUN`` ring
(completions are posted only inside our ``io_uring_enter``, so a cancel sent in the same tick
usually wins and the data stays in the socket) and a ring without ``DEFER_TASKRUN`` (the recv
completes while the *peer's* ``send()`` returns to user space, so the data usually wins).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import anyio_uring as au
from anyio_uring import Cancelled, CancelScope, RingOptions
from anyio_uring._core import current_runner
from anyio_uring._ring import Operation, OpState, Ring
from support import pinned

IOSQE_ASYNC = 16
NO_DEFER = RingOptions(disable=frozenset({"defer_taskrun"}))
RING_MODES = {"defer_taskrun": None, "no_defer_taskrun": NO_DEFER}
FILE_SIZE = 64 << 20


# ============================================================================ helpers


def the_ring() -> Ring:
    return current_runner().ring


def own_watchers() -> int:
    """Operations the loop itself keeps armed (entry-queue eventfd, signal wake-up fd)."""
    return current_runner().entry.watchers


def assert_ledger_empty() -> None:
    ring = the_ring()
    assert ring.inflight == own_watchers(), ring.ledger()
    assert ring.bytes_pinned == 0


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(predicate: Any, what: str, limit: int = 200_000) -> None:
    """Checkpoint until ``predicate()`` holds (a bounded spin: fail rather than hang)."""
    for _ in range(limit):
        if predicate():
            return
        await au.checkpoint()
    pytest.fail(f"timed out waiting for: {what}")


def parked_on_submitted(task: au.Task, op: Operation | None) -> bool:
    return op is not None and task.parked and op.state is OpState.SUBMITTED


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("races") / "big"
    block = bytes(range(256)) * 4096  # 1 MiB, position-dependent content
    with open(path, "wb") as f:
        for _ in range(FILE_SIZE // len(block)):
            f.write(block)
    return path


# ============================================================================ the races


@pytest.mark.parametrize("sqe_flags", [0, IOSQE_ASYNC], ids=["poll-armed", "io-wq"])
@pytest.mark.parametrize("mode", list(RING_MODES), ids=list(RING_MODES))
def test_result_beats_cancel_is_delivered(
    mode: str, sqe_flags: int, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """recv parked; in one task step the peer sends and the scope is cancelled, before the next
    ``io_uring_enter``.  Whoever wins, the target's final CQE decides: data is returned (and the
    cancellation lands at the next checkpoint), ``-ECANCELED`` raises ``Cancelled`` with the
    bytes left in the socket.  Over many rounds the byte stream arrives whole and in order."""
    a, b = sockpair
    rounds = 150
    outcomes: Counter[str] = Counter()
    received = bytearray()
    sent = bytearray()

    class State:
        scope: CancelScope | None = None
        op: Operation | None = None

    st = State()

    async def receiver() -> None:
        ring = the_ring()
        buf = bytearray(64)
        while True:
            with CancelScope() as scope:
                st.scope = scope
                st.op = op = ring.recv(a.fileno(), buf, sqe_flags=sqe_flags)
                try:
                    n = await au.wait_operation(op)
                except Cancelled:
                    assert op.done
                    assert op.result == -errno.ECANCELED
                    outcomes["cancelled"] += 1
                    raise
                assert op.done
                assert n == op.result
                if n == 0:
                    return  # EOF: the driver is done
                assert n > 0, os.strerror(-n)
                received.extend(buf[:n])
                if scope.cancel_called:
                    outcomes["data despite cancel"] += 1
                    try:
                        await au.checkpoint()
                    except Cancelled:
                        outcomes["cancel at next checkpoint"] += 1
                        raise
                    pytest.fail("the cancellation was not delivered at the next checkpoint")
                outcomes["plain data"] += 1

    async def driver(rtask: au.Task) -> None:
        for i in range(rounds):
            await until(lambda: parked_on_submitted(rtask, st.op), "receiver parked on a submitted recv")
            assert st.scope is not None
            chunk = b"<%05d>" % i
            b.send(chunk)
            sent.extend(chunk)
            st.scope.cancel()
            await au.checkpoint()
        b.shutdown(socket.SHUT_WR)

    async def main() -> None:
        with au.fail_after(30):
            async with au.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await au.checkpoint()
                (rtask,) = list(nursery.child_tasks)
                nursery.start_soon(driver, rtask)
        assert_ledger_empty()

    au.run(main, ring_options=RING_MODES[mode])
    assert bytes(received) == bytes(sent), outcomes  # no byte lost, none duplicated, in order
    assert outcomes["data despite cancel"] == outcomes["cancel at next checkpoint"]
    assert outcomes["data despite cancel"] + outcomes["cancelled"] >= rounds
    if mode == "no_defer_taskrun" and sqe_flags == 0:
        # The data completes the recv while the peer's send() returns: it always wins here.
        assert outcomes["data despite cancel"] > 0, outcomes


def test_cancel_before_submit_withdraws_sqe(sockpair: tuple[socket.socket, socket.socket]) -> None:
    """An op queued and cancelled before any ``io_uring_enter`` is withdrawn from the SQ by the
    abort callback itself: no syscall, no ``ASYNC_CANCEL`` SQE, ``Cancelled`` at once."""
    a, _ = sockpair
    seen: dict[str, Any] = {}

    async def canceller() -> None:
        ring = the_ring()
        before = ring.counters()
        buf = bytearray(16)
        op = ring.recv(a.fileno(), buf)
        seen["op"], seen["before"], seen["buf"] = op, before, buf
        assert op.state is OpState.QUEUED
        with CancelScope() as scope:
            scope.cancel()
            await au.wait_operation(op)
            pytest.fail("wait_operation returned inside a cancelled scope")
        assert scope.cancelled_caught
        seen["caught"] = True

    async def observer() -> None:
        # Runs in the same batch, right after canceller() parked: no enter happened since.
        ring = the_ring()
        op: Operation = seen["op"]
        before = seen["before"]
        after = ring.counters()
        assert op.done
        assert op.state is OpState.DONE
        assert op.result == -errno.ECANCELED
        assert after["withdrawn"] == before["withdrawn"] + 1
        assert after["enters"] == before["enters"]  # no syscall
        assert after["sqes_written"] == before["sqes_written"] + 1  # the recv only, no cancel SQE
        assert not pinned(seen["buf"])  # released: the kernel never saw it
        assert "caught" not in seen  # the canceller resumes in the next batch
        seen["observed"] = True

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(canceller)
            nursery.start_soon(observer)
        assert seen.get("caught")
        assert seen.get("observed")
        ring = the_ring()
        await au.sleep(0.01)  # the withdrawn slot (a NOP) goes through an enter...
        assert ring.counters()["rejected_cqes"] == 0  # ...and posts nothing anyone sees
        assert ring.counters()["cancel_cqes"] == seen["before"]["cancel_cqes"]
        assert_ledger_empty()

    au.run(main)


@pytest.mark.parametrize("kind", ["buffered-io-wq", "o_direct"])
def test_cancel_of_running_file_read_waits_for_completion(kind: str, big_file: Path) -> None:
    """A 64 MiB read is cancelled while the kernel is executing it (buffered + IOSQE_ASYNC: in an
    io-wq worker, the cancel answers -EALREADY; O_DIRECT: block I/O, the cancel answers -ENOENT
    before the data lands).  The task stays parked and the buffer stays pinned until the read's
    final CQE; a data result is delivered, then Cancelled comes at the next checkpoint."""
    o_direct = kind == "o_direct"
    flags = os.O_RDONLY | (os.O_DIRECT if o_direct else 0)
    try:
        fd = os.open(big_file, flags)
    except OSError as exc:  # pragma: no cover - filesystem without O_DIRECT
        pytest.skip(f"cannot open with O_DIRECT here: {exc}")
    outcomes: Counter[str] = Counter()
    expected = big_file.read_bytes() if not o_direct else None

    async def attempt(delay: float) -> None:
        ring = the_ring()
        # O_DIRECT wants an aligned buffer: an anonymous mmap is page-aligned.
        buf: Any = mmap.mmap(-1, FILE_SIZE) if o_direct else bytearray(FILE_SIZE)
        if o_direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        op = ring.read(fd, buf, 0, sqe_flags=0 if o_direct else IOSQE_ASYNC)
        result: dict[str, Any] = {}

        async def reader(task_status: au.TaskStatus[au.Task]) -> None:
            task_status.started(au.current_task())
            with CancelScope() as scope:
                result["scope"] = scope
                try:
                    result["n"] = await au.wait_operation(op)
                except Cancelled:
                    result["resumed_done"] = op.done
                    raise
                result["resumed_done"] = op.done
                if scope.cancel_called:
                    try:
                        await au.checkpoint()
                    except Cancelled:
                        result["cancel_after_data"] = True
                        raise

        async with au.open_nursery() as nursery:
            rtask = await nursery.start(reader)
            await until(lambda: op.state is OpState.SUBMITTED, "read submitted")
            await au.sleep(delay)
            if op.done:
                outcomes["finished before the cancel"] += 1
                return
            result["scope"].cancel()
            assert op.state is OpState.CANCEL_REQUESTED
            # Until the final CQE: the reader stays parked, the memory stays lent.
            while not op.done:
                assert rtask.parked
                assert ring.bytes_pinned >= FILE_SIZE
                if not o_direct:
                    assert pinned(buf)
                await au.checkpoint()
        assert result["resumed_done"]
        assert ring.bytes_pinned == 0
        if op.result == -errno.ECANCELED:
            outcomes["cancelled"] += 1
            assert "n" not in result
        else:
            assert result["n"] == op.result == FILE_SIZE
            assert result.get("cancel_after_data")
            if expected is not None:
                assert bytes(buf) == expected
            else:
                assert buf[:256] == bytes(range(256))
                assert buf[FILE_SIZE - 256 :] == bytes(range(256))
            outcomes["data after cancel"] += 1
        if o_direct:
            buf.close()

    async def main() -> None:
        delay = 0.002
        for _ in range(12):
            await attempt(delay)
            if outcomes["data after cancel"]:
                break
            # Adapt: cancelled too early -> wait longer; read done first -> cancel sooner.
            delay = delay * 2 if outcomes["cancelled"] else delay / 2
        assert_ledger_empty()

    try:
        au.run(main)
    finally:
        os.close(fd)
    assert outcomes["data after cancel"] > 0, outcomes


def test_deadline_expires_on_pending_recv(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair

    async def main() -> None:
        ring = the_ring()
        buf = bytearray(32)
        op = ring.recv(a.fileno(), buf)
        start = au.current_time()
        with au.move_on_after(0.05) as scope:
            await au.wait_operation(op)
            pytest.fail("recv on an idle socket returned")
        assert scope.cancelled_caught
        assert au.current_time() - start >= 0.05
        assert op.result == -errno.ECANCELED
        assert ring.withdrawn == 0  # it really was in the kernel: an ASYNC_CANCEL ended it
        assert_ledger_empty()
        assert not pinned(buf)
        b.send(b"later")
        buf2 = bytearray(32)
        with au.fail_after(5):
            n = await au.wait_operation(ring.recv(a.fileno(), buf2))
        assert buf2[:n] == b"later"
        assert buf == bytearray(32)  # the cancelled op's buffer was never written
        assert_ledger_empty()

    au.run(main)


def test_shielded_scope_keeps_op_running(sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    log: list[str] = []

    async def main() -> None:
        ring = the_ring()
        buf = bytearray(32)
        with CancelScope() as outer:
            with CancelScope(shield=True) as inner:
                op = ring.recv(a.fileno(), buf)

                async def peer() -> None:
                    await until(lambda: op.state is OpState.SUBMITTED, "recv submitted")
                    cancels = ring.counters()["cancel_cqes"]
                    outer.cancel()
                    await au.sleep(0.02)
                    assert op.state is OpState.SUBMITTED  # no ASYNC_CANCEL was queued...
                    assert ring.counters()["cancel_cqes"] == cancels  # ...nor answered
                    log.append("send")
                    b.send(b"shielded")

                async with au.open_nursery() as nursery:
                    nursery.start_soon(peer)
                    n = await au.wait_operation(op)
                    log.append("received")
                    assert buf[:n] == b"shielded"
                    await au.checkpoint()  # shielded: no Cancelled here
                log.append("inner exit")
            assert not inner.cancelled_caught
            await au.checkpoint()
            pytest.fail("the outer cancellation was not delivered after leaving the shield")
        assert outer.cancelled_caught
        assert_ledger_empty()

    au.run(main)
    assert log == ["send", "received", "inner exit"]


def test_nested_scopes_cancel_outer_while_inner_op_pending(
    sockpair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = sockpair

    async def main() -> None:
        ring = the_ring()
        buf = bytearray(32)
        op = ring.recv(a.fileno(), buf)
        with CancelScope() as outer, au.move_on_after(3600) as middle, CancelScope() as inner:

            async def cancel_outer() -> None:
                await until(lambda: op.state is OpState.SUBMITTED, "recv submitted")
                outer.cancel()

            async with au.open_nursery() as nursery:
                nursery.start_soon(cancel_outer)
                await au.wait_operation(op)
            pytest.fail("not cancelled")
        assert outer.cancelled_caught
        assert not middle.cancelled_caught
        assert not inner.cancelled_caught
        assert op.result == -errno.ECANCELED
        assert_ledger_empty()
        b.send(b"after")
        n = await au.wait_operation(ring.recv(a.fileno(), buf))
        assert buf[:n] == b"after"

    au.run(main)


@pytest.mark.parametrize(
    "how",
    ["multishot-no-taker", "abandoned", "drain-defer_taskrun", "drain-no_defer_taskrun"],
)
def test_late_accept_fd_is_closed(how: str) -> None:
    """An accepted connection that nobody will take is closed, never leaked: a multishot accept
    with no ``on_more``, a single-shot accept abandoned while pending, and an accept still in
    flight when ``run()`` returns while a client connects (the loop's drain reaps it)."""
    baseline = open_fd_count()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    clients: list[socket.socket] = []
    ops: list[Operation] = []

    def connect() -> socket.socket:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        clients.append(client)
        return client

    async def main() -> None:
        ring = the_ring()
        if how == "multishot-no-taker":
            op = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC, multishot=True)
            ops.append(op)
            await until(lambda: op.state is OpState.SUBMITTED, "accept submitted")
            before = open_fd_count()
            connect()
            connect()
            await au.sleep(0.05)
            assert not op.done  # a multishot keeps going...
            assert open_fd_count() == before + 2  # ...and each accepted fd was closed at once
        elif how == "abandoned":
            op = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC)
            ops.append(op)
            await until(lambda: op.state is OpState.SUBMITTED, "accept submitted")
            op.abandon()
            connect()
            await until(lambda: op.done, "abandoned accept completed")
            assert op.result is not None
            assert op.result >= 0
            with pytest.raises(OSError) as info:
                os.fstat(op.result)
            assert info.value.errno == errno.EBADF
        else:
            op = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC)
            ops.append(op)
            await until(lambda: op.state is OpState.SUBMITTED, "accept submitted")
            connect()  # completes during the drain (or is cancelled first)
        # run() returns with the accept (if any) still in flight, owned by nobody

    mode = "no_defer_taskrun" if how.endswith("no_defer_taskrun") else "defer_taskrun"
    au.run(main, ring_options=RING_MODES[mode])
    (op,) = ops
    assert op.done
    listener.close()
    for client in clients:
        try:
            assert client.recv(1) == b""  # EOF: the accepted end was closed
        except ConnectionResetError:
            pass  # never accepted: the listener's close reset it
        client.close()
    assert open_fd_count() == baseline


def test_shutdown_drains_ops_before_releasing_buffers(
    sockpair: tuple[socket.socket, socket.socket], big_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run()`` returns with operations in flight that no task awaits (a recv, a 64 MiB read in
    an io-wq worker) and a system task parked on a recv: the loop cancels and drains them, and
    each buffer is let go only after its operation's final CQE was reaped."""
    a, _ = sockpair
    events: list[tuple[str, int, int | None]] = []
    real_dispatch = Ring._dispatch
    real_release = Operation._release

    def dispatch(self: Ring, data: bytes) -> None:
        for i in range(0, len(data), 16):
            ud = int.from_bytes(data[i : i + 8], "little")
            res = int.from_bytes(data[i + 8 : i + 12], "little", signed=True)
            events.append(("cqe", ud, res))
        real_dispatch(self, data)

    def release(self: Operation) -> None:
        events.append(("release", self.user_data, self.result))
        real_release(self)

    monkeypatch.setattr(Ring, "_dispatch", dispatch)
    monkeypatch.setattr(Operation, "_release", release)
    fd = os.open(big_file, os.O_RDONLY)
    recv_buf = bytearray(64)
    read_buf = bytearray(FILE_SIZE)
    sys_buf = bytearray(64)
    kept: dict[str, Any] = {}

    async def system_receiver() -> None:
        ring = the_ring()
        op = ring.recv(a.fileno(), sys_buf)
        kept["sys_op"] = op
        try:
            await au.wait_operation(op)
        except Cancelled:
            kept["sys_cancelled"] = True
            raise

    async def main() -> None:
        ring = the_ring()
        kept["ring"] = ring
        current_runner().spawn_system_task(system_receiver)
        kept["recv"] = ring.recv(a.fileno(), recv_buf)
        kept["read"] = ring.read(fd, read_buf, 0, sqe_flags=IOSQE_ASYNC)
        await until(lambda: kept["read"].state is OpState.SUBMITTED, "ops submitted")
        await au.checkpoint()
        assert pinned(recv_buf)
        assert pinned(read_buf)
        assert pinned(sys_buf)
        assert not kept["recv"].done
        assert not kept["sys_op"].done

    try:
        au.run(main)
    finally:
        os.close(fd)
    ring: Ring = kept["ring"]
    assert ring.closed
    assert kept.get("sys_cancelled")
    for name in ("recv", "read", "sys_op"):
        op: Operation = kept[name]
        assert op.done, name
        if name == "read":
            assert op.result in (-errno.ECANCELED, FILE_SIZE)
        else:
            assert op.result == -errno.ECANCELED
        cqe = events.index(("cqe", op.user_data, op.result))
        assert events.index(("release", op.user_data, op.result)) > cqe, name
    assert not pinned(recv_buf)
    assert not pinned(read_buf)
    assert not pinned(sys_buf)
    assert recv_buf == bytearray(64)
    assert sys_buf == bytearray(64)


@pytest.mark.parametrize("mode", list(RING_MODES), ids=list(RING_MODES))
def test_buffer_not_written_after_cancel_returns(
    mode: str, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Once a cancelled receive has raised ``Cancelled``, the kernel must be done with its
    buffer: a pattern written there afterwards survives the peer's next send (which, without
    DEFER_TASKRUN, would complete a still-armed recv inside ``send()`` itself), and those bytes
    arrive in the next receive."""
    a, b = sockpair
    pattern = b"\xa5" * 64
    rounds = 20
    stats: Counter[str] = Counter()

    async def main() -> None:
        ring = the_ring()
        for i in range(rounds):
            buf = bytearray(64)
            op = ring.recv(a.fileno(), buf)
            with au.move_on_after(0.002) as scope:
                n = await au.wait_operation(op)
                pytest.fail(f"idle recv returned {n}")
            assert scope.cancelled_caught
            buf[:] = pattern
            payload = b"round %d data" % i
            b.send(payload)  # no enter in between: only a still-armed recv could take it
            assert buf == pattern, "the kernel wrote into the buffer after Cancelled was raised"
            await au.sleep(0.001)  # let any straggling completion land
            assert buf == pattern, "the kernel wrote into the buffer after Cancelled was raised"
            fresh = bytearray(64)
            with au.fail_after(5):
                n = await au.wait_operation(ring.recv(a.fileno(), fresh))
            assert fresh[:n] == payload, "data lost"
            stats["ok"] += 1
        assert_ledger_empty()

    au.run(main, ring_options=RING_MODES[mode])
    assert stats["ok"] == rounds


KI_RACE_SCRIPT = r"""
import errno, json, os, signal, sys, threading
import anyio_uring as au
from anyio_uring._core import current_runner

path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
outcomes = {}

def note(key):
    outcomes[key] = outcomes.get(key, 0) + 1

async def main(delay):
    ring = current_runner().ring
    buf = bytearray(size)
    op = ring.read(fd, buf, 0, sqe_flags=16)  # IOSQE_ASYNC: runs in an io-wq worker
    while op.state.name != "SUBMITTED":
        await au.checkpoint()
    written = ring.counters()["sqes_written"]
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        n = await au.wait_operation(op)
    except KeyboardInterrupt:
        note("interrupted the wait (-ECANCELED)")
        raise
    finally:
        timer.join()
    aborted = ring.counters()["sqes_written"] > written  # an ASYNC_CANCEL was queued
    kind = "data after the abort" if aborted else "data before the signal"
    assert n == size, n
    try:
        for _ in range(100):
            await au.checkpoint()
        await au.sleep(0.2)
    except KeyboardInterrupt:
        note(kind + ", then KeyboardInterrupt")
        raise
    note(kind + ", KeyboardInterrupt LOST")

delay = 0.003
for _ in range(15):
    try:
        au.run(main, delay)
    except KeyboardInterrupt:
        pass
    if any(k.startswith("data after the abort") for k in outcomes):
        break
    delay = delay * 2 if "interrupted the wait (-ECANCELED)" in outcomes else delay / 2
os.close(fd)
print(json.dumps(outcomes))
"""


def test_ctrl_c_not_lost_when_aborted_op_returns_data(big_file: Path) -> None:
    """A real SIGINT reaches the main task while it is parked on a 64 MiB read running in an
    io-wq worker: the abort queues ASYNC_CANCEL, the read completes with data anyway
    (-EALREADY); the data is returned -- and KeyboardInterrupt must still be raised at the next
    checkpoint, not dropped because delivery "was attempted".  (Run in a subprocess: real
    signals.)"""
    proc = subprocess.run(
        [sys.executable, "-c", KI_RACE_SCRIPT, str(big_file), str(FILE_SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)
    assert not any("LOST" in key for key in outcomes), outcomes
    assert outcomes.get("data after the abort, then KeyboardInterrupt"), outcomes


WAIT_DONE_SCRIPT = r"""
import errno, json, socket
import anyio_uring as au
from anyio_uring._core import current_runner

out = {}

async def main():
    ring = current_runner().ring
    nop = ring.nop()
    await au.sleep(0.01)  # completes with nobody waiting
    assert nop.done
    out["late wait"] = await au.wait_operation(nop)
    a, b = socket.socketpair()
    withdrawn = ring.recv(a.fileno(), bytearray(8))
    ring.cancel(withdrawn)  # withdrawn before any enter: done, -ECANCELED
    with au.CancelScope() as scope:
        scope.cancel()
        # a result already in hand is returned even in a cancelled scope...
        out["withdrawn"] = await au.wait_operation(withdrawn)
        out["then"] = "not cancelled"
        await au.checkpoint()  # ...and the cancellation lands at the next checkpoint
        out["then"] = "checkpoint passed"
    out["caught"] = scope.cancelled_caught
    recv = ring.recv(a.fileno(), bytearray(8))
    async with au.open_nursery() as nursery:
        nursery.start_soon(au.wait_operation, recv)
        await au.checkpoint()
        try:
            await au.wait_operation(recv)
        except RuntimeError as exc:
            out["second waiter"] = "already waiting" in str(exc)
        b.send(b"x")
    a.close(); b.close()

au.run(main)
print(json.dumps(out))
"""


def test_wait_operation_on_a_completed_op_returns() -> None:
    """Waiting for an operation that already completed (or was withdrawn) returns its result at
    once instead of parking forever -- uncancellably, since the abort can only answer FAILED.
    A second waiter on one operation is refused instead of silently stranding the first.
    (A subprocess: the failure mode is a hang.)"""
    proc = subprocess.run(
        [sys.executable, "-c", WAIT_DONE_SCRIPT], capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "late wait": 0,
        "withdrawn": -errno.ECANCELED,
        "then": "not cancelled",
        "caught": True,
        "second waiter": True,
    }
