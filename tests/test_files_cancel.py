"""Cancellation of file operations in flight: no byte lost, no buffer released before its CQE,
positions that say what really happened -- against a real 256 MiB file, with IOSQE_ASYNC to put
the reads on io-wq (where a cancel can answer -EALREADY and the read still completes)."""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path as SyncPath
from typing import Any

import pytest

import anyio_uring
from anyio_uring import CancelScope, open_file, open_nursery, sleep
from anyio_uring._core._run import current_runner
from anyio_uring._fs._files import IOSQE_ASYNC, BufferedFile, RawFile, TextFile

BIG = 256 * 1024 * 1024
BLOCK = 4096


def _pattern(nbytes: int) -> bytes:
    """Block i (4 KiB) holds its index, repeated: any slice says where it came from."""
    return b"".join(i.to_bytes(8, "little") * (BLOCK // 8) for i in range(nbytes // BLOCK))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SyncPath, memoryview]]:
    path = SyncPath("/tmp") / f"anyio_uring_files_cancel_{os.getpid()}.bin"
    data = _pattern(BIG)
    try:
        with open(path, "wb") as f:
            f.write(data)
        yield path, memoryview(data)
    finally:
        path.unlink(missing_ok=True)


def _raw(f: Any) -> RawFile:
    if isinstance(f, TextFile):
        return f.buffer.raw
    if isinstance(f, BufferedFile):
        return f.raw
    assert isinstance(f, RawFile)
    return f


async def _wait_submitted(baseline: int) -> None:
    """Let the loop submit the reader's SQE (the kernel owns it from then on)."""
    ring = current_runner().ring
    for _ in range(100):
        await sleep(0)
        if ring.inflight > baseline and ring.ledger().by_state.get("SUBMITTED"):
            return
    raise AssertionError("the read was never submitted")


# ------------------------------------------------------------------------------------------
# the kernel owns the buffer until the CQE
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.002])
def test_cancelled_readinto_keeps_buffer_pinned_until_cqe(
    big_file: tuple[SyncPath, memoryview], delay: float
) -> None:
    """An unbuffered readinto() of 256 MiB on io-wq is cancelled: until the read's own CQE
    the caller's bytearray stays exported (cannot be resized) and counted in bytes_pinned;
    then either the bytes arrived (and the position moved by exactly that much) or nothing
    happened (-ECANCELED: position unchanged)."""
    path, ref = big_file
    outcomes: Counter[str] = Counter()

    async def main() -> None:
        ring = current_runner().ring
        for _ in range(3):
            f = await open_file(path, "rb", buffering=0)
            _raw(f)._read_sqe_flags = IOSQE_ASYNC
            await f.seek(BLOCK)
            buf = bytearray(BIG - BLOCK)
            box: dict[str, Any] = {}

            async def reader(box: dict[str, Any] = box, f: Any = f, buf: bytearray = buf) -> None:
                with CancelScope() as scope:
                    box["scope"] = scope
                    box["n"] = await f.readinto(buf)
                    await sleep(0)  # the cancellation lands at this checkpoint
                    box["checkpoint-survived"] = True  # must not get here
                box["caught"] = scope.cancelled_caught

            baseline = ring.inflight
            async with open_nursery() as nursery:
                nursery.start_soon(reader)
                await _wait_submitted(baseline)
                if delay:
                    await sleep(delay)
                pinned = ring.bytes_pinned
                box["scope"].cancel()
                await sleep(0)  # the ASYNC_CANCEL goes out; the task stays parked
                if ring.inflight > baseline:  # the read has not completed yet
                    outcomes["pinned-while-cancelling"] += 1
                    assert ring.bytes_pinned >= len(buf)
                    assert pinned >= len(buf)
                    with pytest.raises(BufferError):
                        buf.extend(b"x")  # still exported to the kernel
            assert ring.bytes_pinned == 0
            buf.extend(b"x")  # released now
            del buf[-1:]
            assert box["caught"]
            assert "checkpoint-survived" not in box
            pos = await f.tell()
            if "n" in box:  # the read completed despite the cancel: its bytes were delivered
                outcomes["data"] += 1
                n = box["n"]
                assert n > 0
                assert pos == BLOCK + n
                assert buf[:n] == ref[BLOCK : BLOCK + n]
            else:  # -ECANCELED: nothing read, position unchanged
                outcomes["cancelled"] += 1
                assert pos == BLOCK
                assert await f.read(8) == ref[BLOCK : BLOCK + 8]
            await f.aclose()

    anyio_uring.run(main)
    assert outcomes["data"] + outcomes["cancelled"] == 3, outcomes
    if delay:  # a 256 MiB read takes tens of ms: the cancel finds it running on io-wq
        assert outcomes["pinned-while-cancelling"] >= 1, outcomes


