"""Ring and Operation against the real kernel: every prep method round-trips, the SQ-full and
CQ-overflow paths lose nothing, stale CQEs are rejected, closing drains, and cancellation follows
the measured kernel semantics (KERNEL-FACTS.md section 2)."""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anyio_uring._errors import RingClosedError
from anyio_uring._native import ffi, lib
from anyio_uring._ring import Operation, OpState, Ring
from anyio_uring._ring._buffers import ProvidedBufferRing
from anyio_uring._ring._msghdr import MsgHdr
from support import pinned

Drive = Callable[..., None]
AT_FDCWD = -100
AT_REMOVEDIR = 0x200
STATX_BASIC_STATS = 0x7FF
P_PID = 1
WEXITED = 4
CLD_EXITED = 1


def sockaddr_in(host: str, port: int) -> bytes:
    """A raw ``struct sockaddr_in``."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    (family,) = struct.unpack_from("=H", raw, 0)
    assert family == socket.AF_INET
    (port,) = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port


def reap_one(ring: Ring, timeout: float = 5.0) -> tuple[int, int, int]:
    """Harvest exactly one CQE through the native wait and dispatch it; returns (ud, res, flags)."""
    out = ffi.new("aur_cqe[1]")
    n = lib.aur_wait(ring._c, 1, int(timeout * 1e9), out, 1)
    assert n == 1, f"no CQE within {timeout}s (rc={n})"
    raw = bytes(ffi.buffer(out, 16))
    ring._dispatch(raw)
    ud, res, flags = struct.unpack("QiI", raw)
    return ud, res, flags


def wait_cq_ready(ring: Ring, n: int, timeout: float = 5.0) -> None:
    """Wait (without entering the ring) until ``n`` CQEs sit in the CQ: the kernel's task work
    runs whenever this thread returns from a syscall, here the sleep's."""
    deadline = time.monotonic() + timeout
    while lib.aur_cq_ready(ring._c) < n and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lib.aur_cq_ready(ring._c) == n


@pytest.fixture
def listener() -> Any:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv
    srv.close()


# ============================================================================ basic prep methods


def test_nop(ring: Ring, drive: Drive) -> None:
    op = ring.nop()
    assert op.state is OpState.QUEUED
    seen: list[Operation] = []
    op.callback = seen.append
    drive(ring, op)
    assert op.result == 0
    assert seen == [op]
    assert op.state is OpState.DONE
    assert ring.inflight == 0


