"""The ring layer's and the cancel bridge's promises found broken by outside review (issue 8):
owned fd results, CLOSE never withdrawn or cancelled, the result CQE vs the release CQE, errnos
our own cancel causes, a cancel that could not be queued, close-while-waiting through one helper.

Every test here failed on the code before the fix (named per test); all use the real kernel.
"""

from __future__ import annotations

import errno
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path as SyncPath
from typing import Any

import anyio
import pytest

import anyio_uring as au
from anyio_uring._ring import Operation, OpState, Ring

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        return False
    return True


# ------------------------------------------------------------------------------------------
# per-opcode facts and owned fds
# ------------------------------------------------------------------------------------------


def test_opcode_facts_are_data() -> None:
    from anyio_uring._ring import FACTS

    by_name = dict(FACTS)
    assert by_name[19].cancellable is False  # CLOSE
    assert {op for op, facts in by_name.items() if facts.returns_fd} == {13, 18, 45}  # ACCEPT OPENAT SOCKET
    assert [op for op, facts in by_name.items() if facts.result_on_more] == [47]  # SEND_ZC


def test_owned_fd_closes_unless_taken() -> None:
    from anyio_uring._ring import OwnedFd

    r, w = os.pipe()
    with OwnedFd(r) as owned:
        assert owned.fd == r
    assert not _is_open(r)
    with OwnedFd(w) as owned:
        assert owned.take() == w
        assert not owned.owned
        with pytest.raises(ValueError, match="already taken"):
            owned.take()
    assert _is_open(w)
    os.close(w)
    with pytest.raises(ValueError, match="non-negative"):
        OwnedFd(-1)


def test_dropped_owned_fd_is_closed_with_a_resource_warning() -> None:
    from anyio_uring._ring import OwnedFd

    r, w = os.pipe()
    os.close(w)
    owned: Any = OwnedFd(r)
    with pytest.warns(ResourceWarning, match=f"unclosed owned file descriptor {r}"):
        del owned
    assert not _is_open(r)


def test_close_is_never_withdrawn_nor_cancelled(ring: Ring, drive: Any) -> None:
    """Before: Ring.cancel withdrew a queued CLOSE (returned True) and the fd stayed open."""
    r, w = os.pipe()
    op = ring.close_fd(r)
    assert op.state is OpState.QUEUED
    assert ring.cancel(op) is False
    ring.submit()
    assert ring.cancel(op) is False
    drive(ring, op)
    assert op.result == 0
    assert not _is_open(r)
    os.close(w)


def test_wait_owned_fd_hands_over_an_owned_fd(tmp_path: SyncPath) -> None:
    from anyio_uring.cancel import wait_owned_fd

    target = tmp_path / "f"

    async def main() -> int:
        ring = au._core.current_runner().ring
        with await wait_owned_fd(ring.openat(-100, target, os.O_CREAT | os.O_WRONLY)) as owned:
            fd = owned.fd
            assert _is_open(fd)
        return fd

    fd = au.run(main)
    assert not _is_open(fd)

    async def missing() -> None:
        ring = au._core.current_runner().ring
        await wait_owned_fd(ring.openat(-100, tmp_path / "no" / "such", os.O_RDONLY))

    with pytest.raises(FileNotFoundError):
        au.run(missing)


# ------------------------------------------------------------------------------------------
# defect 10: Path.touch leaked its fd when cancelled just after OPENAT
# ------------------------------------------------------------------------------------------


def test_cancelled_touch_never_leaks_its_fd(tmp_path: SyncPath) -> None:
    """Before: ~30 % of these cancellations left the touched file's fd open (the CLOSE after a
    completed OPENAT was withdrawn and Cancelled raised)."""
    rng = random.Random(10)

    async def main() -> None:
        for i in range(400):
            path = au.Path(tmp_path / f"t{i}")
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def cancel_soon(scope: anyio.CancelScope = scope) -> None:
                    for _ in range(rng.randrange(8)):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                tg.start_soon(cancel_soon)
                with scope:
                    await path.touch(exist_ok=False)

    before = _open_fds()
    anyio.run(main, backend="uring")
    assert _open_fds() - before == set()


