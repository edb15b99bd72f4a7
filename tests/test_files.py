"""Unit tests of anyio_uring's files and paths that the parity suite cannot express: which
mechanism each operation uses, behaviour where CPython < 3.13 is buggy, locking, finalizers."""

from __future__ import annotations

import gc
import os
import stat
import sys
import warnings
from collections.abc import Callable
from pathlib import Path as SyncPath
from typing import Any

import anyio
import pytest

import anyio_uring
from anyio_uring import CancelScope, RingOptions, open_file, open_nursery
from anyio_uring._core._run import current_runner
from anyio_uring._fs._files import AsyncFile, BufferedFile, RawFile, TextFile
from anyio_uring._ring import Ring


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return anyio_uring.run(fn, *args, **kwargs)


class OpCounter:
    """Wraps a Ring's prep methods to count the operations queued, by name."""

    METHODS = ("openat", "read", "write", "statx", "fsync", "ftruncate", "close_fd", "unlinkat",
               "renameat", "mkdirat", "symlinkat", "linkat")  # fmt: skip

    def __init__(self, ring: Ring, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[str, int] = {}
        for name in self.METHODS:
            original = getattr(ring, name)

            def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.counts[_name] = self.counts.get(_name, 0) + 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(ring, name, counted)


@pytest.fixture
def no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a file operation falls back to a worker thread."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"worker thread used for {args[0]!r}")

    import anyio_uring._fs._files as files
    import anyio_uring._fs._paths as paths

    monkeypatch.setattr(files, "to_thread_run_sync", refuse)
    monkeypatch.setattr(paths, "run_sync_in_thread", refuse)


# ------------------------------------------------------------------------------------------
# every system call is a ring operation
# ------------------------------------------------------------------------------------------


def test_file_io_uses_only_ring_operations(
    tmp_path: SyncPath, monkeypatch: pytest.MonkeyPatch, no_threads: None
) -> None:
    path = tmp_path / "f.bin"

    async def main() -> dict[str, int]:
        counter = OpCounter(current_runner().ring, monkeypatch)
        f = await open_file(path, "w+b")
        await f.write(b"x" * 100_000)
        await f.seek(0, 2)
        await f.truncate(10)
        await f.fsync()
        await f.seek(0)
        assert await f.read() == b"x" * 10
        await f.aclose()
        p = anyio_uring.Path(path)
        assert (await p.stat()).st_size == 10
        assert await p.is_file()
        await p.rename(tmp_path / "g")
        await anyio_uring.Path(tmp_path / "d").mkdir()
        await anyio_uring.Path(tmp_path / "d").rmdir()
        await anyio_uring.Path(tmp_path / "l").symlink_to("g")
        await anyio_uring.Path(tmp_path / "h").hardlink_to(tmp_path / "g")
        await anyio_uring.Path(tmp_path / "g").unlink()
        await anyio_uring.Path(tmp_path / "t").touch(exist_ok=False)
        return counter.counts

    # STATX and FTRUNCATE on the ring even when ANYIO_URING_DISABLE masks them for the run; the
    # inline attempts masked, so that every system call is a ring operation (with them, see
    # tests/test_files_inline.py)
    unmasked = (RingOptions().effective_disable() - {"statx", "ftruncate"}) | {"inline_fs"}
    counts = run(main, ring_options=RingOptions(disable=unmasked, use_environment=False))
    assert counts["openat"] == 2  # open_file + touch
    assert counts["write"] >= 1
    assert counts["ftruncate"] == 1
    assert counts["fsync"] == 1
    assert counts["close_fd"] == 2
    assert counts["statx"] >= 4  # open, SEEK_END, stat, is_file
    for name in ("renameat", "mkdirat", "symlinkat", "linkat"):
        assert counts[name] == 1, name
    assert counts["unlinkat"] == 2


def test_masked_features_use_threads(tmp_path: SyncPath, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    used: list[str] = []

    import anyio_uring._fs._files as files

    original = files.to_thread_run_sync

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        used.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(files, "to_thread_run_sync", spy)

    async def main() -> None:
        ring = current_runner().ring
        assert not ring.support.statx
        assert not ring.support.ftruncate
        monkeypatch.setattr(ring, "statx", None)  # must not be called
        monkeypatch.setattr(ring, "ftruncate", None)
        f = await open_file(tmp_path / "f", "r+b")
        assert await f.seek(0, 2) == 10
        assert await f.truncate(4) == 4
        await f.aclose()
        assert (await anyio_uring.Path(tmp_path / "f").stat()).st_size == 4
        assert not await anyio_uring.Path(tmp_path / "missing").exists()

    options = anyio_uring.RingOptions(disable=frozenset({"statx", "ftruncate"}), use_environment=False)
    run(main, ring_options=options)
    assert used.count("fstat") == 2
    assert used.count("ftruncate") == 1
    assert used.count("_stat_follow") == 2


def test_stat_result_matches_os_stat(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    os.symlink("f", tmp_path / "l")
    os.mkfifo(tmp_path / "fifo")
    targets = [tmp_path / "f", tmp_path / "l", tmp_path / "fifo", tmp_path, SyncPath("/dev/null")]

    async def main() -> list[tuple[os.stat_result, os.stat_result]]:
        pairs = []
        for t in targets:
            for follow in (True, False):
                ours = await anyio_uring.Path(t).stat(follow_symlinks=follow)
                pairs.append((ours, os.stat(t, follow_symlinks=follow)))
        return pairs

    for ours, theirs in run(main):
        assert type(ours) is os.stat_result
        assert tuple(ours) == tuple(theirs)
        for field in dir(theirs):
            if field.startswith("st_") and field != "st_atime" and not field.startswith("st_atime"):
                assert getattr(ours, field) == getattr(theirs, field), field
        assert stat.S_IFMT(ours.st_mode) == stat.S_IFMT(theirs.st_mode)


# ------------------------------------------------------------------------------------------
# where CPython < 3.13 is wrong, we are right
# ------------------------------------------------------------------------------------------


def test_read1_flushes_pending_writes(tmp_path: SyncPath) -> None:
    """CPython < 3.13: BufferedRandom.read1() after a write returns stale bytes and the write
    lands after them.  We flush first, as CPython 3.13 does."""
    path = tmp_path / "f"

    async def main() -> list[Any]:
        results: list[Any] = []
        path.write_bytes(b"abcdef")
        f = await open_file(path, "r+b")
        await f.write(b"XY")
        results.append(await f.read1(10))
        results.append(await f.tell())
        await f.aclose()
        results.append(path.read_bytes())
        path.write_text("abc")
        t = await open_file(path, "r+", encoding="utf-8")
        await t.write("X")
        results.append(await t.readline())
        results.append(await t.tell())
        await t.aclose()
        results.append(path.read_text())
        return results

    assert run(main) == [b"cdef", 6, b"XYcdef", "bc", 3, "Xbc"]


# ------------------------------------------------------------------------------------------
# API surface
# ------------------------------------------------------------------------------------------


def test_classes_and_attributes(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_text("x")

    async def main() -> None:
        t = await open_file(tmp_path / "f")
        b = await open_file(tmp_path / "f", "rb")
        r = await open_file(tmp_path / "f", "rb", buffering=0)
        (tmp_path / "g").write_text("y")
        for f, cls in ((t, TextFile), (b, BufferedFile), (r, RawFile)):
            assert isinstance(f, cls)
            assert isinstance(f, AsyncFile)
            assert isinstance(f, anyio.AsyncFile)
            assert f.wrapped is f
            assert f.limiter is None
            assert "anyio_uring" in repr(f)
            with pytest.raises(AttributeError):
                f.no_such_attribute  # noqa: B018
        assert t.buffer is not None
        assert t.buffer.raw.closefd
        assert b.raw.mode == "rb"
        assert isinstance(anyio_uring.Path(tmp_path), anyio.Path)
        assert anyio_uring.Path(tmp_path) / "f" == anyio.Path(tmp_path / "f")
        assert type(anyio_uring.Path(tmp_path) / "f") is anyio_uring.Path
        assert type(await anyio_uring.Path(tmp_path / "g").rename(tmp_path / "moved")) is anyio_uring.Path
        for f in (t, b, r):
            await f.aclose()
            assert f.closed
            assert "closed" in repr(f)
        with pytest.raises(TypeError):
            AsyncFile()

    run(main)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_outside_a_uring_loop_files_are_anyios(tmp_path: SyncPath, backend: str) -> None:
    """Where no uring loop runs (the trio fallback for a blocked io_uring, another backend),
    open_file and Path do what anyio's do, in worker threads."""

    async def main() -> None:
        async with await open_file(tmp_path / "f", "w") as f:
            assert type(f) is anyio.AsyncFile
            await f.write("hello")
        path = anyio_uring.Path(tmp_path) / "f"
        assert (await path.stat()).st_size == 5
        assert await path.read_text() == "hello"
        assert await path.exists()
        assert not await path.is_dir()
        assert [p.name async for p in anyio_uring.Path(tmp_path).iterdir()] == ["f"]
        assert await anyio_uring.Path.cwd() == anyio.Path(os.getcwd())
        await path.unlink()
        assert not await path.exists()

    anyio.run(main, backend=backend)


def test_limiter_is_used_for_fallbacks(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_text("x")

    async def main() -> None:
        limiter = anyio.CapacityLimiter(1)
        seen: list[int] = []

        def opener(path: str, flags: int) -> int:
            seen.append(limiter.borrowed_tokens)
            return os.open(path, flags)

        f = await anyio_uring.open_file(tmp_path / "f", opener=opener, limiter=limiter)
        assert f.limiter is limiter
        assert await f.read() == "x"
        await f.aclose()
        assert seen == [1]
        p = anyio_uring.Path(tmp_path / "f", limiter=limiter)
        assert (await p.resolve()).limiter is limiter
        with pytest.raises(TypeError):
            await anyio_uring.open_file(tmp_path / "f", limiter=object())  # type: ignore[arg-type]

    anyio.run(main, backend="uring")


def test_unclosed_file_warns_and_flushes(tmp_path: SyncPath) -> None:
    path = tmp_path / "f"

    async def main() -> None:
        f = await open_file(path, "w")
        await f.write("pending text")
        fd = f.fileno()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del f
            gc.collect()
        assert any(issubclass(w.category, ResourceWarning) for w in caught)
        with pytest.raises(OSError):
            os.fstat(fd)

    run(main)
    assert path.read_text() == "pending text"


# ------------------------------------------------------------------------------------------
# concurrency
# ------------------------------------------------------------------------------------------


def test_concurrent_operations_on_one_file_serialize(tmp_path: SyncPath) -> None:
    lines = [f"{i}\n" for i in range(20000)]
    (tmp_path / "f").write_text("".join(lines))

    async def main() -> list[str]:
        f = await open_file(tmp_path / "f")
        got: list[str] = []

        async def reader() -> None:
            while line := await f.readline():
                got.append(line)

        async with open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(reader)
        await f.aclose()
        return got

    got = run(main)
    assert sorted(got, key=int) == lines


def test_many_files_concurrently(tmp_path: SyncPath) -> None:
    for i in range(200):
        (tmp_path / f"{i}").write_bytes(bytes([i % 256]) * (i * 37))

    async def main() -> None:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            async with await open_file(tmp_path / f"{i}", "rb") as f:
                results[i] = await f.read()

        async with open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        assert all(results[i] == bytes([i % 256]) * (i * 37) for i in range(200))

    run(main)


def test_pipe_streams(tmp_path: SyncPath) -> None:
    """Non-seekable files: reads and writes at the kernel's position, seek/tell raise."""
    r, w = os.pipe()

    async def main() -> None:
        reader = await open_file(r, "rb")
        writer = await open_file(w, "wb", buffering=0)
        assert not reader.seekable()
        await writer.write(b"hello\nworld\n")
        assert await reader.readline() == b"hello\n"
        with pytest.raises(OSError) as info:
            await reader.tell()
        assert info.value.errno == 29  # ESPIPE
        with pytest.raises(io_unsupported()):
            await reader.seek(0)
        await writer.aclose()
        assert await reader.read() == b"world\n"
        await reader.aclose()

    run(main)


def io_unsupported() -> type[Exception]:
    import io

    return io.UnsupportedOperation


def test_big_read_and_write_beyond_buffer(tmp_path: SyncPath) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def main() -> None:
        async with await open_file(tmp_path / "f", "wb") as f:
            for i in range(0, len(data), 100_000):
                await f.write(data[i : i + 100_000])
        async with await open_file(tmp_path / "f", "rb") as f:
            parts = []
            while chunk := await f.read(65536):
                parts.append(chunk)
            assert b"".join(parts) == data
        p = anyio_uring.Path(tmp_path / "f")
        assert await p.read_bytes() == data

    run(main)


def test_text_cancel_scope_around_iteration(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_text("a\nb\nc\n")

    async def main() -> None:
        f = await open_file(tmp_path / "f")
        with CancelScope() as scope:
            async for line in f:
                assert line == "a\n"
                scope.cancel()
        assert scope.cancelled_caught
        assert await f.readline() == "b\n"
        await f.aclose()

    run(main)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="is_junction exists from 3.12")
def test_is_junction(tmp_path: SyncPath) -> None:  # pragma: no cover - not 3.11
    async def main() -> None:
        assert not await anyio_uring.Path(tmp_path).is_junction()

    run(main)


@pytest.mark.parametrize("buffering", [-1, 0])
def test_read_all_of_a_file_that_grew_after_open(tmp_path: SyncPath, buffering: int) -> None:
    """The size seen at open is only a hint: read() still reads to the real end."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main() -> None:
        f = await open_file(path, "rb", buffering=buffering)
        with open(path, "ab") as g:
            g.write(b"x" * 200_000)
        assert await f.read() == b"0123456789" + b"x" * 200_000
        assert await f.read() == b""
        with open(path, "r+b") as g:
            g.truncate(5)
        await f.seek(0)
        assert await f.read() == b"01234"
        await f.aclose()

    run(main)
