"""Hardening of the ring files found by an outside review: offsets outside ``off_t`` (parity
with CPython), read buffers sized from what can be read (peak RSS), ``aclose()`` of an
unbuffered file while another task is parked on it, and opening a FIFO for reading (waits for a
writer, like ``open(2)``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path as SyncPath
from typing import Any

import pytest

import anyio_uring
from anyio_uring import (
    CancelScope,
    fail_after,
    move_on_after,
    open_file,
    open_nursery,
    sleep,
    wait_all_tasks_blocked,
)
from anyio_uring._core._run import current_runner
from anyio_uring._fs._files import IOSQE_ASYNC
from anyio_uring._ring import Ring
from test_files_parity import Api, Recorder, assert_same, run_both

# ------------------------------------------------------------------------------------------
# offsets outside off_t: rejected like CPython, before any I/O
# ------------------------------------------------------------------------------------------

#: Around the edges of off_t (signed 64 bits) and of the 64-bit mask the ring used to apply.
OFFSETS = [2**64 + 3, 2**64 - 1, 2**64, 2**63, 2**63 - 1, 2**62, -(2**63), -(2**63) - 1, -1, 3]
LAYERS = [("rb+", 0), ("rb+", -1), ("r+", -1)]


def _offset_scenario(mode: str, buffering: int) -> Any:
    async def offsets(api: Api, d: SyncPath, rec: Recorder) -> None:
        (d / "f").write_bytes(b"0123456789")
        f = await api.open_file(d / "f", mode, buffering=buffering)
        text = "b" not in mode
        for whence in (0, 1, 2):
            for offset in OFFSETS:
                await rec(f"seek({offset}, {whence})", f.seek, offset, whence)
                await rec("tell", f.tell)
                await rec("read", f.read, 4)
                await rec("back", f.seek, 2)
        # A write at an offset that was masked to 64 bits used to land at offset & (2**64-1).
        for offset in (2**64 + 5, 2**64 - 1, 2**63):
            await rec(f"seek({offset})", f.seek, offset)
            await rec("write", f.write, "XY" if text else b"XY")
            await rec("flush", f.flush)
            await rec("tell", f.tell)
        for size in (2**63, 2**64 + 3, -(2**63) - 1, -1, 4):
            await rec(f"truncate({size})", f.truncate, size)
            await rec("tell", f.tell)
        await f.aclose()
        rec.contents("on disk", "f")

    return offsets


@pytest.mark.parametrize("fallbacks", [False, True], ids=["ring", "thread-fallbacks"])
@pytest.mark.parametrize(("mode", "buffering"), LAYERS)
def test_seek_and_truncate_outside_off_t_like_cpython(
    tmp_path: SyncPath, mode: str, buffering: int, fallbacks: bool
) -> None:
    """seek()/truncate() with offsets outside off_t, on every layer and whence: the same
    exception (type and message, or errno) as CPython's io on anyio/trio, the position and the
    file unchanged; offsets past the file system's limit fail with lseek's EINVAL.  Also with
    STATX/FTRUNCATE masked (the worker-thread fallbacks)."""
    options = None
    if fallbacks:
        masked = frozenset({"statx", "ftruncate"})
        options = anyio_uring.RingOptions(disable=masked, use_environment=False)
    expected, actual = run_both(_offset_scenario(mode, buffering), tmp_path / "root", options)
    assert_same(expected, actual)


def test_seek_past_2_64_reads_nothing_at_the_masked_offset(tmp_path: SyncPath) -> None:
    """The reported corruption, directly: seek(2**64 + 3) then read(4) used to read b"3456"."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main() -> None:
        for buffering in (0, -1):
            async with await open_file(path, "rb+", buffering=buffering) as f:
                with pytest.raises((OverflowError, ValueError)):
                    await f.seek(2**64 + 3)
                assert await f.tell() == 0
                with pytest.raises((OverflowError, ValueError)):
                    await f.seek(2**64 - 1)  # was offset -1: "the kernel's position"
                with pytest.raises((OverflowError, ValueError)):
                    await f.seek(2**64 + 5)
                assert await f.read(4) == b"0123"
        async with await open_file(path, "r+b", buffering=0) as f:
            await f.seek(1)
            with pytest.raises(OverflowError):
                await f.seek(2**64 - 1, 1)
            assert await f.tell() == 1

    anyio_uring.run(main)
    assert path.read_bytes() == b"0123456789"