# ------------------------------------------------------------------------------------------
# defect 11: Ctrl+C just before a shielded aclose() leaked the fd
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs SIGINT")
def test_ctrl_c_before_shielded_aclose_still_closes(tmp_path: SyncPath) -> None:
    """Before: the KeyboardInterrupt delivery withdrew the queued CLOSE; the file was marked
    closed with its fd still open.  Now the CLOSE completes and the interrupt follows it."""
    target = tmp_path / "f"
    target.write_bytes(b"x")
    seen: dict[str, Any] = {}

    async def main() -> None:
        f = await au.open_file(target, "rb", buffering=0)
        seen["fd"] = f.fileno()
        try:
            with anyio.CancelScope(shield=True):
                signal.raise_signal(signal.SIGINT)
                await f.aclose()
            seen["closed"] = True
            await anyio.lowlevel.checkpoint()
        except KeyboardInterrupt:
            seen["ki"] = True

    anyio.run(main, backend="uring")
    assert seen.get("ki") is True
    assert seen.get("closed") is True
    assert not _is_open(seen["fd"])


def test_cancel_while_parked_on_close_waits_for_it(tmp_path: SyncPath) -> None:
    """A cancel scope reaching a task parked on CLOSE: the close completes, then Cancelled."""
    fds: list[int] = []

    async def main() -> None:
        ring = au._core.current_runner().ring
        r, w = os.pipe()
        fds.extend((r, w))
        with anyio.CancelScope() as scope:
            scope.cancel()
            res = await au.wait_operation(ring.close_fd(r))  # parked: cancellation pending
            fds.append(res)
            await anyio.lowlevel.checkpoint()
            pytest.fail("the cancellation did not land at the next checkpoint")
        assert scope.cancelled_caught
        os.close(w)

    anyio.run(main, backend="uring")
    assert fds[2] == 0
    assert not _is_open(fds[0])


# ------------------------------------------------------------------------------------------
# defect 9: errnos caused by our own cancel escaped the cancelled scope
# ------------------------------------------------------------------------------------------


def test_cancelled_fifo_open_for_writing_is_just_cancelled(tmp_path: SyncPath) -> None:
    """Before: OSError(512, 'Unknown error 512') escaped move_on_after (the io-wq OPENAT
    interrupted by ASYNC_CANCEL answers -ERESTARTSYS)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> bool:
        with anyio.move_on_after(0.2) as scope:
            await au.open_file(fifo, "wb")
        return scope.cancelled_caught

    before = _open_fds()
    for _ in range(3):
        assert anyio.run(main, backend="uring") is True
    assert _open_fds() - before == set()


# ------------------------------------------------------------------------------------------
# defect 12: a cancel that could not be queued
# ------------------------------------------------------------------------------------------

_SQ_STUCK = r"""
import ctypes, errno, json, os, struct, sys
from anyio_uring._ring import Ring, RingOptions

arch = int(sys.argv[1])
ring = Ring(RingOptions(entries=4))
r, w = os.pipe()
read = ring.read(r, bytearray(16))
ring.submit()                       # the kernel owns the read now
for _ in range(4):                  # fill the SQ without submitting
    ring.nop()

# From now on io_uring_enter fails with EBUSY: the kernel will take no more SQEs.
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
prog = [(BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ_K, 0, 3, arch), (BPF_LD_W_ABS, 0, 0, 0),
        (BPF_JEQ_K, 0, 1, 426), (BPF_RET_K, 0, 0, 0x00050000 | errno.EBUSY), (BPF_RET_K, 0, 0, 0x7FFF0000)]
raw = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
filt = ctypes.create_string_buffer(raw, len(raw))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(Prog(len(prog), ctypes.addressof(filt))), 0, 0) == 0

out = {}
for attempt in (1, 2):
    try:
        ring.cancel(read)
        out[f"cancel{attempt}"] = "no error"
    except OSError as exc:
        out[f"cancel{attempt}"] = exc.errno
    out[f"state{attempt}"] = read.state.name
