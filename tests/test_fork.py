"""fork(): the child must never touch the parent's ring (KERNEL-FACTS 7, implication 11).

The ring's mappings are MADV_DONTFORK and the C core's atfork handler closes the inherited ring
fd, so a child cannot write the parent's SQ even by accident; the Python ring refuses every use
with ForkedRingError; the parent carries on with its in-flight operations.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from anyio_uring._errors import ForkedRingError
from anyio_uring._ring import Operation, OpState, Ring
from anyio_uring._ring._buffers import ProvidedBufferRing

Drive = Callable[..., None]


def io_uring_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target == "anon_inode:[io_uring]":
            fds.append(int(name))
    return fds


def io_uring_mappings() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "anon_inode:[io_uring]" in line]


def _raises_forked(fn: Callable[[], object]) -> str:
    try:
        fn()
    except ForkedRingError:
        return "ForkedRingError"
    except BaseException as exc:
        return f"wrong exception: {exc!r}"
    return "no exception"


def child_checks(ring: Ring, ring_fd: int, op: Operation, sock_fd: int) -> dict[str, Any]:
    """Runs in the fork child; returns what it saw (first check first: no fd is opened before
    the ring fd is looked at, so its number cannot have been reused)."""
    verdict: dict[str, Any] = {}
    try:
        os.fstat(ring_fd)
        verdict["ring_fd"] = "open"
    except OSError as exc:
        verdict["ring_fd"] = errno.errorcode[exc.errno or 0]
    verdict["io_uring_fds"] = io_uring_fds()
    verdict["mappings"] = io_uring_mappings()
    verdict["nop"] = _raises_forked(ring.nop)
    verdict["recv"] = _raises_forked(lambda: ring.recv(sock_fd, bytearray(4)))
    verdict["wait"] = _raises_forked(lambda: ring.wait(timeout=0))
    verdict["submit"] = _raises_forked(ring.submit)
    verdict["cancel"] = _raises_forked(lambda: ring.cancel(op))
    ring.close()  # harmless: no munmap of the parent's pages, no close of a reused fd number
    verdict["closed"] = ring.closed
    verdict["nop_after_close"] = _raises_forked(ring.nop)
    # the child can start its own ring
    own = Ring()
    own_op = own.nop()
    own.wait(timeout=5)
    verdict["own_ring_nop"] = own_op.result
    own.close()
    return verdict


@pytest.mark.parametrize("disable", [frozenset(), frozenset({"single_issuer"})], ids=["defer", "flags0"])
def test_fork_child_cannot_use_parent_ring(
    make_ring: Callable[..., Ring],
    drive: Drive,
    sockpair: tuple[socket.socket, socket.socket],
    disable: frozenset[str],
) -> None:
    a, b = sockpair
    ring = make_ring(disable=disable, use_environment=False)
    buf = bytearray(32)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    assert op.state is OpState.SUBMITTED  # in flight across the fork
    ring_fd = ring.fd
    # controls: what the child must not have, the parent has
    assert ring_fd in io_uring_fds()
    assert io_uring_mappings()

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            os.close(rfd)
            report = json.dumps(child_checks(ring, ring_fd, op, b.fileno()))
        except BaseException as exc:
            report = json.dumps({"child raised": repr(exc)})
            status = 1
        finally:
            os.write(wfd, report.encode())
            os._exit(status)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    _, wstatus = os.waitpid(pid, 0)
    verdict = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(wstatus) == 0, verdict
    assert verdict == {
        "ring_fd": "EBADF",
        "io_uring_fds": [],
        "mappings": [],
        "nop": "ForkedRingError",
        "recv": "ForkedRingError",
        "wait": "ForkedRingError",
        "submit": "ForkedRingError",
        "cancel": "ForkedRingError",
        "closed": True,
        "nop_after_close": "ForkedRingError",
        "own_ring_nop": 0,
    }

    # the parent's ring is intact and its op in flight across the fork gets the data
    assert not op.done
    a.sendall(b"for the parent")
    drive(ring, op)
    assert op.result == 14
    assert bytes(buf[:14]) == b"for the parent"
    after = ring.nop()
    drive(ring, after)
    assert after.result == 0
    assert ring.rejected_cqes == 0


def test_subprocess_leaves_ring_alone(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    code = (
        "import os\n"
        "for fd in range(256):\n"
        "    try:\n"
        "        print(os.readlink(f'/proc/self/fd/{fd}'))\n"
        "    except OSError:\n"
        "        pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "io_uring" not in out  # the ring fd is O_CLOEXEC
    assert "pipe:" in out  # (stdout: the check did look)
    a.sendall(b"still")
    drive(ring, op)
    assert bytes(buf[:5]) == b"still"


def test_buffer_ring_survives_fork(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """The kernel reads the provided-buffer ring's tail from the parent's pages: a fork must
    not leave the parent writing to a copy-on-write copy the kernel never sees."""
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=1, count=1, size=16)
    a.sendall(b"before")
    first = ring.recv_select(b.fileno(), group)
    drive(ring, first)
    assert first.result == 6
    assert first.cqe_flags is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    # recycling the only buffer after the fork is what makes the next receive possible
    assert group.take(6, first.cqe_flags) == b"before"
    a.sendall(b"after")
    second = ring.recv_select(b.fileno(), group)
    drive(ring, second)
    assert second.result == 5
    assert second.cqe_flags is not None
    assert group.take(5, second.cqe_flags) == b"after"