# ------------------------------------------------------------------------------------------
# read(n) with a huge n: buffers sized from what can be read
# ------------------------------------------------------------------------------------------

_RSS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import anyio_uring

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    # ru_maxrss (and VmHWM) carry the parent's peak over fork+exec: a test process that read
    # big files would hand its peak down.  Reset the high-water mark to the current RSS.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")

    kind, path, mode, buffering, method = sys.argv[1:6]

    async def main():
        if kind == "pipe":
            r, w = os.pipe()
            os.write(w, b"x" * 100)
            os.close(w)
            f = await anyio_uring.open_file(r, mode, buffering=int(buffering))
        else:
            f = await anyio_uring.open_file(path, mode, buffering=int(buffering))
        async with f:
            data = await getattr(f, method)(1 << 30)
            assert len(data) == 100, len(data)
            assert await f.read(1 << 30) in (b"", "")

    anyio_uring.run(main)
    print(peak_kib())
    """
)

RSS_CASES = [
    ("file", "rb", 0, "read"),
    ("file", "rb", -1, "read"),
    ("file", "rb", -1, "read1"),
    ("file", "r", -1, "read"),
    ("pipe", "rb", 0, "read"),
    ("pipe", "rb", -1, "read"),
    ("pipe", "rb", -1, "read1"),
    ("pipe", "r", -1, "read"),
]


@pytest.mark.parametrize(("kind", "mode", "buffering", "method"), RSS_CASES)
def test_huge_read_of_small_file_peak_rss(
    tmp_path: SyncPath, kind: str, mode: str, buffering: int, method: str
) -> None:
    """read(1 << 30) of a 100-byte file (size known from STATX) or of a pipe holding 100 bytes
    (size unknown) must not allocate (and zero) 1 GiB: peak RSS of the whole process stays far
    below it (CPython's own read needs ~30 MiB here)."""
    path = tmp_path / "small"
    path.write_bytes(b"x" * 100)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, kind, str(path), mode, str(buffering), method],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"


@pytest.mark.parametrize(("mode", "buffering"), [("rb", 0), ("rb", -1), ("r", -1)])
def test_huge_read_of_a_file_that_grew(tmp_path: SyncPath, mode: str, buffering: int) -> None:
    """The known size is only a hint: read(n) of a file that grew since it was last seen still
    returns everything up to n (in growing chunks), like CPython's single read."""
    path = tmp_path / "grows"
    path.write_bytes(b"a" * 100)
    tail = os.urandom(300_000).hex()  # 600 000 bytes of ASCII

    async def main() -> None:
        async with await open_file(path, mode, buffering=buffering) as f:
            with open(path, "a") as other:
                other.write(tail)
            data = await f.read(1 << 30)
            expected = "a" * 100 + tail
            assert data == (expected if "b" not in mode else expected.encode())
            assert await f.tell() == 100 + len(tail)

    anyio_uring.run(main)