def test_write_then_read_file(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        w = ring.write(fd, b"hello, ring", offset=3)
        drive(ring, w)
        assert w.unwrap() == 11
        assert path.read_bytes() == b"\0\0\0hello, ring"
        buf = bytearray(5)
        r = ring.read(fd, buf, offset=8)
        drive(ring, r)
        assert r.result == 5
        assert bytes(buf) == b", rin"
        # offset -1: the file position, which the read advances
        os.lseek(fd, 3, os.SEEK_SET)
        buf2 = bytearray(5)
        r2 = ring.read(fd, buf2)
        drive(ring, r2)
        assert bytes(buf2) == b"hello"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 8
    finally:
        os.close(fd)


def test_read_error_is_negative_errno(ring: Ring, drive: Drive) -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        op = ring.read(w, bytearray(4))  # write end of a pipe: not readable
        drive(ring, op)
        assert op.result == -errno.EBADF
        with pytest.raises(OSError) as info:
            op.unwrap()
        assert info.value.errno == errno.EBADF
    finally:
        os.close(w)


def test_send_and_recv(ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    buf = bytearray(32)
    rop = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    assert not rop.done  # idle: nothing to receive yet
    assert pinned(buf)
    sop = ring.send(a.fileno(), b"over the ring")
    drive(ring, sop, rop)
    assert sop.result == 13
    assert rop.result == 13
    assert bytes(buf[:13]) == b"over the ring"
    assert not pinned(buf)
    assert ring.bytes_pinned == 0


def test_sendmsg_gathers_buffers(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    msg = MsgHdr([b"scatter ", memoryview(b"and gather")])
    op = ring.sendmsg(a.fileno(), msg)
    drive(ring, op)
    assert op.result == 18
    assert b.recv(64) == b"scatter and gather"


def test_recvmsg_scm_rights(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, b = sockpair
    path = tmp_path / "passed"
    path.write_bytes(b"through a unix socket")
    passed_fd = os.open(path, os.O_RDONLY)
    try:
        # send the fd with the ring too: SENDMSG with an SCM_RIGHTS control message
        cmsg = struct.pack("=Qiii", socket.CMSG_LEN(4), socket.SOL_SOCKET, socket.SCM_RIGHTS, passed_fd)
        cmsg += bytes(socket.CMSG_SPACE(4) - len(cmsg))
        send = ring.sendmsg(a.fileno(), MsgHdr([b"fd!"], control=cmsg))
        data = bytearray(16)
        msg = MsgHdr([data], writable=True, control_capacity=socket.CMSG_SPACE(4))
        recv = ring.recvmsg(b.fileno(), msg)
        drive(ring, send, recv)
    finally:
        os.close(passed_fd)
    assert send.result == 3
    assert recv.result == 3
    assert bytes(data[:3]) == b"fd!"
    control = msg.control()
    assert len(control) == socket.CMSG_SPACE(4)
    length, level, kind, got_fd = struct.unpack_from("=Qiii", control)
    assert (length, level, kind) == (socket.CMSG_LEN(4), socket.SOL_SOCKET, socket.SCM_RIGHTS)
    try:
        assert got_fd != passed_fd
        assert os.fstat(got_fd).st_ino == path.stat().st_ino
        assert os.read(got_fd, 64) == b"through a unix socket"
    finally:
        os.close(got_fd)
    assert msg.flags & socket.MSG_CTRUNC == 0


def test_udp_sendmsg_and_recvmsg_with_name(ring: Ring, drive: Drive) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        data = bytearray(64)
        msg = MsgHdr([data], writable=True, name_capacity=16)
        recv = ring.recvmsg(rx.fileno(), msg)
        # the datagram's destination is given in msg_name
        send = ring.sendmsg(tx.fileno(), MsgHdr([b"datagram"], name=sockaddr_in(*rx.getsockname())))
        drive(ring, send, recv)
        assert send.result == 8
        assert recv.result == 8
        assert bytes(data[:8]) == b"datagram"
        assert parse_sockaddr_in(msg.name()) == tx.getsockname()
    finally:
        rx.close()
        tx.close()


def test_socket_connect_accept(ring: Ring, drive: Drive, listener: socket.socket) -> None:
    sop = ring.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    drive(ring, sop)
    client = socket.socket(fileno=sop.unwrap())
    try:
        assert client.family == socket.AF_INET
        assert client.type == socket.SOCK_STREAM
        acc = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC)
        con = ring.connect(client.fileno(), sockaddr_in(*listener.getsockname()))
        drive(ring, acc, con)
        assert con.result == 0
        server = socket.socket(fileno=acc.unwrap())
        try:
            addr, addrlen = acc.output
            assert parse_sockaddr_in(bytes(ffi.buffer(addr, addrlen[0]))) == client.getsockname()
            assert server.getpeername() == client.getsockname()
            client.sendall(b"ping")
            assert server.recv(4) == b"ping"
        finally:
            server.close()
    finally:
        client.close()


def test_connect_refused(ring: Ring, drive: Drive) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on port any more
    s = socket.socket()
    try:
        op = ring.connect(s.fileno(), sockaddr_in("127.0.0.1", port))
        drive(ring, op)
        assert op.result == -errno.ECONNREFUSED
    finally:
        s.close()


def test_accept_abandoned_after_completion_closes_fd(
    ring: Ring, drive: Drive, listener: socket.socket
) -> None:
    acc = ring.accept(listener.fileno())
    client = socket.create_connection(listener.getsockname())
    try:
        drive(ring, acc)
        fd = acc.unwrap()
        os.fstat(fd)
        acc.abandon()  # nobody takes the connection: it is closed, not leaked
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
        client.settimeout(5)
        assert client.recv(1) == b""
    finally:
        client.close()


def test_abandon_twice_closes_once(ring: Ring, drive: Drive) -> None:
    """An fd number is reused as soon as it is closed: a second abandon() must not close the
    unrelated file that now has the number."""
    op = ring.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    op.abandon()  # abandoned while in flight: the fd is closed when the CQE arrives
    drive(ring, op)
    fd = op.unwrap()
    with pytest.raises(OSError):
        os.fstat(fd)
    r, w = os.pipe()
    try:
        assert fd in (r, w)  # the number was reused
        op.abandon()
        op.abandon()
        os.fstat(r)
        os.fstat(w)
    finally:
        os.close(r)
        os.close(w)


def test_multishot_accept(ring: Ring, drive: Drive, listener: socket.socket) -> None:
    fds: list[int] = []
    op = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC, multishot=True)
    op.on_more = lambda _op, res, flags: fds.append(res)
    clients = []
    try:
        for i in range(3):
            clients.append(socket.create_connection(listener.getsockname()))
            deadline = time.monotonic() + 5
            while len(fds) < i + 1 and time.monotonic() < deadline:
                ring.wait(timeout=0.5)
        assert len(fds) == 3
        assert not op.done  # still armed
        for fd, client in zip(fds, clients, strict=True):
            with socket.socket(fileno=os.dup(fd)) as server:
                assert server.getpeername() == client.getsockname()
        assert not ring.cancel(op)
        drive(ring, op)
        assert op.result == -errno.ECANCELED
    finally:
        for fd in fds:
            os.close(fd)
        for c in clients:
            c.close()


def _open_fds() -> set[int]:
    """The open fds, without the one os.listdir used for the listing itself."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds


@pytest.mark.parametrize("defer", [True, False], ids=["defer_taskrun", "flags0"])
def test_multishot_accept_fds_after_abandon_are_closed(
    make_ring: Callable[..., Ring], drive: Drive, listener: socket.socket, defer: bool
) -> None:
    ring = make_ring(disable=frozenset() if defer else frozenset({"single_issuer"}), use_environment=False)
    assert ring.support.defer_taskrun is defer
    delivered: list[int] = []
    op = ring.accept(listener.fileno(), socket.SOCK_CLOEXEC, multishot=True)
    op.on_more = lambda _op, res, flags: delivered.append(res)
    ring.wait(timeout=0)  # armed
    before = _open_fds()
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        op.abandon()  # the owner (a listener) goes away
        if not defer:
            # Without DEFER_TASKRUN the connections are accepted and their CQEs posted by task
            # work that runs on our next return to user mode, without any enter; they reach the
            # ring only after the op was abandoned and cancelled.
            wait_cq_ready(ring, 3)
            assert ring.cancel(op) is False
        # With DEFER_TASKRUN the connections are accepted inside our next enters.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ring.wait(timeout=0.05)
            if len(select.select(clients, [], [], 0)[0]) == len(clients):
                break
        for c in clients:
            c.settimeout(5)
            assert c.recv(1) == b""  # EOF: the accepted end was closed, not leaked
        assert delivered == []
        if defer:
            assert not op.done  # still armed, still accepting (and closing)
            assert ring.cancel(op) is False
        drive(ring, op)
        assert op.result == -errno.ECANCELED
        # nothing but the clients' own sockets was added to the fd table
        assert _open_fds() - before == {c.fileno() for c in clients}
    finally:
        for c in clients:
            c.close()


def test_shutdown(ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    op = ring.shutdown(a.fileno(), socket.SHUT_WR)
    drive(ring, op)
    assert op.result == 0
    b.settimeout(5)
    assert b.recv(1) == b""  # EOF
    with pytest.raises(BrokenPipeError):
        a.send(b"x")


def test_close_fd(ring: Ring, drive: Drive) -> None:
    r, w = os.pipe()
    os.close(r)
    op = ring.close_fd(w)
    drive(ring, op)
    assert op.result == 0
    with pytest.raises(OSError) as info:
        os.fstat(w)
    assert info.value.errno == errno.EBADF
    again = ring.close_fd(w)
    drive(ring, again)
    assert again.result == -errno.EBADF


# ================================================================================ file system ops


def test_openat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"opened by the ring")
    op = ring.openat(AT_FDCWD, tmp_path / "x", os.O_RDONLY | os.O_CLOEXEC)
    missing = ring.openat(AT_FDCWD, str(tmp_path / "missing"), os.O_RDONLY)
    drive(ring, op, missing)
    fd = op.unwrap()
    try:
        assert os.read(fd, 100) == b"opened by the ring"
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    assert missing.result == -errno.ENOENT


def test_openat_relative_to_dirfd_creates(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        op = ring.openat(dirfd, b"new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        drive(ring, op)
        os.close(op.unwrap())
    finally:
        os.close(dirfd)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_statx(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    path = tmp_path / "sized"
    path.write_bytes(b"x" * 12345)
    path.chmod(0o604)
    op = ring.statx(AT_FDCWD, path, 0, STATX_BASIC_STATS)
    dop = ring.statx(AT_FDCWD, tmp_path, 0, STATX_BASIC_STATS)
    gone = ring.statx(AT_FDCWD, tmp_path / "nope", 0, STATX_BASIC_STATS)
    drive(ring, op, dop, gone)
    assert op.result == 0
    raw = bytes(ffi.buffer(op.output, 256))
    (mode,) = struct.unpack_from("=H", raw, 0x1C)
    (size,) = struct.unpack_from("=Q", raw, 0x28)
    assert size == 12345
    assert stat.S_ISREG(mode)
    assert stat.S_IMODE(mode) == 0o604
    (dmode,) = struct.unpack_from("=H", bytes(ffi.buffer(dop.output, 256)), 0x1C)
    assert stat.S_ISDIR(dmode)
    assert gone.result == -errno.ENOENT


def test_fsync(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    r, w = os.pipe()
    try:
        os.write(fd, b"durable")
        full = ring.fsync(fd)
        data = ring.fsync(fd, datasync=True)
        on_pipe = ring.fsync(w)
        drive(ring, full, data, on_pipe)
        assert full.result == 0
        assert data.result == 0
        assert on_pipe.result == -errno.EINVAL  # the kernel looked at the fd
    finally:
        for f in (fd, r, w):
            os.close(f)


def test_ftruncate(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        shrink = ring.ftruncate(fd, 4)
        drive(ring, shrink)
        assert shrink.result == 0
        assert path.read_bytes() == b"0123"
        grow = ring.ftruncate(fd, 4096)
        drive(ring, grow)
        assert grow.result == 0
        assert path.stat().st_size == 4096
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        ring.ftruncate(0, -1)


def test_unlinkat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    f = ring.unlinkat(AT_FDCWD, tmp_path / "file")
    d = ring.unlinkat(AT_FDCWD, tmp_path / "dir", AT_REMOVEDIR)
    missing = ring.unlinkat(AT_FDCWD, tmp_path / "file2")
    drive(ring, f, d, missing)
    assert (f.result, d.result, missing.result) == (0, 0, -errno.ENOENT)
    assert list(tmp_path.iterdir()) == []


def test_renameat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"moved")
    op = ring.renameat(AT_FDCWD, tmp_path / "old", AT_FDCWD, tmp_path / "new")
    drive(ring, op)
    assert op.result == 0
    assert not (tmp_path / "old").exists()
    assert (tmp_path / "new").read_bytes() == b"moved"


def test_mkdirat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    op = ring.mkdirat(AT_FDCWD, tmp_path / "sub", 0o700)
    twice = ring.mkdirat(AT_FDCWD, tmp_path / "sub")
    drive(ring, op)
    drive(ring, twice)
    assert op.result == 0
    assert twice.result == -errno.EEXIST
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o700 & ~_umask()


def test_symlinkat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    op = ring.symlinkat("target/elsewhere", AT_FDCWD, tmp_path / "link")
    drive(ring, op)
    assert op.result == 0
    assert os.readlink(tmp_path / "link") == "target/elsewhere"


def test_linkat(ring: Ring, drive: Drive, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"shared")
    op = ring.linkat(AT_FDCWD, tmp_path / "a", AT_FDCWD, tmp_path / "b")
    drive(ring, op)
    assert op.result == 0
    assert (tmp_path / "b").stat().st_ino == (tmp_path / "a").stat().st_ino
    assert (tmp_path / "a").stat().st_nlink == 2


def test_paths_with_nul_are_refused(ring: Ring) -> None:
    with pytest.raises(ValueError):
        ring.openat(AT_FDCWD, "a\0b", os.O_RDONLY)
    assert ring.inflight == 0


# ======================================================================= poll, timeout, waitid


def test_poll_add_single_shot(ring: Ring, drive: Drive) -> None:
    r, w = os.pipe()
    try:
        op = ring.poll_add(r, select.POLLIN)
        ring.wait(timeout=0.01)
        assert not op.done  # nothing to read yet
        os.write(w, b"!")
        drive(ring, op)
        assert op.result is not None
        assert op.result & select.POLLIN
    finally:
        os.close(r)
        os.close(w)


def test_poll_add_multishot(ring: Ring, drive: Drive) -> None:
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    events: list[tuple[int, int]] = []
    try:
        op = ring.poll_add(efd, select.POLLIN, multishot=True)
        op.on_more = lambda _op, res, flags: events.append((res, flags))
        ring.wait(timeout=0)
        for i in range(3):
            os.eventfd_write(efd, 1)  # edge per write, the counter is never drained
            deadline = time.monotonic() + 5
            while len(events) < i + 1 and time.monotonic() < deadline:
                ring.wait(timeout=0.5)
        assert len(events) == 3
        assert all(res & select.POLLIN and flags & lib.AUR_CQE_F_MORE for res, flags in events)
        assert not op.done
        assert os.eventfd_read(efd) == 3
        ring.cancel(op)
        drive(ring, op)
        assert op.result == -errno.ECANCELED
    finally:
        os.close(efd)


def test_timeout(ring: Ring, drive: Drive) -> None:
    t0 = time.monotonic()
    op = ring.timeout(0.03)
    drive(ring, op)
    elapsed = time.monotonic() - t0
    assert op.result == -errno.ETIME
    assert 0.029 <= elapsed < 2.0
    with pytest.raises(ValueError):
        ring.timeout(-1)


def test_waitid(ring: Ring, drive: Drive) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(7)
    op = ring.waitid(P_PID, pid, WEXITED)
    drive(ring, op)
    assert op.result == 0
    info = bytes(ffi.buffer(op.output, 128))
    si_signo, _errno, si_code = struct.unpack_from("=iii", info, 0)
    si_pid, _uid, si_status = struct.unpack_from("=iIi", info, 16)
    assert si_signo == 17  # SIGCHLD
    assert si_code == CLD_EXITED
    assert si_pid == pid
    assert si_status == 7
    # WAITID reaped the child
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)


# ================================================================================ buffer rings


def test_recv_select_single_shot_recycles(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=7, count=2, size=64)
    assert group.kernel_head() == 0
    # with only two buffers, five receives work only if every buffer goes back to the kernel
    for i in range(5):
        op = ring.recv_select(b.fileno(), group)
        ring.wait(timeout=0)
        assert not op.done  # idle: and no buffer is taken while idle
        assert group.kernel_head() == i
        a.sendall(f"message {i}".encode())
        drive(ring, op)
        assert op.result == 9
        assert op.cqe_flags is not None
        assert op.cqe_flags & lib.AUR_CQE_F_BUFFER
        assert group.take(op.result, op.cqe_flags) == f"message {i}".encode()
        assert group.kernel_head() == i + 1
    group.close()


def test_recv_select_runs_dry_enobufs(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=3, count=2, size=16)
    held = []
    for msg in (b"first", b"second"):
        a.sendall(msg)
        op = ring.recv_select(b.fileno(), group)
        drive(ring, op)
        assert op.result == len(msg)
        held.append(op)  # not taken: the buffer stays with us
    a.sendall(b"third")
    dry = ring.recv_select(b.fileno(), group)
    drive(ring, dry)
    assert dry.result == -errno.ENOBUFS
    assert b.recv(16) == b"third"  # the data stayed in the socket
    bids = {op.cqe_flags >> lib.AUR_CQE_BUFFER_SHIFT for op in held if op.cqe_flags is not None}
    assert bids == {0, 1}
    assert [group.take(op.result, op.cqe_flags) for op in held if op.result and op.cqe_flags] == [
        b"first",
        b"second",
    ]
    a.sendall(b"fourth")
    again = ring.recv_select(b.fileno(), group)
    drive(ring, again)
    assert again.result == 6
    assert again.cqe_flags is not None
    assert group.take(again.result, again.cqe_flags) == b"fourth"


def test_recv_select_multishot(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=9, count=2, size=64)
    got: list[bytes] = []
    op = ring.recv_select(b.fileno(), group, multishot=True)
    op.on_more = lambda _op, res, flags: got.append(group.take(res, flags))
    ring.wait(timeout=0)
    for i in range(6):  # three times as many messages as buffers: recycling is essential
        a.sendall(f"chunk {i}".encode())
        deadline = time.monotonic() + 5
        while len(got) < i + 1 and time.monotonic() < deadline:
            ring.wait(timeout=0.5)
    assert got == [f"chunk {i}".encode() for i in range(6)]
    assert not op.done
    ring.cancel(op)
    drive(ring, op)
    assert op.result == -errno.ECANCELED


def test_recv_select_multishot_ends_with_enobufs(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=10, count=2, size=64)
    got: list[tuple[int, int]] = []
    op = ring.recv_select(b.fileno(), group, multishot=True)
    op.on_more = lambda _op, res, flags: got.append((res, flags))  # never recycles
    ring.wait(timeout=0)
    for i in range(3):
        a.sendall(f"m{i}".encode())
        deadline = time.monotonic() + 5
        while len(got) < min(i + 1, 2) and not op.done and time.monotonic() < deadline:
            ring.wait(timeout=0.2)
    drive(ring, op)
    assert len(got) == 2
    assert op.result == -errno.ENOBUFS  # final CQE (no F_MORE): the multishot has ended
    assert b.recv(16) == b"m2"  # and the data it could not take is still in the socket
    assert [group.take(res, flags) for res, flags in got] == [b"m0", b"m1"]


def test_buffer_ring_close_refused_while_in_use(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=11, count=1, size=8)
    op = ring.recv_select(b.fileno(), group)
    with pytest.raises(RuntimeError):
        group.close()
    a.sendall(b"ok")
    drive(ring, op)
    assert op.cqe_flags is not None
    assert group.take(2, op.cqe_flags) == b"ok"
    group.close()
    with pytest.raises(ValueError):
        ProvidedBufferRing(ring, bgid=11, count=3, size=8)


# ============================================================================ batching and overflow


def test_ten_thousand_nops_through_a_small_sq(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(entries=64, use_environment=False)
    assert ring.support.sq_entries == 64
    counts: Counter[int] = Counter()
    ops = []
    for _ in range(10_000):
        op = ring.nop()
        op.callback = lambda o: counts.update((o.user_data,))
        ops.append(op)
    assert ring.counters()["sq_full_flushes"] > 0
    deadline = time.monotonic() + 30
    while ring.inflight and time.monotonic() < deadline:
        ring.wait(timeout=1)
    assert ring.inflight == 0
    assert len(counts) == 10_000
    assert set(counts.values()) == {1}
    assert counts.keys() == {op.user_data for op in ops}
    assert all(op.result == 0 for op in ops)
    assert ring.rejected_cqes == 0
    # submitted in SQ-sized batches, not one enter per NOP
    assert ring.counters()["enters"] < 10_000 // 64 * 3


def test_cq_overflow_loses_nothing(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(entries=8, cq_entries=8, use_environment=False)
    assert ring.support.cq_entries == 8
    order: list[int] = []
    ops = []
    for _ in range(500):
        for _ in range(8):
            op = ring.nop()
            op.callback = lambda o: order.append(o.user_data)
            ops.append(op)
        ring.submit()  # completions pile up: nothing is reaped
    assert lib.aur_cq_ready(ring._c) == 8  # the CQ is full; the rest is in the overflow list
    assert order == []
    while ring.inflight:
        assert ring.wait(timeout=1) > 0
    assert sorted(order) == [op.user_data for op in ops]
    assert len(set(order)) == 4000
    assert ring.counters()["overflow_flushes"] > 0
    assert ring.rejected_cqes == 0


# ====================================================================== stale and duplicate CQEs


def test_stale_user_data_is_rejected(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    old = ring.nop()
    drive(ring, old)
    buf = bytearray(8)
    newer = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    assert newer.state is OpState.SUBMITTED
    # a CQE carrying the completed op's user_data (stale), twice (a duplicate)
    assert lib.aur_prep_nop(ring._c, old.user_data, 0) >= 0
    assert lib.aur_prep_nop(ring._c, old.user_data, 0) >= 0
    ring.wait(timeout=0.05)
    assert ring.rejected_cqes == 2
    assert not newer.done
    assert old.result == 0
    # a duplicate of a *live* op's CQE after its real one: the real one decided
    a.sendall(b"real")
    drive(ring, newer)
    assert newer.result == 4
    assert lib.aur_prep_nop(ring._c, newer.user_data, 0) >= 0
    ring.wait(timeout=0.05)
    assert ring.rejected_cqes == 3
    assert newer.result == 4
    assert bytes(buf[:4]) == b"real"
    # user_data values are never reused
    later = ring.nop()
    assert later.user_data > newer.user_data > old.user_data
    drive(ring, later)


# ========================================================================================= close


def test_close_drains_pending_recv(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring()
    a, b = socket.socketpair()
    try:
        buf = bytearray(b"." * 16)
        op = ring.recv(b.fileno(), buf)
        ring.wait(timeout=0)
        assert op.state is OpState.SUBMITTED
        seen: list[tuple[int | None, bool]] = []
        op.callback = lambda o: seen.append((o.result, pinned(buf)))
        assert pinned(buf)
        assert ring.bytes_pinned == 16
        ring.close()
        assert seen == [(-errno.ECANCELED, False)]
        assert op.result == -errno.ECANCELED
        assert not pinned(buf)
        assert ring.ledger().count == 0
        assert ring.bytes_pinned == 0
        assert ring.inflight == 0
        # the peer writes after the close: the bytes stay in the socket, the buffer is untouched
        a.sendall(b"after-close")
        b.settimeout(5)
        assert b.recv(64) == b"after-close"
        assert bytes(buf) == b"." * 16
        with pytest.raises(RingClosedError):
            ring.nop()
        with pytest.raises(RingClosedError):
            ring.wait(0)
        ring.close()  # idempotent
    finally:
        a.close()
        b.close()


def test_close_withdraws_queued_and_closes_abandoned_fds(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring()
    before = _open_fds()
    done = ring.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ring.submit()  # SOCKET completes inline: its CQE waits in the CQ, nobody owns it
    assert lib.aur_cq_ready(ring._c) == 1
    late = ring.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # still queued at close
    assert late.state is OpState.QUEUED
    ring.close()
    assert done.result is not None
    assert done.result >= 0
    assert late.result == -errno.ECANCELED
    assert ring.withdrawn == 1
    # the socket `done` created was closed because nobody owned the operation
    assert _open_fds() - before == set()


# ================================================================================ cancellation


def test_withdraw_queued_op_makes_no_syscall(
    ring: Ring, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    _a, b = sockpair
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    assert op.state is OpState.QUEUED
    assert pinned(buf)
    enters = ring.counters()["enters"]
    assert ring.cancel(op) is True
    assert ring.counters()["enters"] == enters
    assert ring.withdrawn == 1
    assert op.done
    assert op.result == -errno.ECANCELED
    assert not pinned(buf)
    assert ring.inflight == 0
    # the withdrawn SQE never reaches anyone
    ring.wait(timeout=0.02)
    assert ring.rejected_cqes == 0
    assert ring.cancel(op) is False  # already done: nothing to do


def test_cancel_idle_recv(ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockpair
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    assert ring.cancel(op) is False  # the kernel has it: the final CQE is still owed
    assert op.state is OpState.CANCEL_REQUESTED
    assert ring.cancel(op) is False  # a second request queues no second ASYNC_CANCEL
    assert pinned(buf)
    drive(ring, op)
    assert op.result == -errno.ECANCELED
    assert ring.cancel_cqes == 1
    assert not pinned(buf)
    a.sendall(b"later")
    assert b.recv(8) == b"later"


def test_cancel_cqe_first_does_not_decide(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    _a, b = sockpair
    ring = make_ring(use_environment=False)
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.submit()
    ring.cancel(op)
    # KERNEL-FACTS 2a: for an idle recv the cancel's CQE (res 0) comes before the target's
    ud, res, _ = reap_one(ring)
    assert ud & lib.AUR_UD_TAG_CANCEL
    assert res == 0
    assert not op.done  # the cancel CQE decides nothing ...
    assert op.state is OpState.CANCEL_REQUESTED
    assert pinned(buf)  # ... and the buffer stays the kernel's
    ud, res, _ = reap_one(ring)
    assert ud == op.user_data
    assert op.done
    assert op.result == res == -errno.ECANCELED
    assert not pinned(buf)


def test_too_late_to_cancel_keeps_result(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Data already queued: the recv completes inline when submitted, the cancel finds nothing."""
    a, b = sockpair
    ring = make_ring(use_environment=False)
    a.sendall(b"won!")
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.submit()
    assert op.state is OpState.SUBMITTED
    assert ring.cancel(op) is False
    cqes = {}
    while not op.done or len(cqes) < 2:
        ud, res, _ = reap_one(ring)
        cqes[ud] = res
    (cancel_res,) = [res for ud, res in cqes.items() if ud & lib.AUR_UD_TAG_CANCEL]
    assert cancel_res == -errno.ENOENT
    assert op.result == 4
    assert bytes(buf[:4]) == b"won!"


def test_data_wins_race_without_defer_taskrun(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """flags=0 ring: the recv completes when the writing task (us) returns to user mode, so a
    cancel queued afterwards is too late; the op keeps its data (KERNEL-FACTS 2b)."""
    a, b = sockpair
    ring = make_ring(disable=frozenset({"single_issuer", "coop_taskrun"}), use_environment=False)
    assert not ring.support.defer_taskrun
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    a.sendall(b"race")
    wait_cq_ready(ring, 1)  # (measured: already true when sendall returns)
    assert ring.cancel(op) is False
    drive(ring, op)
    assert op.result == 4
    assert bytes(buf[:4]) == b"race"


def test_cancel_wins_race_with_defer_taskrun(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """DEFER_TASKRUN: a cancel sent before our next enter beats data that already arrived; the
    data stays in the socket, so nothing is lost (KERNEL-FACTS 2b, implication 2)."""
    a, b = sockpair
    ring = make_ring(use_environment=False)
    assert ring.support.defer_taskrun
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    a.sendall(b"race")
    ring.cancel(op)
    drive(ring, op)
    assert op.result == -errno.ECANCELED
    assert bytes(buf) == bytes(8)
    assert b.recv(8) == b"race"


def test_cancel_fd(ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]) -> None:
    _a, b = sockpair
    r1 = ring.recv(b.fileno(), bytearray(4))
    r2 = ring.poll_add(b.fileno(), select.POLLIN)
    ring.wait(timeout=0)
    ring.cancel_fd(b.fileno())
    drive(ring, r1, r2)
    assert r1.result == -errno.ECANCELED
    assert r2.result == -errno.ECANCELED
    assert ring.cancel_cqes == 1


def test_cancel_foreign_op_refused(make_ring: Callable[..., Ring]) -> None:
    r1, r2 = make_ring(), make_ring()
    op = r1.nop()
    with pytest.raises(ValueError):
        r2.cancel(op)
    assert r1.cancel(op) is True


def test_ledger(ring: Ring, sockpair: tuple[socket.socket, socket.socket]) -> None:
    _a, b = sockpair
    ring.recv(b.fileno(), bytearray(100))
    ring.wait(timeout=0)
    ring.nop()
    ring.poll_add(b.fileno(), select.POLLIN)
    ledger = ring.ledger()
    assert ledger.count == 3
    assert ledger.bytes_pinned == 100
    assert ledger.by_state == {"SUBMITTED": 1, "QUEUED": 2}
    assert ledger.by_opcode == {"RECV": 1, "NOP": 1, "POLL_ADD": 1}


def test_other_thread_refused(ring: Ring) -> None:
    import threading

    errors: list[BaseException] = []

    def use() -> None:
        try:
            ring.nop()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert ring.inflight == 0


# ============================================================ results nobody takes, interrupted drains


def test_abandoned_recv_select_returns_its_buffer(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """A BUFFER_SELECT receive that completes after its owner gave up hands the kernel's buffer
    back to the group; otherwise a one-buffer group would run dry after one abandoned receive."""
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=9, count=1, size=64)
    for i in range(3):
        op = ring.recv_select(b.fileno(), group)
        op.abandon()
        a.sendall(b"lost %d" % i)
        drive(ring, op)
        assert op.result == 6
        assert op.cqe_flags is not None
        assert op.cqe_flags & lib.AUR_CQE_F_BUFFER
        assert group.kernel_head() == i + 1
    op = ring.recv_select(b.fileno(), group)  # the single buffer must be available again
    a.sendall(b"kept")
    drive(ring, op)
    assert op.result == 4
    assert op.cqe_flags is not None
    assert group.take(op.result, op.cqe_flags) == b"kept"
    group.close()


def test_close_interrupted_by_a_raising_callback_keeps_memory() -> None:
    """If a completion callback raises while close() drains, operations still in flight are
    parked in _ABANDONED (their memory is never freed), not left in a closed ring's ledger.
    (The ring is not from make_ring: its teardown insists on nothing pinned.  What lands in
    _ABANDONED stays there: the kernel may still be writing into it.)"""
    from anyio_uring._ring import _ring

    ring = Ring()
    fd = os.open("/dev/zero", os.O_RDONLY)
    buf = bytearray(16 << 20)
    read = ring.read(fd, buf, 0, sqe_flags=lib.AUR_SQE_ASYNC)  # runs in io-wq for a while
    ring.submit()
    nop = ring.nop()
    ring.submit()

    def explode(op: Operation) -> None:
        raise KeyboardInterrupt

    nop.callback = explode
    before = len(_ring._ABANDONED)
    try:
        with pytest.raises(KeyboardInterrupt):
            ring.close()
        assert ring.closed
        assert ring.inflight == 0
        if read.done:  # the read beat the harvest that raised: nothing to keep
            assert not pinned(buf)
        else:
            assert read in _ring._ABANDONED[before:]
            assert pinned(buf)  # still lent to the kernel: never released
    finally:
        os.close(fd)


# =============================================================== the hot path's shortcuts, checked


def test_user_data_is_slot_plus_one_and_never_reused(ring: Ring, drive: Drive) -> None:
    """The C core names each SQE ``slot + 1`` (AUR_UD_FROM_SLOT): withdrawn SQEs and the ring's
    own SQEs (cancels) use up slots too, so values only grow and never repeat."""
    first = [ring.nop() for _ in range(8)]
    assert ring.cancel(first[3]) is True  # withdrawn: its slot stays spent
    drive(ring, *first[:3], *first[4:])
    second = [ring.nop() for _ in range(8)]
    drive(ring, *second)
    uds = [op.user_data for op in first + second]
    assert uds == sorted(set(uds))
    assert all(op.user_data == op.slot + 1 for op in first + second)
    assert not any(ud & lib.AUR_UD_TAG_CANCEL for ud in uds)
    assert ring.rejected_cqes == 0


def test_poll_with_nothing_to_do_makes_no_syscall(ring: Ring, drive: Drive) -> None:
    ring.wait(timeout=0)
    enters = ring.counters()["enters"]
    for _ in range(50):
        assert ring.wait(timeout=0) == 0
    assert lib.aur_has_work(ring._c) == 0
    assert ring.counters()["enters"] == enters
    op = ring.nop()
    assert lib.aur_has_work(ring._c) == 1  # an SQE to submit
    drive(ring, op)
    assert op.result == 0
    assert lib.aur_has_work(ring._c) == 0


@pytest.mark.parametrize("taskrun_flag", [True, False], ids=["taskrun_flag", "no_taskrun_flag"])
def test_poll_sees_a_completion_deferred_as_task_work(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket], taskrun_flag: bool
) -> None:
    """With DEFER_TASKRUN a completion is task work until our next enter (KERNEL-FACTS 1): the
    CQ is empty, so ``wait(0)`` must look at IORING_SQ_TASKRUN -- or, when the ring has no
    TASKRUN_FLAG to tell, enter every time -- rather than return early."""
    ring = make_ring(
        disable=frozenset() if taskrun_flag else frozenset({"coop_taskrun"}), use_environment=False
    )
    if not ring.support.defer_taskrun:  # pragma: no cover - kernels before 6.1
        pytest.skip("the kernel has no DEFER_TASKRUN")
    assert bool(ring._c.setup_flags & lib.AUR_SF_TASKRUN_FLAG) is taskrun_flag
    a, b = sockpair
    buf = bytearray(4)
    op = ring.recv(b.fileno(), buf)
    assert ring.wait(timeout=0) == 0
    assert not op.done
    a.sendall(b"hi")
    deadline = time.monotonic() + 5
    while not lib.aur_has_work(ring._c) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lib.aur_has_work(ring._c) == 1
    assert lib.aur_cq_ready(ring._c) == 0  # still task work, not a CQE
    assert ring.wait(timeout=0) == 1
    assert op.result == 2
    assert buf[:2] == b"hi"


def test_other_thread_refused_by_every_entry_point(ring: Ring) -> None:
    """The C core refuses a thread that does not own the ring before touching anything, so the
    Python layer needs no per-operation thread check; an idle ``wait(0)`` is refused too."""
    import threading

    c = ring._c
    written = c.sq_written
    out = ffi.new("aur_cqe[4]")
    results: dict[str, Any] = {}

    def use() -> None:
        for name, call in (
            ("nop", ring.nop),
            ("poll", lambda: ring.wait(timeout=0)),
            ("wait", lambda: ring.wait(timeout=0.01)),
            ("submit", ring.submit),
        ):
            try:
                call()
            except BaseException as exc:
                results[name] = exc
        results["prep"] = lib.aur_prep_nop(c, 1, 0)
        results["aur_wait"] = lib.aur_wait(c, 0, 0, out, 4)
        results["aur_submit"] = lib.aur_submit(c)
        results["has_work"] = lib.aur_has_work(c)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    for name in ("nop", "poll", "wait", "submit"):
        assert isinstance(results[name], RuntimeError), (name, results[name])
        assert "thread" in str(results[name])
    assert results["prep"] == results["aur_wait"] == results["aur_submit"] == -lib.AUR_EWRONGTHREAD
    assert results["has_work"] == 1  # "go and ask aur_wait", which refuses
    assert c.sq_written == written
    assert ring.inflight == 0
    assert ring.wait(timeout=0) == 0  # the owner is unaffected


def test_blocking_wait_releases_the_gil(ring: Ring, drive: Drive) -> None:
    """Only calls that may sleep release the GIL (build.py); a blocking wait is one.  The writer
    thread runs Python code only once the loop thread is inside ``wait``: if the wait kept the
    GIL, nothing would complete before its timeout."""
    import threading

    rfd, wfd = os.pipe()
    try:
        op = ring.poll_add(rfd, select.POLLIN)
        ring.submit()
        go = threading.Event()

        def writer() -> None:
            go.wait()
            os.write(wfd, b"x")

        t = threading.Thread(target=writer)
        t.start()
        go.set()
        assert ring.wait(timeout=30) == 1
        t.join()
        assert op.result is not None
        assert op.result & select.POLLIN
    finally:
        os.close(rfd)
        os.close(wfd)


def test_dispatch_applies_the_transition_table(ring: Ring) -> None:
    """``_dispatch`` completes a flagless CQE through a precomputed row of ``_TRANSITIONS``; it
    must agree with ``Operation._transition("final")`` for every state, flags included, and an
    impossible one is the uniform loud error."""
    from anyio_uring._errors import UringInternalError
    from anyio_uring._ring import _ring as r

    probe = ring.nop()
    for state in range(len(r._AFTER_FINAL)):
        probe._state = state
        try:
            probe._transition("final")
        except UringInternalError:
            assert r._AFTER_FINAL[state] is None
        else:
            assert r._AFTER_FINAL[state] == probe._state
    probe._state = r._PENDING
    op = ring.nop()
    op._state = r._DONE  # as if its final CQE had been reaped already
    with pytest.raises(UringInternalError) as info:
        ring._dispatch(struct.pack("QiI", op.user_data, 0, 0))
    assert isinstance(info.value.__cause__, BaseExceptionGroup)
    (err,) = info.value.__cause__.exceptions
    assert isinstance(err, UringInternalError)
    assert "illegal transition 'final' from DONE" in str(err)
    assert op.user_data not in ring._ops
    ring.wait(timeout=5, min_complete=2)  # both real CQEs: probe's completes, op's is stale now
    assert probe.done
    assert ring.rejected_cqes == 1


def test_queue_mark_changes_with_every_sqe_queued(ring: Ring, drive: Drive) -> None:
    """``Ring._queue_mark`` (the run loop's "was anything queued?") changes with every SQE
    queued from Python, the ring's own cancels included, and not when CQEs are reaped;
    ``Ring._next_ud`` is the user_data the next operation gets."""
    mark = ring._queue_mark
    expected = ring._next_ud
    op = ring.nop()
    assert op.user_data == expected
    assert ring._next_ud == expected + 1
    assert ring._queue_mark != mark
    mark = ring._queue_mark
    drive(ring, op)
    assert ring._queue_mark == mark  # reaping queues nothing
    rfd, wfd = os.pipe()
    try:
        poll = ring.poll_add(rfd, select.POLLIN)
        ring.submit()
        mark = ring._queue_mark
        assert ring.cancel(poll) is False  # submitted: an ASYNC_CANCEL SQE is queued
        assert ring._queue_mark != mark
        drive(ring, poll)
    finally:
        os.close(rfd)
        os.close(wfd)
