"""The inline attempts of files and paths (``src/anyio_uring/_fs/_inline.py``) and their
fallbacks to the ring, on the real kernel.

Each fallback is forced for real: a symlink whose atime is due (a cached lookup would have to
write: ``EAGAIN``), pages evicted with ``POSIX_FADV_DONTNEED`` (``RWF_NOWAIT`` answers
``EAGAIN``), dentries dropped with ``/proc/sys/vm/drop_caches`` (root only), a file system that
is not local (``/proc``, and the local list emptied), and the ``inline_fs`` mask.  Results are
compared with ``os``."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path as SyncPath
from typing import Any

import pytest

import anyio_uring
from anyio_uring import CancelScope, RingOptions, open_file, open_nursery
from anyio_uring._core._run import checkpoint, current_runner
from anyio_uring._fs import _inline
from anyio_uring._fs._files import capabilities
from anyio_uring._ring import Ring

INLINE = RingOptions(disable=frozenset(), use_environment=False)
MASKED = RingOptions(disable=frozenset({"inline_fs"}), use_environment=False)
COUNTED = ("openat", "read", "write", "statx", "close_fd", "ftruncate")


def run(fn: Callable[..., Any], *args: Any, options: RingOptions = INLINE) -> Any:
    return anyio_uring.run(fn, *args, ring_options=options)


def _local(path: SyncPath) -> bool:
    """Whether the inline attempts work here: the kernel has what they need and ``path`` is on
    a local mount."""
    if not _inline._probe():
        return False
    probe = _inline.Inline()
    return probe.stat(os.fsencode(path), True) == 0


def _nowait_ok(directory: SyncPath) -> bool:
    """Whether regular files there take RWF_NOWAIT reads (tmpfs' answer EOPNOTSUPP)."""
    probe = directory / ".nowait-probe"
    probe.write_bytes(b"x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()
    return True


@pytest.fixture
def local_dir(tmp_path: SyncPath) -> SyncPath:
    if not _local(tmp_path):
        pytest.skip("inline attempts unavailable (kernel < 6.12, or tmp_path not on a local file system)")
    return tmp_path


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Ring operations queued, by Ring method, for every ring made during the test."""
    seen: dict[str, int] = {}
    for name in COUNTED:
        original = getattr(Ring, name)

        def counted(self: Ring, *args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            seen[_name] = seen.get(_name, 0) + 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(Ring, name, counted)
    return seen


def _same_stat(a: os.stat_result, b: os.stat_result) -> None:
    for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime_ns",
                  "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev", "st_mtime", "st_ctime"):  # fmt: skip
        assert getattr(a, field) == getattr(b, field), field


# ------------------------------------------------------------------------------------------
# the inline paths: no ring operation at all
# ------------------------------------------------------------------------------------------


def test_stat_open_read_close_are_inline(local_dir: SyncPath, counts: dict[str, int]) -> None:
    path = local_dir / "f.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    (local_dir / "d").mkdir()
    assert not os.path.exists(local_dir / "missing")  # a negative dentry, cached from now on

    async def main() -> None:
        p = anyio_uring.Path(path)
        _same_stat(await p.stat(), os.stat(path))
        _same_stat(await p.lstat(), os.lstat(path))
        assert await p.is_file()
        assert await anyio_uring.Path(local_dir / "d").is_dir()
        assert not await anyio_uring.Path(local_dir / "missing").exists()
        for buffering in (0, -1):
            async with await open_file(path, "rb", buffering=buffering) as f:
                assert f.raw._inline if buffering else f._inline  # type: ignore[attr-defined]
                assert await f.read(100) == data[:100]
                assert await f.seek(0, os.SEEK_END) == len(data)
                await f.seek(5000)
                assert await f.read() == data[5000:]
        assert await p.read_bytes() == data
        with open(path, encoding="latin-1") as f:
            assert await p.read_text(encoding="latin-1") == f.read()
        async with await open_file(path, "r+b") as f:  # O_RDWR: inline too; the write is not
            assert await f.read(3) == data[:3]

    nowait = _nowait_ok(local_dir)
    run(main)
    assert counts.get("openat", 0) == 0
    assert counts.get("statx", 0) == 0
    if nowait:
        assert counts.get("read", 0) == 0
    assert counts.get("close_fd", 0) == 0


def test_creating_opens_are_ring_operations_and_the_rest_inline(
    local_dir: SyncPath, counts: dict[str, int]
) -> None:
    """O_CREAT/O_TRUNC always go to the ring (RESOLVE_CACHED refuses them, io_uring punts them);
    the STATX of the new fd and the CLOSE are inline."""
    path = local_dir / "new.bin"

    async def main() -> None:
        async with await open_file(path, "wb") as f:
            await f.write(b"abc")
            assert await f.seek(0, os.SEEK_END) == 3
        async with await open_file(path, "ab") as f:
            await f.write(b"def")
            assert await f.tell() == 6

    run(main)
    assert path.read_bytes() == b"abcdef"
    assert counts["openat"] == 2
    assert counts.get("statx", 0) == 0
    assert counts["write"] == 2
    assert counts.get("close_fd", 0) == 0


def test_errors_of_inline_attempts_match_os(local_dir: SyncPath) -> None:
    file = local_dir / "f"
    file.write_bytes(b"x")

    def os_error(fn: Callable[..., object], *args: object) -> tuple[type, int | None, object]:
        try:
            fn(*args)
        except OSError as exc:
            return type(exc), exc.errno, exc.filename
        raise AssertionError("no error")

    async def ours(coro_fn: Callable[..., Any], *args: object) -> tuple[type, int | None, object]:
        try:
            await coro_fn(*args)
        except OSError as exc:
            return type(exc), exc.errno, exc.filename
        raise AssertionError("no error")

    async def main() -> None:
        for target in (local_dir / "missing", file / "x", local_dir / "missing" / "x"):
            p = anyio_uring.Path(target)
            assert await ours(p.stat) == os_error(os.stat, target)
            assert await ours(open_file, target, "rb") == os_error(open, target, "rb")
            assert not await p.exists()
        assert await ours(open_file, local_dir, "rb") == os_error(open, local_dir, "rb")

    run(main)


def test_inline_stat_is_a_schedule_point_and_a_cancel_point(local_dir: SyncPath) -> None:
    path = local_dir / "f"
    path.write_bytes(b"x")
    log: list[str] = []

    async def stats() -> None:
        for _ in range(5):
            await anyio_uring.Path(path).stat()
            log.append("s")

    async def other() -> None:
        for _ in range(5):
            await checkpoint()
            log.append("o")

    async def main() -> None:
        async with open_nursery() as nursery:
            nursery.start_soon(stats)
            nursery.start_soon(other)
        with CancelScope() as scope:
            scope.cancel()
            await anyio_uring.Path(path).stat()
        assert scope.cancelled_caught

    run(main)
    assert log[:4] == ["s", "o", "s", "o"], log


def test_a_cancellation_during_the_schedule_point_keeps_the_result(local_dir: SyncPath) -> None:
    """The attempt happened: its result is delivered, the cancellation lands at the next
    checkpoint (as when a cancelled task's ring operation completes)."""
    path = local_dir / "f"
    path.write_bytes(b"hello")
    got: list[object] = []

    async def main() -> None:
        scopes: list[CancelScope] = []
        started: list[bool] = []

        async def reader() -> None:
            with CancelScope() as scope:
                scopes.append(scope)
                async with await open_file(path, "rb", buffering=0) as f:
                    started.append(True)
                    got.append(await f.read())  # the other task cancels while we yield here
                    got.append("after read")
                    await checkpoint()
                    got.append("not reached")
            got.append(scope.cancelled_caught)

        async def canceller() -> None:
            while not started:
                await checkpoint()
            scopes[0].cancel()  # the reader is at its read's schedule point (it ran up to it)

        async with open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(canceller)

    run(main)
    assert got[0] == b"hello"
    assert "not reached" not in got
    assert got[-1] is True


# ------------------------------------------------------------------------------------------
# fallbacks, forced for real
# ------------------------------------------------------------------------------------------


def test_a_lookup_that_would_write_falls_back_to_the_ring(
    local_dir: SyncPath, counts: dict[str, int]
) -> None:
    """Following a symlink whose atime is due (relatime) would write the inode: a cached lookup
    refuses (EAGAIN), the ring's STATX/OPENAT follow it (and update the atime)."""
    target = local_dir / "target"
    target.write_bytes(b"through the link")
    link = local_dir / "link"
    link.symlink_to("target")
    os.utime(link, (0, 0), follow_symlinks=False)  # atime 1970: an update is due
    if _inline.Inline().stat(os.fsencode(link), True) != -errno.EAGAIN:
        pytest.skip("no atime updates on this mount (noatime?)")

    async def main() -> None:
        _same_stat(await anyio_uring.Path(link).stat(), os.stat(link))
        _same_stat(await anyio_uring.Path(link).lstat(), os.lstat(link))
        assert await anyio_uring.Path(link).is_symlink()
        async with await open_file(link, "rb") as f:
            assert await f.read() == b"through the link"

    run(main)
    assert counts["statx"] >= 1  # the first follow (when the rest is inline depends on the clock)


def test_proc_falls_back_to_the_ring(counts: dict[str, int]) -> None:
    """/proc is not a local file system: its lookups are cached (the read-only open is inline, as
    io_uring's own attempt is), but its STATX, READ and CLOSE are ring operations."""
    if not _inline._probe():
        pytest.skip("inline attempts unavailable")

    async def main() -> None:
        st = await anyio_uring.Path("/proc/self/status").stat()
        assert stat.S_ISREG(st.st_mode)
        async with await open_file("/proc/self/status", "rb") as f:
            assert b"Name:" in await f.read()

    run(main)
    assert counts["statx"] == 2
    assert counts.get("openat", 0) <= 1
    assert counts["read"] >= 1
    assert counts["close_fd"] == 1


def _evict(path: SyncPath, offset: int = 0, length: int = 0) -> None:
    """Drop the (clean) page-cache pages of a range: RWF_NOWAIT reads of it answer EAGAIN."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recent")]


def _cached_pages(path: SyncPath, offset: int, length: int) -> int:
    """Pages of the range in the page cache (cachestat(2), 6.5+; probing with a read would
    start read-ahead), or -1 if the kernel cannot tell."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, out = _CachestatRange(offset, length), _Cachestat()
        if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(out), 0) != 0:
            return -1
        return int(out.cache)
    finally:
        os.close(fd)


@pytest.mark.parametrize("buffering", [0, -1])
def test_uncached_pages_fall_back_to_a_ring_read(
    local_dir: SyncPath, counts: dict[str, int], buffering: int
) -> None:
    if not _nowait_ok(local_dir):
        pytest.skip("no RWF_NOWAIT reads on this file system")
    path = local_dir / "f.bin"
    data = os.urandom(64 * 1024)
    path.write_bytes(data)

    evicted: list[int] = []

    async def main() -> list[bytes]:
        out = []
        async with await open_file(path, "rb", buffering=buffering) as f:
            _evict(path)
            evicted.append(_cached_pages(path, 0, len(data)))
            out.append(await f.read(8192))  # EAGAIN -> READ on the ring
            out.append(await f.read(8192))  # whatever the ring read brought in
            while _cached_pages(path, 28672, 8192) == 1:  # read-ahead may still be landing
                await anyio_uring.sleep(0.001)
            _evict(path, 32768, 4096)  # one page in the middle
            evicted.append(_cached_pages(path, 28672, 8192))
            await f.seek(28672)
            out.append(await f.read(8192))  # a short RWF_NOWAIT read -> READ on the ring
            await f.seek(0)
            out.append(await f.read())
        return out

    # An RWF_NOWAIT read of evicted pages may still succeed: it starts read-ahead without
    # sleeping, and a fast device (this VM's virtio disk, served from the host's cache) can
    # finish it before the read looks again -- 130 of 200 such reads here.  So the ring is not
    # *always* needed; retry until an attempt hits EAGAIN and check that it then reads on the
    # ring, with the right bytes every time.
    for _attempt in range(30):
        evicted.clear()
        out = run(main)
        assert out == [data[:8192], data[8192:16384], data[28672:36864], data]
        if evicted[0] < 0:
            pytest.skip("no cachestat(2): cannot tell whether the pages were evicted")
        assert evicted[0] == 0 or evicted[1] == 1, evicted  # something was evicted
        if counts.get("read", 0) >= 1:
            break
    else:
        pytest.fail(f"30 reads of evicted pages never fell back to the ring: {evicted}, {counts}")


def test_the_end_of_a_file_is_confirmed(local_dir: SyncPath) -> None:
    """A short RWF_NOWAIT read is the end only if a read at its end returns 0: a file that grew
    or shrank after open() reads like a blocking read."""
    path = local_dir / "f"
    path.write_bytes(b"a" * 5000)

    async def main() -> None:
        async with await open_file(path, "rb") as f:
            with open(path, "ab") as w:
                w.write(b"b" * 3000)
            assert await f.read() == b"a" * 5000 + b"b" * 3000
        async with await open_file(path, "rb", buffering=0) as f:
            os.truncate(path, 100)
            assert await f.read() == b"a" * 100
            assert await f.read(10) == b""

    run(main)


def test_dropped_dentries_fall_back_to_the_ring(tmp_path: SyncPath, counts: dict[str, int]) -> None:
    if os.geteuid() != 0:
        pytest.skip("drop_caches needs root")
    local_dir = tmp_path
    if not _local(local_dir):
        pytest.skip("inline attempts unavailable here")
    sub = local_dir / "a" / "b"
    sub.mkdir(parents=True)
    path = sub / "f"
    path.write_bytes(b"cold")
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    if _inline.Inline().stat(os.fsencode(path), True) != -errno.EAGAIN:
        pytest.skip("the dentries stayed cached")

    async def main() -> None:
        _same_stat(await anyio_uring.Path(path).stat(), os.stat(path))  # STATX on the ring
        async with await open_file(path, "rb") as f:  # now cached: inline
            assert await f.read() == b"cold"

    run(main)
    assert counts["statx"] == 1
    assert counts.get("openat", 0) == 0


def test_a_mount_that_is_not_local_uses_the_ring(
    local_dir: SyncPath, counts: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file system on the local list: the lookup is still cached (and the read-only open
    inline, as io_uring's own attempt), but every STATX, READ and CLOSE is a ring operation."""
    monkeypatch.setattr(_inline, "LOCAL_MAGICS", {})
    monkeypatch.setattr(_inline, "_MOUNTS", {})
    path = local_dir / "f"
    path.write_bytes(b"remote-ish")

    async def main() -> None:
        _same_stat(await anyio_uring.Path(path).stat(), os.stat(path))
        assert not os.path.exists(local_dir / "missing")
        assert not await anyio_uring.Path(local_dir / "missing").exists()  # a negative dentry is final
        async with await open_file(path, "rb") as f:
            assert not f.raw._inline
            assert await f.read() == b"remote-ish"

    run(main)
    assert counts.get("openat", 0) == 0
    assert counts["statx"] == 2  # stat(), and the open's
    assert counts["read"] >= 1
    assert counts["close_fd"] == 1


def test_masked_inline_fs_uses_the_ring(local_dir: SyncPath, counts: dict[str, int]) -> None:
    path = local_dir / "f"
    path.write_bytes(b"x" * 10)

    async def main() -> None:
        assert capabilities(current_runner().ring)[2] is None
        await anyio_uring.Path(path).stat()
        async with await open_file(path, "rb") as f:
            assert await f.read() == b"x" * 10

    run(main, options=MASKED)
    assert counts["statx"] == 2
    assert counts["openat"] == 1
    assert counts["read"] == 1
    assert counts["close_fd"] == 1


def test_masked_statx_turns_the_inline_attempts_off(local_dir: SyncPath) -> None:
    """Without STATX on the ring the worker-thread fallbacks stay exactly as they were."""

    async def main() -> None:
        assert capabilities(current_runner().ring)[2] is None

    run(main, options=RingOptions(disable=frozenset({"statx"}), use_environment=False))


def test_a_fifo_opened_inline_still_waits_for_a_writer(local_dir: SyncPath) -> None:
    """The inline open adds O_NONBLOCK (as io_uring's does), so a FIFO opens at once; the wait
    for a writer that open(2) does is then made as before.  The fd ends up blocking."""
    fifo = local_dir / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        time.sleep(0.05)
        with open(fifo, "wb") as w:
            w.write(b"late")

    async def main() -> None:
        thread = threading.Thread(target=writer)
        thread.start()
        async with await open_file(fifo, "rb", buffering=0) as f:
            assert await f.read() == b"late"
            assert not fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        thread.join()

    run(main)


def test_open_flags_are_those_of_open(local_dir: SyncPath) -> None:
    """O_NONBLOCK, added for the inline open, is gone; the rest is what open() sets."""
    path = local_dir / "f"
    path.write_bytes(b"x")

    async def main() -> None:
        for mode in ("rb", "r+b", "r"):
            async with await open_file(path, mode) as f:
                with open(path, mode) as g:
                    assert fcntl.fcntl(f.fileno(), fcntl.F_GETFL) == fcntl.fcntl(g.fileno(), fcntl.F_GETFL)
                    assert fcntl.fcntl(f.fileno(), fcntl.F_GETFD) == fcntl.fcntl(g.fileno(), fcntl.F_GETFD)

    run(main)


def test_mount_table_learning(local_dir: SyncPath) -> None:
    """An unknown mount is classified once (statmount) and then answered by the C table."""
    probe = _inline.Inline()
    probe.c.mnt_id = 0
    assert not probe.learn()  # no mount id: not local
    raw = os.fsencode(local_dir)
    assert _inline.lib.aur_inline_stat(probe.c, -100, raw, 0) == _inline.UNKNOWN_MOUNT
    assert probe.c.mnt_id != 0
    assert probe.stat(raw, True) == 0  # learned, and asked again
    assert probe.c.nlocal == 1
    assert _inline.lib.aur_inline_stat(probe.c, -100, raw, 0) == 0  # from the table now


@pytest.mark.parametrize(
    "ns",
    [0, 1, 999_999_999, 1_796_156_780_123_456_789, -1, -1_000_000_001, 2**62 + 12345, 10**19 + 7, -(10**19)],
)
def test_stat_results_are_those_of_the_statx_decoder(local_dir: SyncPath, ns: int) -> None:
    """The C digest of an inline stat equals the Python decoding of the same statx (floats
    bit for bit); a time whose ns overflow int64 is decoded in Python (RAW)."""
    from anyio_uring._fs._files import stat_from_view

    path = local_dir / "f"
    path.write_bytes(b"x")
    try:
        os.utime(path, ns=(ns, ns))
    except OSError as exc:
        pytest.skip(f"this file system refuses the time: {exc}")
    probe = _inline.Inline()
    res = probe.stat(os.fsencode(path), True)
    want = stat_from_view(probe.statx)
    got = os.stat_result(_inline.DIGEST.unpack_from(probe.st)) if res == 0 else want
    assert res in (0, _inline.RAW)
    if not -(2**63) <= os.stat(path).st_mtime_ns < 2**63:
        assert res == _inline.RAW
    assert tuple(got) == tuple(want)
    for field in ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                  "st_blksize", "st_blocks", "st_rdev"):  # fmt: skip
        assert getattr(got, field) == getattr(want, field), field
    on_os = os.stat(path)
    for field in ("st_mode", "st_ino", "st_dev", "st_size", "st_mtime_ns", "st_atime_ns"):
        assert getattr(got, field) == getattr(on_os, field), field

    async def main() -> os.stat_result:
        return await anyio_uring.Path(path).stat()

    st = run(main)
    assert tuple(st) == tuple(want)
    assert st.st_mtime_ns == want.st_mtime_ns
    assert st.st_mtime == want.st_mtime


def test_adopted_fds_are_inline_unless_o_direct(local_dir: SyncPath) -> None:
    """A synchronous RWF_NOWAIT read of an O_DIRECT fd would wait for the device: such an
    adopted fd reads on the ring; a plain one is inline like our own opens."""
    path = local_dir / "f"
    path.write_bytes(b"y" * 8192)

    async def main() -> None:
        fd = os.open(path, os.O_RDONLY)
        async with await open_file(fd, "rb", buffering=0) as f:
            assert f._inline  # type: ignore[attr-defined]
            assert await f.read(5) == b"yyyyy"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            return  # no O_DIRECT on this file system
        async with await open_file(fd, "rb", buffering=0) as f:
            assert not f._inline  # type: ignore[attr-defined]
            assert f._inline_stat is not None  # type: ignore[attr-defined]

    run(main)


def test_a_mount_without_rwf_nowait_reads_on_the_ring(counts: dict[str, int]) -> None:
    """tmpfs refuses RWF_NOWAIT (EOPNOTSUPP): the first file learns it for the mount, the next
    ones read on the ring from the start; stat, open and close stay inline."""
    shm = SyncPath("/dev/shm")
    if not shm.is_dir() or not _local(shm) or _nowait_ok(shm):
        pytest.skip("needs a local file system without RWF_NOWAIT reads at /dev/shm (tmpfs)")
    directory = shm / f"anyio-uring-test-{os.getpid()}"
    directory.mkdir()
    try:
        for name in ("a", "b"):
            (directory / name).write_bytes(name.encode() * 100)

        async def main() -> list[bool]:
            flags = []
            for name in ("a", "b"):
                async with await open_file(directory / name, "rb") as f:
                    flags.append(f.raw._inline)
                    assert await f.read() == name.encode() * 100
                    assert not f.raw._inline
                    assert f.raw._inline_close
            return flags

        assert run(main) == [True, False]
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    assert counts["read"] == 2
    assert counts.get("openat", 0) == 0
    assert counts.get("statx", 0) == 0
    assert counts.get("close_fd", 0) == 0