@pytest.mark.parametrize(("mode", "buffering"), [("rb", 0), ("rb", -1), ("r", -1)])
def test_cancelled_huge_read_of_a_fifo_keeps_every_byte(
    tmp_path: SyncPath, mode: str, buffering: int
) -> None:
    """read(1 << 30) parked on a FIFO (its buffer a lazily committed mapping): the buffer is
    lent to the kernel (pinned) until the READ's final CQE; a cancellation after some bytes
    arrived loses none of them (the next read returns them first); nothing stays pinned."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        ring = current_runner().ring
        wfd = os.open(fifo, os.O_RDWR)
        try:
            f = await open_file(fifo, mode, buffering=buffering)
            box: dict[str, Any] = {}

            async def reader() -> None:
                with CancelScope() as scope:
                    box["scope"] = scope
                    box["data"] = await f.read(1 << 30)
                box["caught"] = scope.cancelled_caught

            async with open_nursery() as nursery:
                nursery.start_soon(reader)
                await wait_all_tasks_blocked()
                if buffering:  # the buffered layers keep reading for more: the bytes wait in them
                    os.write(wfd, b"0123456789")
                    await sleep(0.05)
                    await wait_all_tasks_blocked()
                assert ring.bytes_pinned > 1 << 29  # lent to the kernel (counted, not committed)
                box["scope"].cancel()
            assert box["caught"]
            assert "data" not in box
            assert ring.bytes_pinned == 0
            if not buffering:
                os.write(wfd, b"0123456789")
            assert await f.read(10) in (b"0123456789", "0123456789")
            await f.aclose()
        finally:
            os.close(wfd)

    anyio_uring.run(main)


# ------------------------------------------------------------------------------------------
# aclose() of an unbuffered file while another task is parked on it
# ------------------------------------------------------------------------------------------


class _Watchdog:
    """Unblocks the old behaviour (aclose() waiting behind a parked operation for ever): after
    ``delay`` seconds, calls ``action`` (which feeds or drains the FIFO) every 0.1 s until
    stopped, so that a test of the old code fails on its assertions instead of hanging."""

    def __init__(self, action: Any, delay: float = 10.0) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(action, delay), daemon=True)
        self._thread.start()

    def _run(self, action: Any, delay: float) -> None:
        while not self._stop.wait(delay):
            action()
            delay = 0.1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _drain(fd: int) -> int:
    """Read what a non-blocking fd holds; the byte count."""
    total = 0
    try:
        while chunk := os.read(fd, 65536):
            total += len(chunk)
    except BlockingIOError:
        pass
    return total


def test_unbuffered_aclose_ends_a_parked_read(tmp_path: SyncPath) -> None:
    """A task parked in read() on a FIFO whose writer is silent, a second one waiting for the
    file's lock: aclose() returns at once instead of waiting for the writer; both readers get
    the closed-file ValueError; the fd is closed when aclose() returns, and the ring is idle."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        ring = current_runner().ring
        wfd = os.open(fifo, os.O_RDWR)  # a writer (and reader) that stays silent
        watchdog = _Watchdog(lambda: os.write(wfd, b"watchdog"))
        try:
            baseline = ring.inflight
            f = await open_file(fifo, "rb", buffering=0)
            fd = f.fileno()
            outcomes: list[object] = []

            async def reader() -> None:
                try:
                    outcomes.append(await f.read(10))
                except ValueError as exc:
                    outcomes.append(str(exc))

            async with open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(reader)
                await wait_all_tasks_blocked()
                assert ring.inflight == baseline + 1  # the first reader's READ
                t0 = time.monotonic()
                await f.aclose()
                elapsed = time.monotonic() - t0
                assert f.closed
                with pytest.raises(OSError):
                    os.fstat(fd)  # closed, and only now
            assert outcomes == ["I/O operation on closed file"] * 2
            assert elapsed < 5, f"aclose() waited {elapsed:.1f} s (for the watchdog's write)"
            assert ring.inflight == baseline
            assert ring.bytes_pinned == 0
        finally:
            watchdog.stop()
            os.close(wfd)

    anyio_uring.run(main)


