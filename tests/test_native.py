"""The C core through its cffi interface: version guard, error returns, the wait's contract."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import anyio_uring._native as native
from anyio_uring._native import ffi, lib
from anyio_uring._ring import Ring
from anyio_uring._version import __version__

EBADFD = 77


def test_compiled_version_matches_package() -> None:
    assert ffi.string(lib.aur_version()).decode() == __version__


@pytest.mark.parametrize(("version", "stale"), [("0.0.0.stale-test", True), (__version__, False)])
def test_stale_native_build_is_refused(tmp_path: Path, version: str, stale: bool) -> None:
    """A copy of the package whose _version.py no longer matches the compiled core."""
    pkg = tmp_path / "anyio_uring"
    shutil.copytree(
        Path(native.__file__).parent, pkg / "_native", ignore=shutil.ignore_patterns("__pycache__")
    )
    (pkg / "__init__.py").write_text("")
    (pkg / "_version.py").write_text(f'__version__ = "{version}"\n')
    code = (
        "import anyio_uring._native, anyio_uring._version as v\n"
        "print(v.__file__)\n"
        "print(anyio_uring._native.lib.aur_version())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if stale:
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: ")
        assert "stale" in last
        assert repr(__version__) in last
        assert repr(version) in last
        assert "pip install" in last
    else:  # control: the copy itself is importable, and it is the copy that gets imported
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == str(pkg / "_version.py")


def test_ring_fd_is_cloexec(ring: Ring) -> None:
    assert fcntl.fcntl(ring.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert os.readlink(f"/proc/self/fd/{ring.fd}") == "anon_inode:[io_uring]"


def test_setup_twice_is_refused(ring: Ring) -> None:
    assert lib.aur_setup(ring._c, 8, 0, 0) == -errno.EBUSY


def test_closed_ring_returns_ebadfd(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring()
    c = ring._c
    ring.close()
    assert c.closed == 1
    assert c.ring_fd == -1
    out = ffi.new("aur_cqe[4]")
    assert lib.aur_prep_nop(c, 1, 0) == -EBADFD
    assert lib.aur_submit(c) == -EBADFD
    assert lib.aur_wait(c, 1, -1, out, 4) == -EBADFD
    assert lib.aur_cq_ready(c) == 0
    assert lib.aur_probe(c, ffi.new("uint8_t[256]")) == -EBADFD
    assert lib.aur_close(c) == 0  # idempotent


def test_wait_contract(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(use_environment=False)
    c = ring._c
    out = ffi.new("aur_cqe[2]")
    # timeout with nothing to do: 0 CQEs, after the timeout
    t0 = time.monotonic()
    assert lib.aur_wait(c, 1, 20_000_000, out, 2) == 0
    assert time.monotonic() - t0 >= 0.019
    # poll (timeout 0) with nothing queued makes no syscall at all
    enters = c.enters
    assert lib.aur_wait(c, 1, 0, out, 2) == 0
    assert c.enters == enters
    # more CQEs than room: `more` says so, and the next call gets the rest
    for ud in (11, 12, 13):
        assert lib.aur_prep_nop(c, ud, 0) >= 0
    assert lib.aur_wait(c, 3, -1, out, 2) == 2
    assert c.more == 1
    got = [out[0].user_data, out[1].user_data]
    assert lib.aur_wait(c, 0, 0, out, 2) == 1
    assert c.more == 0
    got.append(out[0].user_data)
    assert sorted(got) == [11, 12, 13]
    assert out[0].res == 0
    assert ring.rejected_cqes == 0  # (nothing went through Ring.wait: these uds were never ops)


def test_prep_returns_slots_and_withdraw_only_unpublished(ring: Ring) -> None:
    c = ring._c
    s1 = lib.aur_prep_nop(c, 21, 0)
    s2 = lib.aur_prep_nop(c, 22, 0)
    assert s2 == s1 + 1
    assert c.sq_written == s2 + 1
    assert lib.aur_withdraw(c, s1, 999) == 0  # user_data does not match that slot
    assert lib.aur_withdraw(c, s1, 21) == 1
    assert lib.aur_submit(c) == 2
    assert lib.aur_withdraw(c, s2, 22) == 0  # published: too late, cancel asynchronously
    out = ffi.new("aur_cqe[4]")
    n = lib.aur_wait(c, 1, 1_000_000_000, out, 4)
    assert [out[i].user_data for i in range(n)] == [22]  # the withdrawn one left no CQE


def test_user_data_from_slot(ring: Ring) -> None:
    """AUR_UD_FROM_SLOT asks the prep for ``slot + 1``; any other value is used as given."""
    c = ring._c
    out = ffi.new("aur_cqe[4]")
    s1 = lib.aur_prep_nop(c, lib.AUR_UD_FROM_SLOT, 0)
    s2 = lib.aur_prep_nop(c, 77, 0)
    s3 = lib.aur_prep_nop(c, lib.AUR_UD_FROM_SLOT, 0)
    assert s1 >= 0
    assert s2 == s1 + 1
    assert s3 == s2 + 1
    got: list[int] = []
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        n = lib.aur_wait(c, 3 - len(got), 1_000_000_000, out, 4)
        got += [out[i].user_data for i in range(max(n, 0))]
    assert sorted(got) == sorted([s1 + 1, 77, s3 + 1])


def test_struct_layouts() -> None:
    assert ffi.sizeof("aur_cqe") == 16
    assert ffi.sizeof("aur_iovec") == 16
    assert ffi.sizeof("aur_msghdr") == 56
    assert ffi.offsetof("aur_cqe", "res") == 8
    assert ffi.offsetof("aur_cqe", "flags") == 12


def test_pbuf_register_validation(ring: Ring) -> None:
    pbuf = ffi.new("aur_pbuf *")
    assert lib.aur_pbuf_register(ring._c, pbuf, 3, 1, 0) == -errno.EINVAL  # not a power of two
    assert lib.aur_pbuf_register(ring._c, pbuf, 0, 1, 0) == -errno.EINVAL
    assert lib.aur_pbuf_register(ring._c, pbuf, 4, 70000, 0) == -errno.EINVAL
    assert lib.aur_pbuf_register(ring._c, pbuf, 4, 5, 0) == 0
    assert lib.aur_pbuf_register(ring._c, ffi.new("aur_pbuf *"), 4, 5, 0) == -errno.EEXIST
    assert lib.aur_pbuf_head(ring._c, pbuf) == 0
    assert lib.aur_pbuf_unregister(ring._c, pbuf) == 0
    assert pbuf.registered == 0


def test_signal_interrupts_wait(ring: Ring, sockpair: tuple[socket.socket, socket.socket]) -> None:
    """A signal ends a blocking wait early (so the loop can run Python's handlers, e.g.
    KeyboardInterrupt) without losing the op that was being waited for."""
    a, b = sockpair
    fired: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        op = ring.recv(b.fileno(), bytearray(4))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.monotonic()
        assert ring.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        assert fired == [signal.SIGALRM]
        assert not op.done
        a.sendall(b"ok")
        ring.wait(timeout=5)
        assert op.result == 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_now_ns_is_monotonic_clock() -> None:
    before = time.monotonic_ns()
    now = lib.aur_now_ns()
    after = time.monotonic_ns()
    assert before <= now <= after
