"""Harness for running one file scenario on anyio (trio backend, thread-based files) and on
anyio_uring (ring-based files), recording every step's result or exception for comparison."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import stat
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path as SyncPath
from typing import Any

import anyio
import pytest

import anyio_uring


@dataclass(frozen=True)
class Api:
    """The two implementations under comparison."""

    name: str
    open_file: Any
    Path: Any


ANYIO = Api("anyio", anyio.open_file, anyio.Path)
URING = Api("uring", anyio_uring.open_file, anyio_uring.Path)


def describe_exception(exc: BaseException, root: str) -> tuple[Any, ...]:
    """What must match: the type, errno and filenames (for OSError), the message otherwise
    (AttributeError messages name the implementation's class and are not compared)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return (type(exc).__name__, exc.errno, _rel(exc.filename, root), _rel(exc.filename2, root))
    if isinstance(exc, AttributeError):
        return (type(exc).__name__,)
    message = re.sub(r"\b\w+\.(\w+)\(\) takes", r"\1() takes", str(exc))  # method owner's class
    return (type(exc).__name__, message.replace(root, "<root>"))


def _rel(value: Any, root: str) -> Any:
    if isinstance(value, int):
        return "<fd>"  # fd numbers differ between the runs
    if isinstance(value, str):
        return value.replace(root, "<root>")
    if isinstance(value, bytes):
        return value.replace(os.fsencode(root), b"<root>")
    return value


def normalize(value: Any, root: str) -> Any:
    if isinstance(value, os.stat_result):
        return (
            "stat",
            stat.S_IFMT(value.st_mode),
            stat.S_IMODE(value.st_mode),
            value.st_size,
            value.st_nlink,
        )
    if isinstance(value, anyio.Path):
        return ("path", str(value).replace(root, "<root>"))
    if isinstance(value, (list, tuple)):
        return type(value)(normalize(v, root) for v in value)
    if isinstance(value, anyio.AsyncFile):
        return "<file>"
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


class Recorder:
    """``await rec("label", fn, *args)``: call (and await) ``fn``, record the outcome."""

    def __init__(self, api: Api, root: SyncPath) -> None:
        self.api = api
        self.root = root
        self.log: list[tuple[Any, ...]] = []

    async def __call__(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        root = str(self.root)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                self.log.append((label, "raised", *describe_exception(exc, root)))
                value = None
            else:
                self.log.append((label, "ok", normalize(value, root)))
        for w in caught:
            self.log.append((label, "warned", w.category.__name__, str(w.message)))
        return value

    def note(self, label: str, value: Any) -> None:
        self.log.append((label, "note", normalize(value, str(self.root))))

    def contents(self, label: str, name: str) -> None:
        """Record a file's bytes as the disk sees them."""
        path = self.root / name
        self.note(label, path.read_bytes() if path.exists() else None)


Scenario = Callable[[Api, SyncPath, Recorder], Awaitable[None]]


def _fresh(root: SyncPath) -> None:
    if root.exists():
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                os.chmod(child, 0o755)
        shutil.rmtree(root)
    root.mkdir()


async def _run(scenario: Scenario, api: Api, root: SyncPath) -> list[tuple[Any, ...]]:
    rec = Recorder(api, root)
    await scenario(api, root, rec)
    return rec.log


def run_both(
    scenario: Scenario, root: SyncPath, ring_options: anyio_uring.RingOptions | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Run ``scenario`` in a fresh ``root`` on anyio+trio and on anyio_uring."""
    _fresh(root)
    expected = anyio.run(_run, scenario, ANYIO, root, backend="trio")
    _fresh(root)
    actual = anyio_uring.run(_run, scenario, URING, root, ring_options=ring_options)
    _fresh(root)
    return expected, actual


def assert_same(expected: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]) -> None:
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        assert a == e, f"step {i} differs:\n  anyio/trio : {e!r}\n  anyio_uring: {a!r}"
    assert len(actual) == len(expected)


# ==========================================================================================
# scenarios: each runs on both implementations; every recorded step must match
# ==========================================================================================

SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


TEXT = "first line\nsecond\r\nthird\rfourth\n\nlast without newline"
UNICODE = "h\xe9llo w\xf6rld \u20ac\U0001f600\n" * 3 + "\u65e5\u672c\u8a9e\r\nend\r"
NEWLINES = [None, "", "\n", "\r", "\r\n"]


@scenario
async def text_write_read(api: Api, d: SyncPath, rec: Recorder) -> None:
    f = await api.open_file(d / "t.txt", "w", encoding="utf-8")
    await rec("write", f.write, TEXT)
    await rec("tell", f.tell)
    await rec("attrs", lambda: (f.name == d / "t.txt", f.mode, f.encoding, f.errors, f.closed))
    await rec("line_buffering", lambda: (f.line_buffering, f.write_through, f.newlines))
    await rec("close", f.aclose)
    await rec("closed", lambda: f.closed)
    rec.contents("disk", "t.txt")
    f = await api.open_file(str(d / "t.txt"), encoding="utf-8")
    await rec("name", lambda: f.name)
    await rec("read", f.read)
    await rec("tell", f.tell)
    await rec("read-at-eof", f.read)
    await rec("newlines", lambda: f.newlines)
    await f.aclose()


def _newline_scenario(newline: str | None) -> Scenario:
    async def run(api: Api, d: SyncPath, rec: Recorder) -> None:
        f = await api.open_file(d / "n.txt", "w", encoding="utf-8", newline=newline)
        await rec("write", f.write, TEXT)
        await rec("writelines", f.writelines, ["a\n", "b\r\n", "c\r"])
        await f.aclose()
        rec.contents("disk", "n.txt")
        for reader_newline in NEWLINES:
            f = await api.open_file(d / "n.txt", encoding="utf-8", newline=reader_newline)
            await rec("readline", f.readline)
            await rec("tell", f.tell)
            await rec("read5", f.read, 5)
            await rec("tell", f.tell)
            await rec("readlines", f.readlines)
            await rec("newlines", lambda f=f: f.newlines)
            await rec("seek0", f.seek, 0)
            lines = []
            async for line in f:
                lines.append(line)
            rec.note("iterated", lines)
            await rec("seek0", f.seek, 0)
            cookies = []
            while True:
                cookie = await f.tell()
                line = await f.readline()
                if not line:
                    break
                cookies.append((cookie, line))
            rec.note("cookies", cookies)
            for cookie, _line in reversed(cookies):
                await rec("seek-cookie", f.seek, cookie)
                await rec("readline-again", f.readline)
            await f.aclose()

    run.__name__ = f"newline_{newline!r}"
    return run


for _nl in NEWLINES:
    scenario(_newline_scenario(_nl))


def _encoding_scenario(encoding: str, errors: str | None = None) -> Scenario:
    async def run(api: Api, d: SyncPath, rec: Recorder) -> None:
        text = UNICODE
        f = await api.open_file(d / "e.txt", "w", encoding=encoding, errors=errors)
        await rec("write", f.write, text)
        await rec("tell", f.tell)
        await rec("write2", f.write, "more\n")
        await f.aclose()
        rec.contents("disk", "e.txt")
        f = await api.open_file(d / "e.txt", encoding=encoding, errors=errors)
        for size in (1, 2, 3, 7, 1, 100):
            await rec("tell", f.tell)
            await rec("read", f.read, size)
        await rec("tell", f.tell)
        await rec("seek0", f.seek, 0)
        await rec("readline", f.readline)
        await rec("read3", f.read, 3)
        cookie = await rec("tell", f.tell)
        await rec("read4", f.read, 4)
        await rec("seek-back", f.seek, cookie)
        await rec("read4-again", f.read, 4)
        await rec("readlines", f.readlines)
        await rec("seek-end", f.seek, 0, 2)
        await rec("read-at-end", f.read)
        await f.aclose()
        # append mode: no BOM in the middle of the file
        f = await api.open_file(d / "e.txt", "a", encoding=encoding, errors=errors)
        await rec("append", f.write, "tail\u20ac")
        await rec("tell", f.tell)
        await f.aclose()
        rec.contents("disk-after-append", "e.txt")
        f = await api.open_file(d / "e.txt", "r+", encoding=encoding, errors=errors)
        await rec("r+read", f.read, 4)
        await rec("r+seek0", f.seek, 0)
        await rec("r+write", f.write, "X")
        await rec("r+seek-end", f.seek, 0, 2)
        await rec("r+write-end", f.write, "Y")
        await rec("r+tell", f.tell)
        await f.aclose()
        rec.contents("disk-after-r+", "e.txt")

    run.__name__ = f"encoding_{encoding}_{errors}"
    return run


for _enc in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-7"):
    scenario(_encoding_scenario(_enc, "replace" if _enc == "cp1252" else None))


@scenario
async def decode_errors(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "bad.txt").write_bytes(b"ok line\nbad \xff\xfe byte\n\xc3")
    for errors in (None, "strict", "replace", "ignore", "surrogateescape", "backslashreplace"):
        f = await api.open_file(d / "bad.txt", encoding="utf-8", errors=errors)
        await rec("errors", lambda f=f: f.errors)
        await rec("readline", f.readline)
        await rec("readline", f.readline)
        await rec("read", f.read)
        await f.aclose()
    f = await api.open_file(d / "bad.txt", "w", encoding="ascii")
    await rec("encode-error", f.write, "caf\xe9")
    await f.aclose()
    f = await api.open_file(d / "bad.txt", "w", encoding="ascii", errors="xmlcharrefreplace")
    await rec("encode-replace", f.write, "caf\xe9")
    await f.aclose()
    rec.contents("disk", "bad.txt")


@scenario
async def text_seek_rules(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "s.txt").write_text("0123456789\nabcdef\n", encoding="ascii")
    f = await api.open_file(d / "s.txt", "r+", encoding="ascii")
    await rec("seek-cur-0", f.seek, 0, 1)
    await rec("seek-cur-5", f.seek, 5, 1)
    await rec("seek-end-0", f.seek, 0, 2)
    await rec("seek-end-neg", f.seek, -3, 2)
    await rec("seek-neg", f.seek, -1)
    await rec("seek-whence-3", f.seek, 0, 3)
    await rec("seek-str", f.seek, "a")
    await rec("seek-5", f.seek, 5)
    await rec("read", f.read, 3)
    await rec("tell", f.tell)
    await rec("seek-past-end", f.seek, 100)
    await rec("read-past-end", f.read)
    await rec("tell", f.tell)
    await rec("write-past-end", f.write, "Z")
    await rec("tell", f.tell)
    await rec("read-after-write", f.read)
    await rec("truncate", f.truncate, 4)
    await rec("tell", f.tell)
    await rec("truncate-none", f.truncate)
    await rec("seek0", f.seek, 0)
    await rec("read-all", f.read)
    await rec("read-neg", f.read, -1)
    await rec("read-none", f.read, None)
    await rec("read-str", f.read, "x")
    await rec("write-bytes", f.write, b"bytes")
    await rec("writelines-bytes", f.writelines, [b"bytes"])
    await f.aclose()
    rec.contents("disk", "s.txt")


@scenario
async def text_read_then_write(api: Api, d: SyncPath, rec: Recorder) -> None:
    # CPython writes at the buffer's position after a read-ahead chunk: same here.
    (d / "rw.txt").write_text("abc\n" * 5000, encoding="utf-8")
    f = await api.open_file(d / "rw.txt", "r+", encoding="utf-8")
    await rec("readline", f.readline)
    await rec("write", f.write, "XYZ")
    await rec("tell", f.tell)
    await rec("readline", f.readline)
    await rec("tell", f.tell)
    await f.aclose()
    rec.contents("disk", "rw.txt")


@scenario
async def binary_seek_semantics(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "b.bin").write_bytes(bytes(range(256)) * 64)
    for buffering in (-1, 0, 1000):
        f = await api.open_file(d / "b.bin", "r+b", buffering=buffering)
        await rec("read10", f.read, 10)
        await rec("tell", f.tell)
        await rec("seek-cur", f.seek, 100, 1)
        await rec("seek-cur-back", f.seek, -50, 1)
        await rec("read5", f.read, 5)
        await rec("seek-end", f.seek, -10, 2)
        await rec("read-to-end", f.read)
        await rec("seek-neg", f.seek, -1)
        await rec("seek-cur-neg", f.seek, -100000, 1)
        await rec("seek-whence-9", f.seek, 0, 9)
        await rec("seek-float", f.seek, 1.5)
        await rec("tell", f.tell)
        await rec("seek-beyond", f.seek, 20000)
        await rec("read-beyond", f.read, 10)
        await rec("write-hole", f.write, b"HOLE")
        await rec("tell", f.tell)
        await rec("seek-in-buffer", f.seek, 16000)
        await rec("read4", f.read, 4)
        await rec("seek-data", f.seek, 0, os.SEEK_DATA)
        await rec("seek-0-end", f.seek, 0, 2)
        await rec("flush", f.flush)
        await f.aclose()
        rec.contents(f"disk-{buffering}", "b.bin")
        st = (d / "b.bin").stat()
        rec.note("size", st.st_size)
        (d / "b.bin").write_bytes(bytes(range(256)) * 64)


@scenario
async def binary_read_methods(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "r.bin").write_bytes(b"line one\nline two\n\nno newline at the end" + b"x" * 10000)
    for buffering in (-1, 0, 7, 1):
        f = await rec("open", api.open_file, d / "r.bin", "rb", buffering=buffering)
        await rec("readline", f.readline)
        await rec("read1", f.read1, 4)
        await rec("read1-neg", f.read1, -1)
        await rec("read1-0", f.read1, 0)
        buf = bytearray(6)
        await rec("readinto", f.readinto, buf)
        rec.note("buf", bytes(buf))
        await rec("readinto1", f.readinto1, buf)
        await rec("readinto-bytes", f.readinto, b"immutable")
        await rec("readinto-mv", f.readinto, memoryview(buf)[2:4])
        rec.note("buf", bytes(buf))
        await rec("read-neg2", f.read, -2)
        await rec("read-str", f.read, "x")
        await rec("readlines", f.readlines)
        await rec("seek0", f.seek, 0)
        await rec("readlines-hint", f.readlines, 12)
        await rec("seek0", f.seek, 0)
        await rec("read-rest", f.read)
        await rec("read-eof", f.read, 5)
        await rec("readline-eof", f.readline)
        await rec("write", f.write, b"no")
        await rec("writelines", f.writelines, [b"no"])
        await rec("truncate", f.truncate)
        await rec("tell", f.tell)
        await rec("modes", lambda f=f: (f.mode, f.readable(), f.writable(), f.seekable(), f.isatty()))
        await rec("fileno", lambda f=f: f.fileno() > 2)
        await f.aclose()
        lines = []
        async with await rec("open", api.open_file, d / "r.bin", "rb", buffering=buffering) as f:
            async for line in f:
                lines.append(line)
        rec.note("iterated", lines)


@scenario
async def binary_writes(api: Api, d: SyncPath, rec: Recorder) -> None:
    for buffering in (-1, 0, 16, 100000):
        f = await api.open_file(d / "w.bin", "wb", buffering=buffering)
        await rec("write", f.write, b"hello ")
        await rec("tell", f.tell)
        await rec("write-big", f.write, b"x" * 70000)
        await rec("write-mv", f.write, memoryview(b"abcdef")[1:4])
        await rec("write-bytearray", f.write, bytearray(b"ba"))
        await rec("write-array", f.write, __import__("array").array("i", [1, 2]))
        await rec("write-str", f.write, "text")
        await rec("writelines", f.writelines, [b"a", b"bc", bytearray(b"d")])
        await rec("tell", f.tell)
        await rec("seek-back", f.seek, 2)
        await rec("overwrite", f.write, b"LL")
        await rec("tell", f.tell)
        await rec("read", f.read)
        await rec("truncate", f.truncate, 10)
        await rec("tell", f.tell)
        await rec("truncate-none", f.truncate)
        await rec("truncate-neg", f.truncate, -1)
        await rec("flush", f.flush)
        await f.aclose()
        rec.contents(f"disk-{buffering}", "w.bin")


@scenario
async def append_modes(api: Api, d: SyncPath, rec: Recorder) -> None:
    for mode in ("a", "ab", "a+", "a+b"):
        (d / "a.txt").write_bytes(b"0123456789")
        kw: dict[str, Any] = {} if "b" in mode else {"encoding": "ascii"}
        enc = (lambda s: s.encode()) if "b" in mode else (lambda s: s)
        f = await api.open_file(d / "a.txt", mode, **kw)
        await rec("tell-at-open", f.tell)
        await rec("write", f.write, enc("abc"))
        await rec("tell", f.tell)
        await rec("seek0", f.seek, 0)
        await rec("tell-after-seek", f.tell)
        if "+" in mode:
            await rec("read", f.read, 4)
        await rec("write-after-seek", f.write, enc("XY"))
        await rec("flush", f.flush)
        await rec("tell-after-flush", f.tell)
        if "+" in mode:
            await rec("read-at-end", f.read)
            await rec("seek0", f.seek, 0)
            await rec("read-all", f.read)
        await rec("truncate", f.truncate, 3)
        await rec("write-after-truncate", f.write, enc("!"))
        await rec("tell", f.tell)
        await f.aclose()
        rec.contents(f"disk-{mode}", "a.txt")
    f = await api.open_file(d / "a2.bin", "ab", buffering=0)
    await rec("raw-append", f.write, b"one")
    await rec("raw-tell", f.tell)
    await rec("raw-append", f.write, b"two")
    await rec("raw-tell", f.tell)
    await f.aclose()
    rec.contents("disk-raw", "a2.bin")


@scenario
async def x_mode_and_open_errors(api: Api, d: SyncPath, rec: Recorder) -> None:
    f = await rec("x-new", api.open_file, d / "x.txt", "x")
    await f.aclose()
    await rec("x-exists", api.open_file, d / "x.txt", "x")
    await rec("xb-exists", api.open_file, d / "x.txt", "xb")
    await rec("missing", api.open_file, d / "missing.txt")
    await rec("missing-bytes-name", api.open_file, os.fsencode(d / "missing.txt"))
    await rec("missing-dir", api.open_file, d / "nodir" / "f.txt", "w")
    await rec("dir-r", api.open_file, d)
    await rec("dir-w", api.open_file, d, "w")
    await rec("dir-rb", api.open_file, d, "rb", 0)
    (d / "ro.txt").write_text("ro")
    os.chmod(d / "ro.txt", 0o400)
    if os.geteuid() != 0:
        await rec("perm", api.open_file, d / "ro.txt", "w")
    await rec("notdir", api.open_file, d / "ro.txt" / "x")
    await rec("null", api.open_file, str(d / "a\0b"))
    await rec("float", api.open_file, 3.5)
    await rec("none", api.open_file, None)
    await rec("negative-fd", api.open_file, -1)
    await rec("bad-fd", api.open_file, 99999)
    for mode in ("rw", "rr", "", "b", "t", "rbt", "U", "rU", "r+b+", "q", "wa", "r+", "rb+", "+r", "a+t"):
        f = await rec(f"mode-{mode!r}", api.open_file, d / "x.txt", mode)
        if f is not None:
            await rec("mode-attr", lambda f=f: f.mode)
            await f.aclose()
    await rec("mode-int", api.open_file, d / "x.txt", 5)
    await rec("enc-binary", api.open_file, d / "x.txt", "rb", encoding="utf-8")
    await rec("errors-binary", api.open_file, d / "x.txt", "rb", errors="strict")
    await rec("newline-binary", api.open_file, d / "x.txt", "rb", newline="\n")
    await rec("unbuffered-text", api.open_file, d / "ut.txt", "w", 0)
    rec.note("unbuffered-text-created", (d / "ut.txt").exists())
    await rec("bad-newline", api.open_file, d / "bn.txt", "w", newline="x")
    rec.note("bad-newline-created", (d / "bn.txt").exists())
    await rec("bad-encoding", api.open_file, d / "be.txt", "w", encoding="nonexistent")
    rec.note("bad-encoding-created", (d / "be.txt").exists())
    await rec("binary-codec", api.open_file, d / "x.txt", encoding="base64")
    await rec("enc-type", api.open_file, d / "x.txt", encoding=5)
    await rec("errors-type", api.open_file, d / "x.txt", errors=5)
    await rec("newline-type", api.open_file, d / "x.txt", newline=5)
    await rec("buffering-type", api.open_file, d / "x.txt", buffering="x")
    await rec("closefd-name", api.open_file, d / "x.txt", closefd=False)


@scenario
async def closed_and_wrong_mode(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "c.txt").write_text("content\nline2\n")
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("read", lambda f: f.read()),
        ("read2", lambda f: f.read(2)),
        ("read1", lambda f: f.read1(2)),
        ("readline", lambda f: f.readline()),
        ("readlines", lambda f: f.readlines()),
        ("readinto", lambda f: f.readinto(bytearray(3))),
        ("readinto1", lambda f: f.readinto1(bytearray(3))),
        ("write", lambda f: f.write(b"x" if "b" in f.mode else "x")),
        ("writelines", lambda f: f.writelines([b"x" if "b" in f.mode else "x"])),
        ("seek", lambda f: f.seek(0)),
        ("tell", lambda f: f.tell()),
        ("truncate", lambda f: f.truncate()),
        ("flush", lambda f: f.flush()),
        ("fileno", lambda f: f.fileno() > 0),
        ("isatty", lambda f: f.isatty()),
        ("readable", lambda f: f.readable()),
        ("writable", lambda f: f.writable()),
        ("seekable", lambda f: f.seekable()),
        ("closed", lambda f: f.closed),
        ("aclose-again", lambda f: f.aclose()),
    ]
    for mode, buffering in (("rb", 0), ("wb", 0), ("rb", -1), ("wb", -1), ("r+b", -1), ("r", -1), ("w", -1)):
        for state in ("open", "closed"):
            for label, call in calls:
                name = "c.txt" if "r" in mode else "w.txt"
                f = await api.open_file(d / name, mode, buffering)
                if state == "closed":
                    await f.aclose()
                await rec(f"{mode}-{buffering}-{state}-{label}", call, f)
                await f.aclose()
            (d / "c.txt").write_text("content\nline2\n")


@scenario
async def fd_and_opener(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "fd.txt").write_bytes(b"0123456789abcdef")
    fd = os.open(d / "fd.txt", os.O_RDWR)
    os.lseek(fd, 4, os.SEEK_SET)
    f = await api.open_file(fd, "rb+", closefd=False)
    await rec("name", lambda: f.name == fd)
    await rec("tell", f.tell)
    await rec("read", f.read, 3)
    await rec("write", f.write, b"ZZ")
    await rec("close", f.aclose)
    rec.note("fd-pos-after-close", os.lseek(fd, 0, os.SEEK_CUR))
    rec.note("fd-still-open", os.fstat(fd).st_size)
    f = await api.open_file(fd, "r")
    await rec("text-read", f.read)
    await rec("close", f.aclose)
    await rec("fd-closed", os.fstat, fd)
    dirfd = os.open(d, os.O_RDONLY)
    await rec("dir-fd", api.open_file, dirfd, closefd=False)
    os.close(dirfd)
    seen: list[Any] = []

    def opener(path: str, flags: int) -> int:
        seen.append((path.replace(str(d), "<root>"), flags & ~os.O_CLOEXEC, bool(flags & os.O_CLOEXEC)))
        return os.open(path, flags, 0o600)

    f = await api.open_file(d / "opened.txt", "w", opener=opener)
    await rec("write", f.write, "via opener")
    await f.aclose()
    rec.note("opener-calls", seen)
    rec.contents("disk", "opened.txt")
    await rec("opener-bad", api.open_file, d / "fd.txt", opener=lambda p, fl: "nope")
    await rec("opener-neg", api.open_file, d / "fd.txt", opener=lambda p, fl: -5)
    await rec("opener-raises", api.open_file, d / "missing", opener=os.open)


@scenario
async def line_buffering_and_sizes(api: Api, d: SyncPath, rec: Recorder) -> None:
    f = await api.open_file(d / "lb.txt", "w", buffering=1, encoding="utf-8")
    await rec("line_buffering", lambda: f.line_buffering)
    await rec("write-no-nl", f.write, "partial")
    rec.contents("disk-before-nl", "lb.txt")
    await rec("write-nl", f.write, " line\nnext")
    rec.contents("disk-after-nl", "lb.txt")
    await f.aclose()
    f = await api.open_file(d / "small.txt", "w", buffering=4, encoding="utf-8")
    await rec("write", f.write, "abcdefgh")
    rec.contents("disk-small-buffer", "small.txt")
    await f.aclose()
    big = "".join(f"line {i} " + "x" * (i % 300) + "\n" for i in range(3000))
    (d / "big.txt").write_text(big, encoding="utf-8")
    f = await api.open_file(d / "big.txt", encoding="utf-8")
    count = 0
    async for _line in f:
        count += 1
    rec.note("lines", count)
    await rec("seek0", f.seek, 0)
    await rec("read-big", lambda: f.read(50000))
    await rec("tell", f.tell)
    await rec("readline", f.readline)
    await rec("tell", f.tell)
    await f.aclose()
    long_line = "y" * 100000 + "\nshort\n"
    (d / "long.txt").write_text(long_line)
    f = await api.open_file(d / "long.txt")
    await rec("long-line", f.readline)
    await rec("tell", f.tell)
    await rec("short", f.readline)
    await f.aclose()


@scenario
async def chunk_boundaries(api: Api, d: SyncPath, rec: Recorder) -> None:
    """\r\n pairs and multi-byte characters straddling the 8 KiB text chunks."""
    pieces = []
    size = 0
    i = 0
    while size < 5 * 8192:
        piece = "x" * (8192 - (size % 8192) - 1 - i % 3) + ("\r\n" if i % 2 else "\u20ac\n")
        pieces.append(piece)
        size += len(piece.encode())
        i += 1
    data = "".join(pieces)
    (d / "c.txt").write_bytes(data.encode("utf-8"))
    for newline in (None, "", "\r\n"):
        f = await api.open_file(d / "c.txt", encoding="utf-8", newline=newline)
        cookies = []
        while True:
            cookie = await f.tell()
            line = await f.readline()
            if not line:
                break
            cookies.append(cookie)
            rec.note("line", (len(line), line[-3:]))
        rec.note("cookies", cookies)
        for cookie in cookies[::-1]:
            await rec("seek", f.seek, cookie)
            await rec("read7", f.read, 7)
            await rec("tell", f.tell)
        await rec("seek0", f.seek, 0)
        await rec("read-8191", f.read, 8191)
        await rec("tell", f.tell)
        await rec("read-3", f.read, 3)
        await rec("tell", f.tell)
        await f.aclose()


@scenario
async def path_queries(api: Api, d: SyncPath, rec: Recorder) -> None:
    (d / "file").write_text("data")
    (d / "dir").mkdir()
    os.symlink(d / "file", d / "link")
    os.symlink(d / "nowhere", d / "broken")
    os.symlink("loop2", d / "loop1")
    os.symlink("loop1", d / "loop2")
    os.mkfifo(d / "fifo")
    names = ["file", "dir", "link", "broken", "loop1", "fifo", "missing", "file/sub", "dir/../file"]
    for name in names:
        p = api.Path(d / name)
        await rec(f"{name}-stat", p.stat)
        await rec(f"{name}-stat-nofollow", p.stat, follow_symlinks=False)
        await rec(f"{name}-lstat", p.lstat)
        await rec(f"{name}-exists", p.exists)
        for method in ("is_file", "is_dir", "is_symlink", "is_fifo", "is_socket", "is_block_device",
                       "is_char_device", "is_mount"):  # fmt: skip
            await rec(f"{name}-{method}", getattr(p, method))
    await rec("null-exists", api.Path(str(d) + "/a\0b").exists)
    await rec("null-stat", api.Path(str(d) + "/a\0b").stat)
    await rec("null-stat-nofollow", api.Path(str(d) + "/a\0b").stat, follow_symlinks=False)
    await rec("null-lstat", api.Path(str(d) + "/a\0b").lstat)
    await rec("null-is_symlink", api.Path(str(d) + "/a\0b").is_symlink)
    await rec("null-samefile", api.Path(d / "file").samefile, str(d) + "/a\0b")
    await rec("devnull", api.Path("/dev/null").is_char_device)
    await rec("root-mount", api.Path("/").is_mount)
    await rec("samefile", api.Path(d / "link").samefile, d / "file")
    await rec("samefile-path", api.Path(d / "link").samefile, api.Path(d / "dir"))
    await rec("samefile-missing", api.Path(d / "link").samefile, d / "missing")
    await rec("readlink", api.Path(d / "link").readlink)
    await rec("readlink-notlink", api.Path(d / "file").readlink)
    await rec("resolve", api.Path(d / "link").resolve)
    await rec("resolve-strict", api.Path(d / "broken").resolve, True)
    await rec("absolute", api.Path("relative").absolute)
    await rec("owner", api.Path(d / "file").owner)
    await rec("group", api.Path(d / "file").group)
    await rec("expanduser", api.Path("~").expanduser)
    await rec("home", api.Path.home)
    await rec("cwd", api.Path.cwd)
    await _version_specific_queries(api, d, rec)
    entries = sorted([str(p).replace(str(d), "<root>") async for p in api.Path(d).iterdir()])
    rec.note("iterdir", entries)
    entries = sorted([str(p).replace(str(d), "<root>") async for p in api.Path(d).glob("*i*")])
    rec.note("glob", entries)
    entries = sorted([str(p).replace(str(d), "<root>") async for p in api.Path(d).rglob("*")])
    rec.note("rglob", entries)
    await rec("iterdir-missing", lambda: api.Path(d / "missing").iterdir().__anext__())
    real = os.stat(d / "file")
    ours = await api.Path(d / "file").stat()
    fields = [f for f in dir(real) if f.startswith("st_")]
    rec.note("stat-fields", [(f, getattr(ours, f) == getattr(real, f)) for f in fields])
    rec.note("stat-tuple", tuple(ours) == tuple(real))


async def _version_specific_queries(api: Api, d: SyncPath, rec: Recorder) -> None:
    """The parameters and methods pathlib (and so anyio.Path) gained in 3.12 and 3.13."""
    (d / "tree" / "Sub").mkdir(parents=True)
    (d / "tree" / "Sub" / "x.TXT").write_text("x")
    (d / "tree" / "y.txt").write_text("y")
    os.symlink(d / "tree", d / "treelink")
    os.symlink(d / "dir", d / "dirlink")

    async def listing(label: str, it: Any) -> None:
        rec.note(label, sorted([str(p).replace(str(d), "<root>") async for p in it]))

    if sys.version_info >= (3, 12):
        for name in ("file", "link", "broken", "loop1", "missing"):
            p = api.Path(d / name)
            await rec(f"{name}-exists-nofollow", p.exists, follow_symlinks=False)
        for sensitive in (None, True, False):
            await listing(
                f"glob-case-{sensitive}", api.Path(d / "tree").glob("*/*.txt", case_sensitive=sensitive)
            )
            await listing(f"rglob-case-{sensitive}", api.Path(d).rglob("*.txt", case_sensitive=sensitive))
    if sys.version_info >= (3, 13):
        for name in ("file", "link", "dir", "dirlink", "broken", "missing"):
            p = api.Path(d / name)
            await rec(f"{name}-is_dir-nofollow", p.is_dir, follow_symlinks=False)
            await rec(f"{name}-is_file-nofollow", p.is_file, follow_symlinks=False)
        await rec("owner-nofollow", api.Path(d / "broken").owner, follow_symlinks=False)
        await rec("group-nofollow", api.Path(d / "broken").group, follow_symlinks=False)
        await rec("owner-broken", api.Path(d / "broken").owner)
        for recurse in (False, True):
            await listing(f"glob-recurse-{recurse}", api.Path(d).glob("**/*.txt", recurse_symlinks=recurse))
            await listing(f"rglob-recurse-{recurse}", api.Path(d).rglob("*.TXT", recurse_symlinks=recurse))
        await listing("glob-pathlike", api.Path(d).glob(SyncPath("tree", "*")))
        uri = (d / "file").as_uri()
        await rec("from_uri", api.Path.from_uri, uri)
        await rec("from_uri-class", lambda: type(api.Path.from_uri(uri)) is api.Path)
        await rec("from_uri-stat", lambda: api.Path.from_uri(uri).stat())
        await rec("from_uri-relative", api.Path.from_uri, "file:file")
        await rec("from_uri-http", api.Path.from_uri, "http://example.com/file")
        await rec("from_uri-limiter", lambda: api.Path.from_uri(uri, limiter=5))
        (d / "nl.txt").write_bytes(b"a\r\nb\rc\n")
        for newline in (None, "", "\n", "\r", "\r\n"):
            await rec(f"read_text-newline-{newline!r}", api.Path(d / "nl.txt").read_text, newline=newline)
        await rec("read_text-bad-newline", api.Path(d / "nl.txt").read_text, newline="x")


@scenario
async def path_mutations(api: Api, d: SyncPath, rec: Recorder) -> None:
    P = api.Path
    await rec("mkdir", P(d / "a").mkdir)
    await rec("mkdir-exists", P(d / "a").mkdir)
    await rec("mkdir-exist-ok", P(d / "a").mkdir, exist_ok=True)
    await rec("mkdir-nested-missing", P(d / "x" / "y" / "z").mkdir)
    await rec("mkdir-parents", P(d / "x" / "y" / "z").mkdir, parents=True)
    await rec("mkdir-parents-exists", P(d / "x" / "y").mkdir, parents=True)
    await rec("mkdir-parents-exist-ok", P(d / "x" / "y").mkdir, parents=True, exist_ok=True)
    await rec("mkdir-mode", P(d / "m").mkdir, 0o700)
    rec.note("mode", oct(os.stat(d / "m").st_mode & 0o777))
    (d / "f").write_text("file")
    await rec("mkdir-over-file", P(d / "f").mkdir, exist_ok=True)
    await rec("mkdir-under-file", P(d / "f" / "sub").mkdir, parents=True)
    await rec("rmdir-nonempty", P(d / "x").rmdir)
    await rec("rmdir-file", P(d / "f").rmdir)
    await rec("rmdir", P(d / "x" / "y" / "z").rmdir)
    await rec("rmdir-missing", P(d / "x" / "y" / "z").rmdir)
    await rec("unlink", P(d / "f").unlink)
    await rec("unlink-missing", P(d / "f").unlink)
    await rec("unlink-missing-ok", P(d / "f").unlink, missing_ok=True)
    await rec("unlink-dir", P(d / "a").unlink)
    await rec("unlink-dir-missing-ok", P(d / "a").unlink, missing_ok=True)
    await rec("touch", P(d / "t").touch)
    await rec("touch-again", P(d / "t").touch)
    await rec("touch-excl", P(d / "t").touch, exist_ok=False)
    await rec("touch-mode", P(d / "t2").touch, 0o600)
    rec.note("touch-mode", oct(os.stat(d / "t2").st_mode & 0o777))
    await rec("touch-missing-dir", P(d / "nodir" / "t").touch)
    await rec("write_text", P(d / "w.txt").write_text, "hello\nworld\n")
    await rec("write_text-newline", P(d / "w2.txt").write_text, "a\nb\n", newline="\r\n")
    await rec("write_text-bytes", P(d / "w.txt").write_text, b"bytes")
    await rec("read_text", P(d / "w.txt").read_text)
    await rec("read_text-enc", P(d / "w2.txt").read_text, "latin-1")
    await rec("write_bytes", P(d / "w.bin").write_bytes, b"\x00\x01\x02")
    await rec("write_bytes-mv", P(d / "w.bin").write_bytes, memoryview(b"abc"))
    await rec("write_bytes-str", P(d / "w.bin").write_bytes, "str")
    await rec("read_bytes", P(d / "w.bin").read_bytes)
    await rec("read_bytes-missing", P(d / "nope").read_bytes)
    await rec("read_text-dir", P(d / "a").read_text)
    await rec("rename", P(d / "w.txt").rename, d / "renamed.txt")
    await rec("rename-str", P(d / "renamed.txt").rename, str(d / "renamed2.txt"))
    await rec("rename-path", P(d / "renamed2.txt").rename, P(d / "w.txt"))
    await rec("rename-onto-existing", P(d / "w.txt").rename, d / "w.bin")
    await rec("rename-missing", P(d / "w.txt").rename, d / "x.txt")
    await rec("rename-file-onto-dir", P(d / "w.bin").rename, d / "a")
    await rec("replace", P(d / "w.bin").replace, d / "w2.txt")
    await rec("replace-missing", P(d / "w.bin").replace, d / "w2.txt")
    await rec("symlink_to", P(d / "sl").symlink_to, d / "w2.txt")
    await rec("symlink_to-exists", P(d / "sl").symlink_to, d / "w2.txt")
    await rec("symlink_to-dangling", P(d / "sl2").symlink_to, "nowhere")
    await rec("symlink_to-dir", P(d / "sl3").symlink_to, d / "a", target_is_directory=True)
    await rec("readlink", P(d / "sl2").readlink)
    await rec("hardlink_to", P(d / "hl").hardlink_to, d / "w2.txt")
    await rec("hardlink_to-exists", P(d / "hl").hardlink_to, d / "w2.txt")
    await rec("hardlink_to-missing", P(d / "hl2").hardlink_to, d / "missing")
    await rec("hardlink_to-symlink", P(d / "hl3").hardlink_to, d / "sl")
    await rec("hl3-is-symlink", P(d / "hl3").is_symlink)
    await rec("nlink", lambda: os.stat(d / "w2.txt").st_nlink)
    await rec("chmod", P(d / "w2.txt").chmod, 0o640)
    rec.note("chmod", oct(os.stat(d / "w2.txt").st_mode & 0o777))
    await rec("chmod-missing", P(d / "missing").chmod, 0o640)
    f = await rec("open", P(d / "w2.txt").open)
    await rec("open-attrs", lambda: (f.mode, f.encoding, f.closed))
    await f.aclose()
    f = await P(d / "w2.txt").open("rb")
    await rec("open-read", f.read)
    await f.aclose()
    await rec("open-missing", P(d / "missing").open)
    nul = str(d) + "/a\0b"
    await rec("null-mkdir", P(nul).mkdir)
    await rec("null-mkdir-parents", P(nul + "/c").mkdir, parents=True, exist_ok=True)
    await rec("null-rmdir", P(nul).rmdir)
    await rec("null-unlink", P(nul).unlink)
    await rec("null-unlink-missing-ok", P(nul).unlink, missing_ok=True)
    await rec("null-rename-src", P(nul).rename, d / "w2.txt")
    await rec("null-rename-dst", P(d / "w2.txt").rename, nul)
    await rec("null-replace-dst", P(d / "w2.txt").replace, nul)
    await rec("null-symlink_to-link", P(nul).symlink_to, d / "w2.txt")
    await rec("null-symlink_to-target", P(d / "sl9").symlink_to, nul)
    await rec("null-hardlink_to-link", P(nul).hardlink_to, d / "w2.txt")
    await rec("null-hardlink_to-target", P(d / "hl9").hardlink_to, nul)
    await rec("null-touch", P(nul).touch)
    await rec("null-touch-excl", P(nul).touch, exist_ok=False)
    await rec("null-chmod", P(nul).chmod, 0o600)
    await rec("null-readlink", P(nul).readlink)
    await rec("null-open", P(nul).open)
    await rec("open-bad-mode", P(d / "w2.txt").open, "rw")
    walked = []
    if hasattr(P, "walk"):
        async for root, dirs, files in P(d).walk():
            walked.append((str(root).replace(str(d), "<root>"), sorted(dirs), sorted(files)))
    rec.note("walk", sorted(walked))
    entries = sorted(os.listdir(d))
    rec.note("final-listing", entries)


# ==========================================================================================
# the parity tests
# ==========================================================================================


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_parity(name: str, tmp_path: SyncPath) -> None:
    expected, actual = run_both(SCENARIOS[name], tmp_path / "root")
    assert_same(expected, actual)


@pytest.mark.parametrize(
    "name", ["binary_seek_semantics", "binary_writes", "append_modes", "path_queries", "fd_and_opener"]
)
def test_parity_with_thread_fallbacks(name: str, tmp_path: SyncPath) -> None:
    """STATX and FTRUNCATE masked: the worker-thread fallbacks behave the same."""
    options = anyio_uring.RingOptions(disable=frozenset({"statx", "ftruncate"}), use_environment=False)
    expected, actual = run_both(SCENARIOS[name], tmp_path / "root", options)
    assert_same(expected, actual)


def test_scenarios_can_fail(tmp_path: SyncPath) -> None:
    """The harness notices a difference (guards against comparing two empty logs)."""

    async def differs(api: Api, d: SyncPath, rec: Recorder) -> None:
        await rec("impl", lambda: api.name)

    expected, actual = run_both(differs, tmp_path / "root")
    with pytest.raises(AssertionError):
        assert_same(expected, actual)


def test_every_anyio_method_is_overridden() -> None:
    """No I/O method of anyio's classes may be inherited: it would run in anyio's threads."""
    own_file_methods = {
        "read", "read1", "readline", "readlines", "readinto", "readinto1", "write", "writelines",
        "seek", "tell", "truncate", "flush", "aclose", "__aiter__", "wrapped", "__getattr__",
    }  # fmt: skip
    anyio_file_api = {n for n in vars(anyio.AsyncFile) if not n.startswith("_") or n in own_file_methods}
    from anyio_uring._fs._files import AsyncFile, BufferedFile, RawFile, TextFile

    for cls in (RawFile, BufferedFile, TextFile):
        for name in anyio_file_api - {"limiter"}:
            owner = next(k for k in cls.__mro__ if name in vars(k))
            assert owner is not anyio.AsyncFile, f"{cls.__name__}.{name} is anyio's"
    assert issubclass(AsyncFile, anyio.AsyncFile)
    # Classmethods that do no I/O and return ``cls(...)``: inheriting them is right (3.13's
    # from_uri only parses the URI; path_queries checks that it gives an anyio_uring.Path).
    pure_classmethods = {"from_uri"}
    for name, value in vars(anyio.Path).items():
        if (
            inspect.iscoroutinefunction(value)
            or inspect.isasyncgenfunction(value)
            or name in ("glob", "rglob")
        ):
            assert name in vars(anyio_uring.Path), f"Path.{name} is anyio's"
        if isinstance(value, classmethod) and name not in pure_classmethods:
            assert name in vars(anyio_uring.Path), f"Path.{name} is anyio's"