def test_unbuffered_aclose_ends_a_parked_write(tmp_path: SyncPath) -> None:
    """A write parked on a full FIFO is ended by aclose() the same way (nothing of it written)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        rfd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a reader that never reads
        watchdog = _Watchdog(lambda: _drain(rfd))
        try:
            f = await open_file(fifo, "wb", buffering=0)
            filled = 0
            for chunk in (b"\0" * 65536, b"\0"):  # fill the pipe to the last byte
                try:
                    while True:
                        filled += os.write(rfd, chunk)
                except BlockingIOError:
                    pass
            outcome: list[object] = []

            async def writer() -> None:
                try:
                    outcome.append(await f.write(b"payload"))
                except ValueError as exc:
                    outcome.append(str(exc))

            async with open_nursery() as nursery:
                nursery.start_soon(writer)
                await wait_all_tasks_blocked()
                t0 = time.monotonic()
                await f.aclose()
                elapsed = time.monotonic() - t0
            watchdog.stop()
            assert outcome == ["I/O operation on closed file"]
            assert elapsed < 5, f"aclose() waited {elapsed:.1f} s (for the watchdog to drain)"
            assert _drain(rfd) == filled  # nothing of the parked write went in
        finally:
            watchdog.stop()
            os.close(rfd)

    anyio_uring.run(main)


def test_unbuffered_aclose_racing_data_loses_no_byte(tmp_path: SyncPath) -> None:
    """Data arrives just as aclose() ends the parked read: either the reader gets the bytes, or
    it gets the closed-file error and the bytes are still in the FIFO -- never lost."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    seen: set[str] = set()

    async def main() -> None:
        wfd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        try:
            for i in range(40):
                f = await open_file(fifo, "rb", buffering=0)
                outcome: list[object] = []

                async def reader(f: Any = f, outcome: list[object] = outcome) -> None:
                    try:
                        outcome.append(await f.read(100))
                    except ValueError:
                        outcome.append(None)

                payload = b"%03d" % i
                async with open_nursery() as nursery:
                    nursery.start_soon(reader)
                    await wait_all_tasks_blocked()
                    os.write(wfd, payload)
                    if i % 2:
                        await sleep(0)
                    await f.aclose()
                if outcome == [payload]:
                    seen.add("delivered")
                else:
                    assert outcome == [None]
                    assert os.read(wfd, 100) == payload
                    seen.add("left in the FIFO")
        finally:
            os.close(wfd)

    anyio_uring.run(main)
    assert seen  # (which outcomes occur depends on the kernel's timing)


def test_buffered_aclose_still_waits_for_the_lock(tmp_path: SyncPath) -> None:
    """Buffered files keep CPython's rule (close() takes the buffer's lock, so anyio/trio's
    aclose() waits behind a parked buffered read): the read ends when data comes, not earlier."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        wfd = os.open(fifo, os.O_RDWR)
        try:
            f = await open_file(fifo, "rb")
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await f.read(3))

            async with open_nursery() as nursery:
                nursery.start_soon(reader)
                await wait_all_tasks_blocked()

                async def write_later() -> None:
                    await sleep(0.05)
                    os.write(wfd, b"abc")

                nursery.start_soon(write_later)
                await f.aclose()
            assert got == [b"abc"]
        finally:
            os.close(wfd)

    anyio_uring.run(main)


# ------------------------------------------------------------------------------------------
# opening a FIFO for reading waits for a writer (open(2)), cancellably
# ------------------------------------------------------------------------------------------

FIFO_LAYERS = [("rb", 0), ("rb", -1), ("r", -1)]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("mode", "buffering"), FIFO_LAYERS)
def test_fifo_open_for_reading_waits_for_a_writer(tmp_path: SyncPath, mode: str, buffering: int) -> None:
    """No writer: open() does not return (as open(2) would not) until one opens the FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        opened: list[Any] = []

        async def opener() -> None:
            opened.append(await open_file(fifo, mode, buffering=buffering))

        async with open_nursery() as nursery:
            nursery.start_soon(opener)
            await sleep(0.3)
            assert not opened, "open() returned while the FIFO had no writer"
            # open(2)'s waiting reader counts as a reader: a non-blocking writer may open.
            wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            (f,) = opened
            os.write(wfd, b"hi\n")
            assert await f.read(3) in (b"hi\n", "hi\n")
            await f.aclose()
        finally:
            os.close(wfd)

    anyio_uring.run(main)