print(json.dumps(out), flush=True)
os._exit(0)                         # the ring cannot be drained any more
"""


@pytest.mark.skipif(AUDIT_ARCH is None, reason=f"no seccomp arch constant for {platform.machine()}")
def test_cancel_that_cannot_be_queued_leaves_the_operation_as_it_was() -> None:
    """Before: the operation was marked CANCEL_REQUESTED before queueing the ASYNC_CANCEL
    failed, so a later cancel did nothing and its waiter could park forever."""
    proc = subprocess.run(
        [sys.executable, "-c", _SQ_STUCK, str(AUDIT_ARCH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout)
    assert out == {
        "cancel1": errno.EBUSY,
        "state1": "SUBMITTED",
        "cancel2": errno.EBUSY,
        "state2": "SUBMITTED",
    }


def test_a_raising_abort_does_not_keep_siblings_from_being_cancelled() -> None:
    """Before: an exception from one task's abort callback escaped the cancel-status walk half
    way, and the tasks under nested scopes were never told (they slept on until their timeout)."""
    outcome: dict[str, Any] = {"sleepers": 0}

    async def bad_waiter() -> None:
        outcome["bad"] = au.current_task()

        def abort(_: Any) -> au.Abort:
            raise RuntimeError("abort failed")

        await au.wait_task_rescheduled(abort)

    async def sleeper() -> None:
        with au.CancelScope():  # a child status: visited after the nursery's own tasks
            try:
                await au.sleep(5)
            except au.Cancelled:
                outcome["sleepers"] += 1
                raise

    async def main() -> None:
        async with au.open_nursery() as nursery:
            nursery.start_soon(bad_waiter)
            for _ in range(5):
                nursery.start_soon(sleeper)
            await au.wait_all_tasks_blocked()
            try:
                nursery.cancel_scope.cancel()
            except RuntimeError as exc:
                outcome["error"] = str(exc)
            au._core.reschedule(outcome.pop("bad"))  # still parked: its abort never answered

    au.run(main)
    assert outcome == {"sleepers": 5, "error": "abort failed"}


# ------------------------------------------------------------------------------------------
# the result CQE vs the release CQE (SEND_ZC)
# ------------------------------------------------------------------------------------------


def test_send_zc_result_comes_first_memory_is_released_on_the_notification(ring: Ring, drive: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        data = bytearray(os.urandom(65536))
        calls: list[Operation] = []
        op = ring.send_zc(client.fileno(), data)
        op.callback = calls.append
        drive(ring, op)
        assert calls == [op]
        assert op.result == len(data)  # the byte count, not the notification's res
        assert ring.bytes_pinned == 0
        got = bytearray()
        while len(got) < len(data):
            got += server.recv(len(data))
        assert got == data
    finally:
        for s in (client, server, listener):
            s.close()


def test_send_zc_failure_still_waits_for_the_notification(ring: Ring, drive: Any) -> None:
    a, b = socket.socketpair()
    try:
        op = ring.send_zc(a.fileno(), b"not on AF_UNIX")
        drive(ring, op)
        assert op.result == -errno.EOPNOTSUPP
        assert op.done
        assert ring.bytes_pinned == 0
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------------------
# one close-while-waiting helper
# ------------------------------------------------------------------------------------------


def test_notify_closing_ends_a_withdrawn_and_a_submitted_wait() -> None:
    async def main() -> list[str]:
        a, b = socket.socketpair()
        got: list[str] = []

        async def waiter() -> None:
            try:
                await anyio.wait_readable(a)
            except anyio.ClosedResourceError:
                got.append("closed")

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()  # the POLL_ADD is queued, maybe not submitted
            anyio.notify_closing(a)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()  # now the kernel has it
            anyio.notify_closing(a)
        a.close()
        b.close()
        return got

    assert anyio.run(main, backend="uring") == ["closed", "closed"]


def test_the_cancel_bridge_is_the_only_place_that_cancels() -> None:
    """Cancelling an operation appears only in the ring layer, the cancel bridge and the I/O
    seam's shutdown drain -- not in files, pipes, processes or the anyio adapter."""
    root = SyncPath(au.__file__).parent
    pattern = re.compile(r"\bring\.cancel\(|cancel_fd|\bop\.cancel\(|\.cancel\(op\b")
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("_ring/") or rel in ("_core/_cancel.py", "_core/_io.py"):
            continue
        offenders += [
            f"{rel}: {line.strip()}" for line in path.read_text().splitlines() if pattern.search(line)
        ]
    assert offenders == []


def test_blocking_ring_waits_only_in_the_io_seam() -> None:
    """The loop and shutdown drains wait through `_core/_io.py`; nothing else blocks on the ring."""
    root = SyncPath(au.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("_ring/") or rel == "_core/_io.py":
            continue
        if "ring.wait(" in path.read_text():
            offenders.append(rel)
    assert offenders == []
