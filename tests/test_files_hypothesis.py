"""Random sequences of read/write/seek/tell/truncate/flush on anyio's thread-based files (trio)
and on anyio_uring's ring-based files: every result, every exception and the final file content
must be the same."""

from __future__ import annotations

import sys
from pathlib import Path as SyncPath
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from test_files_parity import Api, Recorder, assert_same, run_both

# CPython < 3.13 has a bug the ring files do not copy: BufferedRandom.read1()/readinto1() (and so
# TextIOWrapper.read(n)/readline(), which use read1) do not flush pending writes first, so the
# read returns stale data and the write lands after it (fixed in 3.13, which flushes).  The
# sequences below insert a flush() between a write and such a read on those versions;
# test_files.py::test_read1_flushes_pending_writes checks our (3.13) behaviour directly.
OLD_READ1 = sys.version_info < (3, 13)


def _needs_flush(dirty: bool, name: str, unsafe: tuple[str, ...]) -> bool:
    return OLD_READ1 and dirty and name in unsafe


# In append mode, CPython's BufferedRandom serves a read that directly follows a write from its
# stale read-ahead (at the old position), while the write went to the end of the file; ours
# reads at the end, where the position is.  (C stdio leaves this undefined: it requires a flush
# or seek between a write and a read.)  The binary sequences flush in between in append mode.

# -- binary ----------------------------------------------------------------------------------

binary_ops = st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 300)),
    st.tuples(st.just("read1"), st.integers(-1, 300)),
    st.tuples(st.just("readinto"), st.integers(0, 300)),
    st.tuples(st.just("readinto1"), st.integers(0, 300)),
    st.tuples(st.just("readline")),
    st.tuples(st.just("write"), st.binary(max_size=300)),
    st.tuples(st.just("seek"), st.integers(-400, 4000), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("tell")),
    st.tuples(st.just("truncate"), st.one_of(st.none(), st.integers(0, 4000))),
    st.tuples(st.just("flush")),
)


async def _apply_binary(f: Any, rec: Recorder, ops: list[tuple[Any, ...]]) -> None:
    dirty = False
    for op in ops:
        name = op[0]
        if _needs_flush(dirty, name, ("read1", "readinto1")) or (
            dirty and "a" in f.mode and name in ("read", "read1", "readinto", "readinto1", "readline")
        ):
            await rec("flush-first", f.flush)
        dirty = (dirty or name == "write") and name not in ("flush", "seek", "truncate")
        if name in ("readinto", "readinto1"):
            buf = bytearray(op[1])
            n = await rec(name, getattr(f, name), buf)
            rec.note("readinto-buf", bytes(buf[: n or 0]))
        else:
            await rec(name, getattr(f, name), *op[1:])


SEQUENCES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SEQUENCES
@given(
    mode=st.sampled_from(["r+b", "w+b", "a+b", "rb", "wb", "ab"]),
    buffering=st.sampled_from([-1, 0, 7, 64]),
    initial=st.binary(max_size=3000),
    ops=st.lists(binary_ops, max_size=40),
)
# Sequences that once found a difference (kept as regression tests).
@example(
    mode="r+b", buffering=-1, initial=b"", ops=[("truncate", 2), ("read", 1), ("seek", -1, 0), ("read", 1)]
)
@example(mode="r+b", buffering=7, initial=b"", ops=[("truncate", 8), ("read", 1), ("readinto1", 14)])
@example(mode="a+b", buffering=-1, initial=b"", ops=[("write", b"\x00"), ("truncate", 0), ("tell",)])
@example(mode="r+b", buffering=7, initial=b"", ops=[("truncate", 15), ("read", 8), ("read1", -1)])
@example(
    mode="r+b", buffering=7, initial=b"", ops=[("truncate", 8), ("read", 1), ("write", b""), ("read1", -1)]
)
@example(mode="a+b", buffering=0, initial=b"\x00", ops=[("seek", 0, 0), ("write", b""), ("tell",)])
def test_binary_sequences(
    tmp_path: SyncPath, mode: str, buffering: int, initial: bytes, ops: list[tuple[Any, ...]]
) -> None:
    async def scenario(api: Api, d: SyncPath, rec: Recorder) -> None:
        (d / "f.bin").write_bytes(initial)
        f = await api.open_file(d / "f.bin", mode, buffering)
        await _apply_binary(f, rec, ops)
        await rec("close", f.aclose)
        rec.contents("final", "f.bin")

    assert_same(*run_both(scenario, tmp_path / "root"))


# -- text ------------------------------------------------------------------------------------

alphabet = st.sampled_from([*list("ab \n\r\t"), "é", "€", "😀", "\r\n"])
texts = st.lists(alphabet, max_size=400).map("".join)

text_ops = st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 200)),
    st.tuples(st.just("readline")),
    st.tuples(st.just("write"), st.lists(alphabet, max_size=100).map("".join)),
    st.tuples(st.just("seek_start")),
    st.tuples(st.just("seek_end")),
    st.tuples(st.just("seek_cur")),
    st.tuples(st.just("seek_told"), st.integers(0, 20)),
    st.tuples(st.just("tell")),
    st.tuples(st.just("truncate")),
    st.tuples(st.just("flush")),
)


async def _apply_text(f: Any, rec: Recorder, ops: list[tuple[Any, ...]]) -> None:
    told: list[int] = []
    dirty = False
    for op in ops:
        name = op[0]
        if name == "seek_told" and not told:
            continue
        if _needs_flush(dirty, name, ("read", "readline")):
            await rec("flush-first", f.flush)
        dirty = (
            (dirty or name == "write") and name not in ("flush", "tell", "truncate") and "seek" not in name
        )
        if name == "tell":
            cookie = await rec("tell", f.tell)
            if cookie is not None:
                told.append(cookie)
        elif name == "seek_start":
            await rec(name, f.seek, 0)
        elif name == "seek_end":
            await rec(name, f.seek, 0, 2)
        elif name == "seek_cur":
            await rec(name, f.seek, 0, 1)
        elif name == "seek_told":
            await rec(name, f.seek, told[op[1] % len(told)])
        else:
            await rec(name, getattr(f, name), *op[1:])


@SEQUENCES
@given(
    mode=st.sampled_from(["r+", "w+", "a+", "r"]),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16", "utf-8-sig"]),
    newline=st.sampled_from([None, "", "\n", "\r", "\r\n"]),
    initial=texts,
    ops=st.lists(text_ops, max_size=30),
)
@example(mode="r+", encoding="utf-8", newline=None, initial="\r", ops=[("read", 2), ("seek_cur",)])
@example(
    mode="r+", encoding="utf-8", newline=None, initial="a", ops=[("write", "a"), ("tell",), ("readline",)]
)
def test_text_sequences(
    tmp_path: SyncPath,
    mode: str,
    encoding: str,
    newline: str | None,
    initial: str,
    ops: list[tuple[Any, ...]],
) -> None:
    async def scenario(api: Api, d: SyncPath, rec: Recorder) -> None:
        (d / "f.txt").write_bytes(initial.encode(encoding, "replace"))
        f = await api.open_file(d / "f.txt", mode, encoding=encoding, errors="replace", newline=newline)
        await _apply_text(f, rec, ops)
        await rec("close", f.aclose)
        rec.contents("final", "f.txt")

    assert_same(*run_both(scenario, tmp_path / "root"))