def test_fifo_open_waits_for_a_writer_even_with_data_pending(tmp_path: SyncPath) -> None:
    """Another reader keeps the FIFO open, holding bytes whose writer has left: open(2) still
    waits for a (new) writer, and so must open()."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    other = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b"old")
        os.close(w)

        async def main() -> None:
            opened: list[Any] = []

            async def opener() -> None:
                opened.append(await open_file(fifo, "rb", buffering=0))

            async with open_nursery() as nursery:
                nursery.start_soon(opener)
                await sleep(0.3)
                assert not opened, "open() returned while the FIFO had no writer"
                wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            try:
                async with opened[0] as f:
                    assert await f.read(10) == b"old"
            finally:
                os.close(wfd)

        anyio_uring.run(main)
    finally:
        os.close(other)


@pytest.mark.parametrize("writes", [True, False])
def test_fifo_open_after_a_waiting_writer_does_not_hang(tmp_path: SyncPath, writes: bool) -> None:
    """A writer already waiting in open(2): the reader's open releases it, and it may write and
    close (or just close) before the reader's open is done -- which must then not wait for a
    second writer.  Then read() returns the data and the end of the file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb") as w:  # blocks until the reader opens
            if writes:
                w.write(b"hello")

    async def main() -> None:
        for _ in range(10):
            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            with fail_after(10):
                async with await open_file(fifo, "rb", buffering=0) as f:
                    assert await f.read() == (b"hello" if writes else b"")
            thread.join(10)
            assert not thread.is_alive()

    anyio_uring.run(main)


@pytest.mark.parametrize("writes", [True, False])
def test_fifo_open_writer_comes_and_goes_before_the_second_open(
    tmp_path: SyncPath, monkeypatch: pytest.MonkeyPatch, writes: bool
) -> None:
    """The race the open's POLL_ADD is for, made deterministic: a writer opens, writes (or not)
    and closes after the reader's first fd exists but before the blocking re-open looks at
    the FIFO -- which would then wait for a *second* writer.  open() must return, and read()
    see the data and the end."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    raced: list[bool] = []
    original = Ring.openat

    def openat(self: Ring, dirfd: int, path: Any, flags: int, mode: int = 0o666, sqe_flags: int = 0) -> Any:
        if sqe_flags & IOSQE_ASYNC and os.fspath(path).startswith("/proc/self/fd/"):
            w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds: the reader is there
            if writes:
                os.write(w, b"hello")
            os.close(w)
            raced.append(True)
        return original(self, dirfd, path, flags, mode, sqe_flags)

    monkeypatch.setattr(Ring, "openat", openat)

    async def main() -> None:
        with fail_after(5):
            async with await open_file(fifo, "rb", buffering=0) as f:
                assert await f.read() == (b"hello" if writes else b"")

    anyio_uring.run(main)
    assert raced == [True]


def test_fifo_open_for_reading_is_cancellable(tmp_path: SyncPath) -> None:
    """Cancelling an open() that waits for a writer: Cancelled, no fd left open, nothing left
    on the ring.  (The kernel answers the interrupted io-wq open with -ERESTARTSYS/-EINTR.)"""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        ring = current_runner().ring
        baseline, fds = ring.inflight, _open_fds()
        for delay in (0, 0.001, 0.05):
            with move_on_after(delay) as scope:
                await open_file(fifo, "rb", buffering=0)
            assert scope.cancelled_caught
            assert ring.inflight == baseline
            assert _open_fds() == fds
        with CancelScope() as scope:
            scope.cancel()
            await open_file(fifo, "rb")
        assert scope.cancelled_caught
        assert _open_fds() == fds

    anyio_uring.run(main)