@pytest.mark.parametrize("buffering", [-1, 0])
def test_cancelled_big_read_loses_nothing(big_file: tuple[SyncPath, memoryview], buffering: int) -> None:
    """read(n) cancelled at random moments: whatever each call returned, concatenated with the
    rest of the file read afterwards, is exactly the file; tell() always agrees."""
    path, ref = big_file
    outcomes: Counter[str] = Counter()

    async def main() -> None:
        f = await open_file(path, "rb", buffering=buffering)
        _raw(f)._read_sqe_flags = IOSQE_ASYNC
        got = bytearray()
        delays = [0, 0.0005, 0.001, 0.003, 0.01]
        for i in range(12):
            with CancelScope() as scope:
                scope.deadline = current_runner().clock.current_time() + delays[i % len(delays)]
                chunk = await f.read(16 * 1024 * 1024 + 12345)
                got += chunk
                outcomes["data-then-cancel" if scope.cancel_called else "data"] += 1
                await sleep(0)  # a checkpoint: the cancellation (if any) lands here
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1
            assert await f.tell() == len(got)
        rest = await f.read()
        got += rest
        assert len(got) == BIG
        assert got == ref
        await f.aclose()

    anyio_uring.run(main)
    assert outcomes["data"] + outcomes["data-then-cancel"] >= 1


def test_cancelled_multi_op_buffered_read_keeps_bytes(tmp_path: SyncPath) -> None:
    """A buffered read(100) from a FIFO gets 10 bytes, then waits: cancelling the second
    operation keeps the 10 bytes in the read-ahead buffer; the next read returns them."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        wfd = os.open(fifo, os.O_RDWR)  # a writer that never blocks the reader's open
        try:
            f = await open_file(fifo, "rb")
            os.write(wfd, b"0123456789")
            with CancelScope() as scope:
                scope.deadline = current_runner().clock.current_time() + 0.05
                await f.read(100)
                raise AssertionError("the pipe has only 10 bytes")
            assert scope.cancelled_caught
            assert current_runner().ring.bytes_pinned == 0
            assert await f.read(10) == b"0123456789"
            os.write(wfd, b"abc\n")
            assert await f.readline() == b"abc\n"
            await f.aclose()
        finally:
            os.close(wfd)

    anyio_uring.run(main)


def test_cancelled_text_readline_keeps_chars(tmp_path: SyncPath) -> None:
    """readline() spanning two chunks of a FIFO, cancelled while waiting for the second: the
    first chunk's characters are still there for the next readline."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        wfd = os.open(fifo, os.O_RDWR)
        try:
            f = await open_file(fifo, "r", encoding="utf-8")
            os.write(wfd, "h\xe9llo ".encode())
            with CancelScope() as scope:
                scope.deadline = current_runner().clock.current_time() + 0.05
                await f.readline()
            assert scope.cancelled_caught
            os.write(wfd, "w\xf6rld\nnext".encode())
            assert await f.readline() == "h\xe9llo w\xf6rld\n"
            os.write(wfd, b"\n")
            assert await f.readline() == "next\n"
            await f.aclose()
        finally:
            os.close(wfd)

    anyio_uring.run(main)


def test_cancelled_raw_readall_on_pipe_keeps_bytes(tmp_path: SyncPath) -> None:
    """Unbuffered readall() on a FIFO: the bytes of the operations that completed before the
    cancel are handed out by the next read (RawFile's stash)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> None:
        wfd = os.open(fifo, os.O_RDWR)
        try:
            f = await open_file(fifo, "rb", buffering=0)
            os.write(wfd, b"abc")
            with CancelScope() as scope:
                scope.deadline = current_runner().clock.current_time() + 0.05
                await f.read()
            assert scope.cancelled_caught
            assert await f.read(2) == b"ab"
            assert await f.read(5) == b"c"
            await f.aclose()
        finally:
            os.close(wfd)

    anyio_uring.run(main)


# ------------------------------------------------------------------------------------------
# writes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("buffering", [-1, 0])
def test_cancelled_big_write_position_is_truth(tmp_path: SyncPath, buffering: int) -> None:
    """A 64 MiB write cancelled at various moments: afterwards tell() equals the bytes that
    really are in the file, and they are the right bytes."""
    data = _pattern(64 * 1024 * 1024)
    path = tmp_path / "w.bin"

    async def main() -> None:
        for delay in (0, 0.0005, 0.002, 0.02):
            f = await open_file(path, "wb", buffering=buffering)
            _raw(f)._write_sqe_flags = IOSQE_ASYNC
            returned = None
            with CancelScope() as scope:
                scope.deadline = current_runner().clock.current_time() + delay
                returned = await f.write(data)
            pos = await f.tell()
            await f.aclose()
            on_disk = path.read_bytes()
            assert len(on_disk) == pos
            assert on_disk == data[:pos]
            if returned is not None:
                assert returned == pos or (buffering != 0 and pos == len(data))

    anyio_uring.run(main)


def test_cancelled_text_write_keeps_accepted_text(tmp_path: SyncPath) -> None:
    """Text writes are accepted into the buffers before any I/O: a cancellation at entry
    rejects the write, a cancellation during the flush it triggers loses nothing and
    duplicates nothing -- close() writes the rest."""
    path = tmp_path / "t.txt"
    lines = [f"line {i} \u20ac " + "x" * (i % 500) + "\n" for i in range(20000)]
    returned: list[int] = []
    interrupted = 0

    async def main() -> None:
        nonlocal interrupted
        clock = current_runner().clock
        f = await open_file(path, "w", encoding="utf-8")
        _raw(f)._write_sqe_flags = IOSQE_ASYNC
        for i, line in enumerate(lines):
            with CancelScope() as scope:
                if i % 3 == 0:
                    scope.deadline = clock.current_time() + 0.00001 * (i % 11)
                await f.write(line)
                returned.append(i)
            if scope.cancelled_caught:
                interrupted += 1
        await f.aclose()

    anyio_uring.run(main)
    written = [int(line.split()[1]) for line in path.read_text(encoding="utf-8").splitlines()]
    assert written == sorted(set(written)), "reordered or duplicated"
    assert set(returned) <= set(written), "a write that returned was lost"
    assert interrupted > 0


# ------------------------------------------------------------------------------------------
# open and close
# ------------------------------------------------------------------------------------------


def test_cancelled_opens_leak_no_fd(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        clock = current_runner().clock
        for i in range(300):
            with CancelScope() as scope:
                scope.deadline = clock.current_time() + (i % 5) * 0.00002
                f = await open_file(tmp_path / "f", "rb")
                await f.aclose()

    anyio_uring.run(main)
    assert len(os.listdir("/proc/self/fd")) == before


def test_aclose_in_cancelled_scope_still_closes(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_bytes(b"")

    async def main() -> None:
        f = await open_file(tmp_path / "f", "w")
        await f.write("pending")
        fd = f.fileno()
        with CancelScope() as scope:
            scope.cancel()
            await f.aclose()  # shielded: flushes and closes anyway
        assert f.closed
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF

    anyio_uring.run(main)
    assert (tmp_path / "f").read_text() == "pending"


def test_operations_in_cancelled_scope_do_nothing(tmp_path: SyncPath) -> None:
    """Every file method is a cancel point: in a cancelled scope it raises before any I/O."""
    (tmp_path / "f").write_bytes(b"0123456789")

    async def main() -> None:
        ring = current_runner().ring
        f = await open_file(tmp_path / "f", "r+b")
        await f.read(2)
        written = ring.counters()["sqes_written"]
        for call in (f.read, f.read1, f.readline, f.readlines, f.tell, f.flush, f.truncate):
            with CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught, call
        with CancelScope() as scope:
            scope.cancel()
            await f.write(b"XX")
        assert scope.cancelled_caught
        with CancelScope() as scope:
            scope.cancel()
            await f.seek(0)
        assert scope.cancelled_caught
        assert ring.counters()["sqes_written"] == written
        assert await f.tell() == 2
        assert await f.read() == b"23456789"
        await f.aclose()

    anyio_uring.run(main)
