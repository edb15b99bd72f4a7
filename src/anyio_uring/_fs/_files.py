"""Async files on the ring: ``open_file()`` and the file objects it returns.

Theory of operation
-------------------
``open_file()`` has the signature and the behaviour of :func:`anyio.open_file` (that is, of the
builtin :func:`open`), but no worker thread touches the file: every system call on it is an
io_uring operation awaited through :func:`~anyio_uring.cancel.wait_operation`:

=====================  ==========================================================================
open                   ``OPENAT`` (``O_CLOEXEC``), then ``STATX`` on the new fd (directory check,
                       regular file or stream, ``st_blksize`` for the buffer size, the size);
                       a FIFO opened for reading then waits for a writer, as ``open(2)`` does
                       (a second ``OPENAT`` in io-wq, see ``_fifo_wait_for_writer``)
read / readinto        ``READ`` at the tracked offset (``-1``, the kernel's position, for pipes,
                       sockets and character devices)
write                  ``WRITE`` at the tracked offset (``-1`` in append mode: ``O_APPEND``)
seek(…, SEEK_END)      ``STATX`` for the size; ``SEEK_SET``/``SEEK_CUR`` touch nothing (offsets
                       outside ``off_t`` are rejected as by CPython; a position past the known
                       end is checked with ``lseek``, which enforces the kernel's limit)
truncate               ``FTRUNCATE`` (a worker thread when the kernel lacks it or it is masked)
fsync (an extension)   ``FSYNC``
close                  ``CLOSE``
=====================  ==========================================================================

Before a ``STATX``, a read-only ``OPENAT``, a ``READ`` of a regular file or a ``CLOSE``, the
kernel is asked directly, without blocking, whether it can do the call at once (a cached
lookup, ``RWF_NOWAIT``, a file system whose ``->getattr`` and ``close`` never wait): see
``_inline.py``.  Where it says "would block", the ring operation above runs, exactly as without
the attempt.  (``ANYIO_URING_DISABLE=inline_fs`` turns the attempts off.)

What does not fit the ring: an ``opener`` (a user callable, run in a worker thread),
``SEEK_DATA``/``SEEK_HOLE`` (``lseek`` in a worker thread), ``isatty()`` (one ``ioctl`` at open,
only for character devices), and ``lseek`` on an *adopted* fd (``open_file(fd)``): there is no
``LSEEK`` opcode, so its position is read once when it is adopted and written back when it is
released with ``closefd=False`` (``lseek`` never blocks).  ``tell()``/``seek()`` on pipes and
character devices also use ``lseek``, exactly like :class:`io.FileIO`.

Layers, as in :mod:`io`: :class:`RawFile` (``buffering=0``, like ``io.FileIO``),
:class:`BufferedFile` (like ``io.BufferedReader``/``Writer``/``Random``) and :class:`TextFile`
(like ``io.TextIOWrapper``: incremental codecs, ``io.IncrementalNewlineDecoder``, the same
newline rules and the same opaque ``tell()`` cookies as CPython's C implementation).  All three
are :class:`AsyncFile` objects (and so :class:`anyio.AsyncFile` objects).  Python's own ``io``
classes cannot be reused: they call their raw layer synchronously.  Read-ahead and write
buffering live in Python, so many small reads or writes cost one ring operation per buffer.

Positions and cancellation
--------------------------
The file position is a Python integer (``RawFile._pos``) and reads and writes are positional.
This module contains no cancellation logic: a ring operation is awaited with ``wait_operation``,
which either returns the operation's real result (also when the task was cancelled meanwhile:
the cancellation then lands at the next checkpoint) or raises the cancellation on
``-ECANCELED``, after the final CQE, when the kernel no longer touches the buffer.  The layers
keep that promise intact by updating their state *only after* an operation's result is in hand:

* a raw read advances ``_pos`` by exactly the bytes it returns; an interrupted multi-operation
  ``readall()``/``readline()`` keeps what it already read in ``RawFile._stash``, which the next
  read returns first (the logical position is ``_pos - len(_stash)``);
* a buffered read appends what each operation returned to the read-ahead buffer and takes the
  caller's bytes out of it only when the whole read succeeded: a cancelled ``read(n)`` leaves
  every byte read so far in the buffer and ``tell()`` unchanged;
* a text read decodes each chunk into its pending characters (extending the ``tell()`` snapshot)
  and hands characters out only at the end;
* a write advances the position by the bytes the kernel reports written; a buffered write first
  flushes what is pending (if that is cancelled the new data was not accepted), then either
  buffers the data or writes it directly (a cancelled direct write leaves ``tell()`` after the
  bytes actually written); a text write is accepted into the buffers before any I/O, so a
  cancellation of the flush it triggers loses nothing (the next flush or close writes it);
* ``aclose()`` is shielded (as anyio's is): the fd is always closed.  An unbuffered file's
  ``aclose()`` does not wait behind an operation another task is parked on (a FIFO read whose
  writer is silent): it ends that operation through the ring's cancel and closes the fd after
  the operation's final CQE.  (Buffered files wait, as CPython's buffered ``close()`` does.)

Read buffers are sized from what can be read: a regular file's known size bounds a large
``read(n)`` (a file that grew is read in growing chunks), and the large buffers of reads of
unknown length (streams, block devices) are lazily committed anonymous mappings -- so
``read(1 << 30)`` of a 100-byte file or pipe does not allocate a gigabyte.

Operations that are served from memory (a read from the read-ahead buffer, a buffered write, a
seek) are cancel points but not schedule points; everything that reaches the ring is both.  Each
file has a lock (shared by its layers): concurrent operations on one file from several tasks
run one after the other, as they do with the thread-based implementation (C ``io`` locks too).
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import io
import locale
import mmap
import operator
import os
import select
import stat as _stat
import struct
import sys
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, AnyStr, Final, overload

from anyio import AsyncFile as _AnyioAsyncFile
from anyio import CapacityLimiter as _AnyioCapacityLimiter
from anyio import open_file as _anyio_open_file

from .._core._cancel import CancelScope, end_and_reap, end_operation, wait_operation, wait_owned_fd
from .._core._context import GLOBAL
from .._core._run import cancel_pending, checkpoint_if_cancelled
from .._core._sync import ParkingLot
from .._core._threads import to_thread_run_sync
from .._core._traps import cancel_shielded_checkpoint
from .._native import ffi, lib
from .._ring import OwnedFd
from ._inline import Inline, inline_for, nowait_read

if TYPE_CHECKING:
    from _typeshed import OpenBinaryMode, OpenTextMode, ReadableBuffer, WriteableBuffer

    from .._ring import Operation, Ring

__all__ = ["AsyncFile", "BufferedFile", "RawFile", "TextFile", "open_file"]

AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200
STATX_BASIC_STATS: Final = 0x7FF
IOSQE_ASYNC: Final = 16
DEFAULT_BUFFER_SIZE: Final = io.DEFAULT_BUFFER_SIZE
_TEXT_CHUNK_SIZE: Final = 8192  # CPython's C TextIOWrapper chunk size
_MAX_RW: Final = 0x7FFFF000
_STREAM_READ: Final = 64 * 1024
#: Read buffers at least this large whose filling is speculative (the read of a stream or of a
#: block device, whose length is unknown) are anonymous mappings: their pages cost memory only
#: once the kernel writes them, as CPython's malloc()ed, never zeroed read buffers do.  Smaller
#: ones are zeroed bytearrays.
_LAZY_MIN: Final = 256 * 1024
#: The range of ``off_t``: offsets outside it are rejected before any I/O, as CPython does.
_OFF_MIN: Final = -(1 << 63)
_OFF_MAX: Final = (1 << 63) - 1
_CLOSED_IO: Final = "I/O operation on closed file"
_EAGAIN: Final = -errno.EAGAIN
#: Open flags for which there is no inline attempt (RESOLVE_CACHED refuses them; io_uring
#: always runs them in io-wq).
_RING_ONLY_OPEN: Final = os.O_CREAT | os.O_TRUNC | getattr(os, "O_TMPFILE", 0)
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)


# ------------------------------------------------------------------------------------------
# errors, stat results
# ------------------------------------------------------------------------------------------


def os_error(res: int, filename: object = None, filename2: object = None) -> OSError:
    """The ``OSError`` subclass for ``-errno`` ``res``, shaped like the ``os`` module's."""
    err = -res
    if filename is None:
        return OSError(err, os.strerror(err))
    if filename2 is None:
        return OSError(err, os.strerror(err), filename)
    return OSError(err, os.strerror(err), filename, None, filename2)


def fspath(path: Any) -> str | bytes:
    """``os.fspath`` plus the ``os`` module's check for NUL bytes."""
    result: str | bytes = os.fspath(path)
    if (b"\0" if isinstance(result, bytes) else "\0") in result:  # type: ignore[operator]
        raise ValueError("embedded null byte")
    return result


def _unsupported(message: str) -> io.UnsupportedOperation:
    return io.UnsupportedOperation(message)


def _check_off_t(value: int) -> None:
    """``FileIO``'s conversion of an offset to ``off_t``: ``OverflowError`` outside its range."""
    if not _OFF_MIN <= value <= _OFF_MAX:
        raise OverflowError("Python int too large to convert to C long")


def _alloc(n: int, lazy: bool) -> Any:
    """A zeroed buffer of ``n`` bytes for a READ: a bytearray, or, when ``lazy`` and large, an
    anonymous mapping (see ``_LAZY_MIN``).  Hand the result to :func:`_detach`."""
    if lazy and n >= _LAZY_MIN:
        try:
            return mmap.mmap(-1, n)
        except OSError:
            raise MemoryError from None
    return bytearray(n)


def _detach(buf: Any, n: int) -> bytes:
    """The first ``n`` bytes of a buffer from :func:`_alloc` (whose READ is over), as bytes."""
    if type(buf) is bytearray:
        if n < len(buf):
            del buf[n:]
        return bytes(buf)
    data: bytes = buf[:n]
    return data


# struct statx (include/uapi/linux/stat.h): the fields os.stat() reports.
_STATX: Final = struct.Struct("=IIQIIIH2xQQQQ" + "qI4x" * 4 + "IIII")
#: What open() needs of it: st_blksize, st_mode, st_size.
_STATX_OPEN: Final = struct.Struct("=4xI20xH10xQ")
_STAT_FIELDS_OK: Final = os.stat_result.n_fields == 19 and os.stat_result.n_sequence_fields == 10


def stat_from_statx(buf: Any) -> os.stat_result:
    """Decode a 256-byte ``struct statx`` (cdata) into the ``os.stat_result`` ``os.stat()``
    returns."""
    return stat_from_view(ffi.buffer(buf))


def stat_from_view(view: Any) -> os.stat_result:
    """:func:`stat_from_statx` of a ``struct statx`` given as a buffer."""
    (
        _mask, blksize, _attrs, nlink, uid, gid, mode, ino, size, blocks, _amask,
        a_s, a_ns, _b_s, _b_ns, c_s, c_ns, m_s, m_ns, rdev_ma, rdev_mi, dev_ma, dev_mi,
    ) = _STATX.unpack_from(view)  # fmt: skip
    return os.stat_result(
        (
            mode,
            ino,
            os.makedev(dev_ma, dev_mi),
            nlink,
            uid,
            gid,
            size,
            a_s,
            m_s,
            c_s,
            a_s + a_ns * 1e-9,
            m_s + m_ns * 1e-9,
            c_s + c_ns * 1e-9,
            a_s * 1_000_000_000 + a_ns,
            m_s * 1_000_000_000 + m_ns,
            c_s * 1_000_000_000 + c_ns,
            blksize,
            blocks,
            os.makedev(rdev_ma, rdev_mi),
        )
    )


_CAPABILITIES: weakref.WeakKeyDictionary[Ring, tuple[bool, bool, Inline | None]] = weakref.WeakKeyDictionary()


#: The last ring asked about and its entry: most programs have one loop, and a weak
#: dictionary's lookup costs more than the rest of a stat.  (A tuple: replaced atomically.)
_LAST_CAPABILITIES: tuple[Callable[[], Ring | None], tuple[bool, bool, Inline | None]] = (
    lambda: None,
    (False, False, None),
)


def capabilities(ring: Ring) -> tuple[bool, bool, Inline | None]:
    """(STATX on the ring, FTRUNCATE on the ring, the ring's inline attempts or ``None``; see
    ``_inline.py``) -- cached per ring."""
    global _LAST_CAPABILITIES
    ref, entry = _LAST_CAPABILITIES
    if ref() is ring:
        return entry
    found = _CAPABILITIES.get(ring)
    if found is None:
        statx = use_statx(ring)
        found = _CAPABILITIES[ring] = (statx, ring.support.ftruncate, inline_for(ring, statx))
    _LAST_CAPABILITIES = (weakref.ref(ring), found)
    return found


def use_statx(ring: Ring) -> bool:
    """Whether STATX runs on the ring (not masked, and ``os.stat_result`` has Linux's fields)."""
    return _STAT_FIELDS_OK and ring.support.statx


async def run_sync_in_thread(
    fn: Callable[..., Any], *args: Any, limiter: _AnyioCapacityLimiter | None = None, abandon: bool = False
) -> Any:
    """The fallback path: ``fn(*args)`` in a worker thread (anyio's, when given a limiter)."""
    if limiter is None:
        return await to_thread_run_sync(fn, *args, abandon_on_cancel=abandon)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon, limiter=limiter)


async def ring_stat(
    ring: Ring, dirfd: int, path: str | bytes, flags: int, filename: object, *, follow: bool = True
) -> os.stat_result:
    """``STATX`` -> ``os.stat_result`` (``os.stat``/``os.fstat`` in a thread without STATX)."""
    if use_statx(ring):
        op = ring.statx(dirfd, path, flags, STATX_BASIC_STATS)
        res = await wait_operation(op)
        if res < 0:
            raise os_error(res, filename)
        return stat_from_statx(op.output)
    if flags & AT_EMPTY_PATH:
        result: os.stat_result = await run_sync_in_thread(os.fstat, dirfd)
    else:
        result = await run_sync_in_thread(_stat_follow, path, follow)
    return result


def _stat_follow(path: str | bytes, follow: bool) -> os.stat_result:
    return os.stat(path, follow_symlinks=follow)


# ------------------------------------------------------------------------------------------
# the per-file lock
# ------------------------------------------------------------------------------------------


class _FileLock:
    """Serializes the operations on one file (its layers share it).  Free -> taken without a
    schedule point; taken -> wait in FIFO order; release hands the lock to the next waiter."""

    __slots__ = ("_busy", "_lot")

    def __init__(self) -> None:
        self._busy = False
        self._lot: ParkingLot | None = None  # created on the first contention

    async def __aenter__(self) -> None:
        if self._busy:
            await self.wait()
        else:
            self._busy = True

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    async def wait(self) -> None:
        """The slow half of acquiring (hot paths test ``_busy`` inline): park until the
        holder hands the lock over."""
        lot = self._lot
        if lot is None:
            lot = self._lot = ParkingLot()
        await lot.park()

    def release(self) -> None:
        lot = self._lot
        if lot:
            lot.unpark()
        else:
            self._busy = False


# ------------------------------------------------------------------------------------------
# the public base class
# ------------------------------------------------------------------------------------------


class AsyncFile(_AnyioAsyncFile[AnyStr]):
    """A file whose I/O runs on the ring, with :class:`anyio.AsyncFile`'s interface.

    Unlike anyio's class it wraps no blocking file object: the object *is* the file.
    :attr:`wrapped` therefore returns the file itself (its ``name``, ``mode``, ``closed``,
    ``fileno()`` ... work as on a blocking file object; its I/O methods are coroutines).  The
    layers below are reachable as ``.buffer`` (text) and ``.raw`` (buffered), as in :mod:`io`.
    """

    _limiter: _AnyioCapacityLimiter | None
    _lock: _FileLock

    def __init__(self) -> None:  # the layers set their own state; anyio's __init__ wants an fp
        raise TypeError("use anyio_uring.open_file() to open a file")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def wrapped(self) -> Any:
        """The file itself: there is no blocking file object underneath (see the class doc)."""
        return self

    @property
    def limiter(self) -> _AnyioCapacityLimiter | None:
        """The capacity limiter for this file's worker-thread fallbacks (``None``: the default)."""
        return self._limiter

    async def __aiter__(self) -> AsyncIterator[AnyStr]:
        while True:
            line = await self.readline()
            if line:
                yield line
            else:
                break

    async def aclose(self) -> None:
        """Flush and close the file; shielded from cancellation (as in anyio)."""
        with CancelScope(shield=True):
            lock = self._lock
            if lock._busy:
                await lock.wait()
            else:
                lock._busy = True
            try:
                await self._close_u()
            finally:
                lock.release()

    async def _close_u(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _no_attribute(self, name: str) -> AttributeError:
        return AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _index(value: Any) -> int:
    """``size`` arguments: an int (or ``__index__``), ``None`` meaning -1."""
    if value is None:
        return -1
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"argument should be integer or None, not '{type(value).__name__}'") from None


def _int_arg(value: Any) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer") from None


def _readable_view(b: Any) -> memoryview:
    """A byte view of a bytes-like object (``TypeError`` like ``FileIO.write``)."""
    try:
        view = memoryview(b)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(b).__name__}'") from None
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


#: How ``io.FileIO.readinto`` names its argument in its ``TypeError`` (Argument Clinic says
#: "argument 1" since 3.12; the buffered classes still say "argument").
_FILEIO_READINTO_ARGUMENT: Final = "argument 1" if sys.version_info >= (3, 12) else "argument"


def _writable_view(b: Any, what: str = "readinto", argument: str = "argument") -> memoryview:
    try:
        view = memoryview(b)
    except TypeError:
        view = None
    if view is None or view.readonly:
        raise TypeError(f"{what}() {argument} must be read-write bytes-like object, not {type(b).__name__}")
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


# ------------------------------------------------------------------------------------------
# raw layer: io.FileIO on the ring
# ------------------------------------------------------------------------------------------


class RawFile(AsyncFile[bytes]):
    """An unbuffered binary file (``buffering=0``), like :class:`io.FileIO`.

    One ``read(n)``/``write(b)`` is one ring operation and may be short.  ``readall()`` reads
    until EOF, sized from the file's known size (a short read of a regular file at or beyond
    its known size ends it).
    """

    def __init__(
        self,
        ring: Ring,
        fd: int,
        name: object,
        *,
        readable: bool,
        writable: bool,
        appending: bool,
        created: bool,
        closefd: bool,
        st: tuple[int, int, int],
        pos: int,
        adopted: bool,
        limiter: _AnyioCapacityLimiter | None,
        local: bool = False,
        mount: int = 0,
        direct: bool = False,
    ) -> None:
        self._ring = ring
        self._fd = fd
        self.name = name
        self._readable = readable
        self._writable = writable
        self._appending = appending
        self._created = created
        self._closefd = closefd
        self._closed = False
        #: Set by ``aclose()`` while another task holds the lock: no new operation may start.
        self._closing = False
        #: The last READ/WRITE submitted (a task is parked on it unless it is done): what
        #: ``aclose()`` ends so as not to wait behind it.
        self._op: Operation | None = None
        self._adopted = adopted
        mode, size, blksize = st
        #: Regular files and block devices get positional I/O at ``_pos``; streams use -1.
        self._positional = _stat.S_ISREG(mode) or _stat.S_ISBLK(mode)
        #: Regular files: STATX's size is a (good) hint for how much a read can return.
        self._regular = _stat.S_ISREG(mode)
        #: The kernel-side position of the next read/write; -1 = unknown (after an append).
        self._pos = pos
        #: The size as last seen (open, our writes, STATX): a hint for readall and EOF.
        self._size = size
        self._blksize = blksize
        self._isatty = _stat.S_ISCHR(mode) and os.isatty(fd)
        #: Bytes read by an interrupted multi-operation read, handed out first next time.
        self._stash = bytearray()
        self._lock = _FileLock()
        self._limiter = limiter
        self._statx, self._ftruncate, inline = capabilities(ring)
        #: The ring's inline attempts, for a file whose STATX they may answer (its mount is
        #: local: see ``_inline.py``), else None.
        self._inline_stat = inline if local else None
        #: The unique id of its mount, if local (0: unknown).
        self._mount = mount
        #: The close is a system call: a regular file on a local mount (no ->flush).
        self._inline_close = inline is not None and local and self._regular
        #: Reads try RWF_NOWAIT inline: such a file, not O_DIRECT, on a mount whose files take
        #: RWF_NOWAIT (tmpfs' do not).
        self._inline = (
            inline is not None and self._inline_close and not direct and mount not in inline.no_nowait
        )
        #: Extra SQE flags for READ/WRITE operations (tests set IOSQE_ASYNC to force io-wq;
        #: reads then skip the inline attempt too).
        self._read_sqe_flags = 0
        self._write_sqe_flags = 0

    def __repr__(self) -> str:
        if self._closed:
            return "<anyio_uring.RawFile [closed]>"
        return f"<anyio_uring.RawFile name={self.name!r} mode={self.mode!r} closefd={self._closefd}>"

    # -- attributes ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self._created:
            return "xb+" if self._readable else "xb"
        if self._appending:
            return "ab+" if self._readable else "ab"
        if self._readable:
            return "rb+" if self._writable else "rb"
        return "wb"

    @property
    def closefd(self) -> bool:
        return self._closefd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_closed(self, message: str = _CLOSED_IO) -> None:
        if self._closed or self._closing:
            raise ValueError(message)

    def fileno(self) -> int:
        self._check_closed()
        return self._fd

    def isatty(self) -> bool:
        self._check_closed()
        return self._isatty

    def readable(self) -> bool:
        self._check_closed()
        return self._readable

    def writable(self) -> bool:
        self._check_closed()
        return self._writable

    def seekable(self) -> bool:
        self._check_closed()
        if self._positional:
            return True
        try:
            os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:
            return False
        return True

    def _check_readable(self) -> None:
        if not self._readable:
            raise _unsupported("File not open for reading")

    def _check_writable(self) -> None:
        if not self._writable:
            raise _unsupported("File not open for writing")

    # -- the ring primitives (every byte of I/O goes through these two) -----------------------

    async def _pread(self, buf: Any) -> int:
        """One READ into ``buf`` at the position; advances it by what the kernel returned."""
        if self._closing:
            raise ValueError(_CLOSED_IO)  # aclose() is waiting for the lock: start nothing new
        if self._positional:
            if self._pos < 0:
                await self._sync_pos()
            if self._inline and not self._read_sqe_flags:
                res = nowait_read(self._fd, buf, self._pos)
                if res >= 0:
                    self._pos += res
                    await cancel_shielded_checkpoint()
                    return res
                if res == -2:
                    self._no_nowait()
            op = self._op = self._ring.read(self._fd, buf, self._pos, self._read_sqe_flags)
            res = await wait_operation(op)
            if res < 0:
                raise self._op_error(res)
            self._pos += res
            return res
        op = self._op = self._ring.read(self._fd, buf, -1, self._read_sqe_flags)
        res = await wait_operation(op)
        if res < 0:
            raise self._op_error(res)
        return res

    async def _read_here(self, buf: Any) -> int:
        """One read into ``buf`` at the (known) position of a positional file, inline or a READ;
        the result (``-errno`` on failure), the position not moved -- the buffered layer's hot
        paths."""
        if self._inline and not self._read_sqe_flags:
            res = nowait_read(self._fd, buf, self._pos)
            if res >= 0:
                await cancel_shielded_checkpoint()
                return res
            if res == -2:
                self._no_nowait()
        return await wait_operation(self._ring.read(self._fd, buf, self._pos, self._read_sqe_flags))

    def _no_nowait(self) -> None:
        """The file refused RWF_NOWAIT (EOPNOTSUPP): it, and from now on its mount's other files,
        read on the ring."""
        self._inline = False
        if self._inline_stat is not None and self._mount:
            self._inline_stat.no_nowait.add(self._mount)

    async def _pwrite(self, data: Any) -> int:
        """One WRITE of ``data`` at the position (at the end in append mode)."""
        if self._closing:
            raise ValueError(_CLOSED_IO)
        if self._appending or not self._positional:
            op = self._op = self._ring.write(self._fd, data, -1, self._write_sqe_flags)
            res = await wait_operation(op)
            if res < 0:
                raise self._op_error(res)
            if self._positional and res > 0:
                self._pos = -1  # O_APPEND: the kernel put it at the end; STATX when needed
            return res
        if self._pos < 0:
            await self._sync_pos()
        op = self._op = self._ring.write(self._fd, data, self._pos, self._write_sqe_flags)
        res = await wait_operation(op)
        if res < 0:
            raise self._op_error(res)
        self._pos += res
        self._size = max(self._size, self._pos)
        return res

    def _op_error(self, res: int) -> Exception:
        """The exception for a failed READ/WRITE: the closed-file error if ``aclose()`` ended it."""
        if self._closing:
            return ValueError(_CLOSED_IO)
        return os_error(res)

    def _request(self, size: int, have: int = 0) -> int:
        """How many bytes one READ for up to ``size`` bytes asks for (the position is known).

        ``size`` itself, except that a large request on a regular file is bounded by the size
        known from STATX: the rest past the position (+1, to see the end in the same READ), but
        at least ``have`` (what this read already collected) and 64 KiB, so that a file that
        grew meanwhile is read in growing chunks.  (Other files -- streams, block devices, whose
        STATX size is 0 -- have no known size: their large buffers are lazy, see ``_LAZY_MIN``.)"""
        if size > _STREAM_READ and self._regular:
            return min(size, max(self._size - self._pos + 1, have, _STREAM_READ))
        return size

    async def _fstat(self) -> os.stat_result:
        inline = self._inline_stat
        if inline is not None and inline.fstat(self._fd):
            st = stat_from_view(inline.statx)
            await cancel_shielded_checkpoint()
            return st
        if self._statx:
            return await ring_stat(self._ring, self._fd, b"", AT_EMPTY_PATH, None)
        result: os.stat_result = await run_sync_in_thread(os.fstat, self._fd, limiter=self._limiter)
        return result

    async def _sync_pos(self) -> None:
        """After an O_APPEND write the position is the end of the file: ask for the size."""
        st = await self._fstat()
        self._size = st.st_size
        if self._pos < 0:
            self._pos = st.st_size

    def _at_eof(self, requested: int, got: int) -> bool:
        """Whether a read that returned ``got`` of ``requested`` bytes has hit the end."""
        if got == 0:
            return True
        if got < requested and self._positional:
            return self._pos >= self._size  # a short read of a regular file: EOF
        return False

    # -- positions -------------------------------------------------------------------------

    async def _logical_pos(self) -> int:
        if not self._positional:
            return os.lseek(self._fd, 0, os.SEEK_CUR) - len(self._stash)
        if self._pos < 0:
            await self._sync_pos()
        return self._pos - len(self._stash)

    def _drop_stash(self) -> None:
        """Before a write/seek: forget stashed bytes, moving the position back over them."""
        if self._stash:
            if self._positional and self._pos >= 0:
                self._pos -= len(self._stash)
            self._stash = bytearray()

    async def _seek_u(self, pos: int, whence: int) -> int:
        if not self._positional:
            self._stash = bytearray()
            return os.lseek(self._fd, pos, whence)
        if whence == os.SEEK_SET:
            new = pos
        elif whence == os.SEEK_CUR:
            new = await self._logical_pos() + pos
        elif whence == os.SEEK_END:
            st = await self._fstat()
            self._size = st.st_size
            new = st.st_size + pos
        elif whence in (getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)):
            new = await run_sync_in_thread(os.lseek, self._fd, pos, whence, limiter=self._limiter)
        else:
            raise os_error(-errno.EINVAL)
        if new < 0 or new > _OFF_MAX:
            raise os_error(-errno.EINVAL)  # what lseek answers (an off_t cannot hold it)
        if new > self._size:
            # Past the known end: let lseek check the kernel's limit (the file system's largest
            # file, a block device's size) -- it raises EINVAL exactly when CPython's would.
            # (It moves the fd's own position, which positional I/O never uses.)
            os.lseek(self._fd, new, os.SEEK_SET)
        self._stash = bytearray()
        self._pos = new
        return new

    async def _truncate_u(self, size: int | None) -> int:
        if size is not None:
            _check_off_t(size)
        if self._positional and self._pos < 0:
            await self._sync_pos()  # the position after an append is the size *before* this
        if size is None:
            size = await self._logical_pos()
        if size < 0:
            raise os_error(-errno.EINVAL)
        if self._ftruncate:
            res = await wait_operation(self._ring.ftruncate(self._fd, size))
            if res < 0:
                raise os_error(res)
        else:
            await run_sync_in_thread(os.ftruncate, self._fd, size, limiter=self._limiter)
        self._size = size
        return size

    async def _fsync_u(self, datasync: bool) -> None:
        res = await wait_operation(self._ring.fsync(self._fd, datasync=datasync))
        if res < 0:
            raise os_error(res)

    async def _close_u(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stash = bytearray()
        if self._closefd:
            if self._inline_close:
                await _close_inline(self._fd)
                return
            res = await wait_operation(self._ring.close_fd(self._fd))
            if res < 0:
                raise os_error(res)
        elif self._adopted and self._positional and self._pos >= 0:
            os.lseek(self._fd, self._pos, os.SEEK_SET)  # hand the position back to the fd

    async def aclose(self) -> None:
        """Close the file; shielded from cancellation (as in anyio).

        A file whose close is inline (see ``_inline.py``) and that nobody else is using closes at
        once: nothing here could be cancelled, so there is no scope to enter.  Otherwise, it
        does not queue behind an operation another task is parked on (a read of a FIFO whose
        writer is silent, a write to a full pipe): that operation is ended (its task gets the
        ``ValueError`` of a closed file -- or, if the operation completed first, its result),
        operations waiting for the file's lock get that error too, and the fd is closed after
        the parked operation's final CQE (the parked task never sees the number reused)."""
        if self._inline_close and self._closefd and not self._closed and not self._lock._busy:
            self._closed = True
            self._stash = bytearray()
            await _close_inline(self._fd)
            return
        with CancelScope(shield=True):
            lock = self._lock
            if lock._busy:
                if not self._closed:
                    self._closing = True  # nothing new starts (see _pread/_pwrite)
                    if self._op is not None:
                        end_operation(self._op)
                await lock.wait()  # handed over once the holder has its final CQE
            else:
                lock._busy = True
            try:
                await self._close_u()
            finally:
                lock.release()

    def _close_sync(self) -> None:
        """Finalizer path (the file was never closed): plain system calls."""
        if self._closed:
            return
        self._closed = True
        if self._closefd:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or not self._closefd:
            return
        warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
        self._close_sync()

    # -- reading -----------------------------------------------------------------------------

    def _take_stash(self, n: int) -> bytes:
        stash = self._stash
        if n < 0 or n >= len(stash):
            data = bytes(stash)
            self._stash = bytearray()
            return data
        data = bytes(stash[:n])
        del stash[:n]
        return data

    async def _read_u(self, size: int) -> bytes:
        if size < 0:
            return await self._readall_u()
        if self._stash:
            return self._take_stash(size)
        if size <= _STREAM_READ:  # the common case
            buf = bytearray(size)
            n = await self._pread(buf)
            if n < size:
                del buf[n:]
            return bytes(buf)
        size = min(size, _MAX_RW)
        if self._regular:
            return await self._read_upto(size)  # a large read: sized from the file's size
        # One READ (a stream's large buffer is lazy: it costs what the kernel writes into it).
        buf = _alloc(size, True)
        return _detach(buf, await self._pread(buf))

    async def _readall_u(self) -> bytes:
        return await self._read_upto(-1)

    async def _read_upto(self, limit: int) -> bytes:
        """Read until the end of the file, or until ``limit`` bytes (``-1``: no limit; a limit
        only for regular files, whose reads never wait).

        Regular files: one READ of the known rest (+1, to see the end) does it, unless the file
        grew; streams: growing chunks.  Bytes of the READs that completed wait in the stash if
        a later one is interrupted (the next read returns them first)."""
        if self._positional:
            if self._pos < 0:
                await self._sync_pos()
            request = max(self._size - self._pos, 0) + 1
        else:
            request = _STREAM_READ
        stash = self._stash
        while True:
            if limit >= 0:
                request = min(request, limit - len(stash))
            buf = _alloc(min(request, _MAX_RW), not self._regular)
            n = await self._pread(buf)
            if n == 0:
                break
            if not stash and (n == limit or (n < len(buf) and self._at_eof(len(buf), n))):
                return _detach(buf, n)  # the common case: one read did it
            with memoryview(buf) as view:
                stash += view[:n]
            if self._at_eof(len(buf), n) or len(stash) == limit:
                break
            request = max(request, len(stash), _STREAM_READ)  # grow geometrically
        return self._take_stash(-1)

    async def _readinto_u(self, view: memoryview) -> int:
        if self._stash:
            data = self._take_stash(len(view))
            view[: len(data)] = data
            return len(data)
        if len(view) > _MAX_RW:
            view = view[:_MAX_RW]
        return await self._pread(view)

    async def _readline_u(self) -> bytes:
        # Positional files read ahead into the stash; streams read byte by byte like FileIO.
        stash = self._stash
        searched = 0
        want = DEFAULT_BUFFER_SIZE if self._positional else 1
        while True:
            i = stash.find(b"\n", searched)
            if i >= 0:
                return self._take_stash(i + 1)
            searched = len(stash)
            buf = bytearray(want)
            n = await self._pread(buf)
            if n == 0:
                return self._take_stash(-1)
            stash += memoryview(buf)[:n]

    # -- writing -----------------------------------------------------------------------------

    async def _write_u(self, view: memoryview) -> int:
        self._drop_stash()
        if len(view) > _MAX_RW:
            view = view[:_MAX_RW]
        return await self._pwrite(view)

    # -- the public API ----------------------------------------------------------------------

    async def read(self, size: int | None = -1) -> bytes:
        n = _index(size)
        async with self._lock:
            self._check_closed()
            self._check_readable()
            await checkpoint_if_cancelled()
            return await self._read_u(n)

    async def readall(self) -> bytes:
        async with self._lock:
            self._check_closed()
            self._check_readable()
            await checkpoint_if_cancelled()
            return await self._readall_u()

    async def read1(self, size: int = -1) -> bytes:
        raise self._no_attribute("read1")

    async def readinto(self, b: WriteableBuffer) -> int:
        view = _writable_view(b, argument=_FILEIO_READINTO_ARGUMENT)
        async with self._lock:
            self._check_closed()
            self._check_readable()
            await checkpoint_if_cancelled()
            return await self._readinto_u(view)

    async def readinto1(self, b: WriteableBuffer) -> int:
        raise self._no_attribute("readinto1")

    async def readline(self) -> bytes:
        async with self._lock:
            self._check_closed()
            self._check_readable()
            await checkpoint_if_cancelled()
            return await self._readline_u()

    async def readlines(self) -> list[bytes]:
        async with self._lock:
            self._check_closed(_CLOSED_IO + ".")
            self._check_readable()
            await checkpoint_if_cancelled()
            lines: list[bytes] = []
            while True:
                line = await self._readline_u()
                if not line:
                    return lines
                lines.append(line)

    async def write(self, b: ReadableBuffer) -> int:
        async with self._lock:
            self._check_closed()
            self._check_writable()
            view = _readable_view(b)
            await checkpoint_if_cancelled()
            return await self._write_u(view)

    async def writelines(self, lines: Iterable[ReadableBuffer]) -> None:
        async with self._lock:
            self._check_closed(_CLOSED_IO + ".")
            self._check_writable()
            await checkpoint_if_cancelled()
            for line in lines:
                await self._write_u(_readable_view(line))

    async def seek(self, offset: int, whence: int | None = os.SEEK_SET) -> int:
        pos = _int_arg(offset)
        how = _int_arg(whence)
        async with self._lock:
            self._check_closed()
            if pos > _OFF_MAX or pos < _OFF_MIN:
                _check_off_t(pos)
            await checkpoint_if_cancelled()
            return await self._seek_u(pos, how)

    async def tell(self) -> int:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            return await self._logical_pos()

    async def truncate(self, size: int | None = None) -> int:
        length = None if size is None else _int_arg(size)
        async with self._lock:
            self._check_closed()
            self._check_writable()
            await checkpoint_if_cancelled()
            return await self._truncate_u(length)

    async def flush(self) -> None:
        self._check_closed(_CLOSED_IO + ".")
        await checkpoint_if_cancelled()

    async def fsync(self, datasync: bool = False) -> None:
        """``FSYNC`` (``datasync=True``: ``fdatasync``) -- an extension to anyio's API."""
        async with self._lock:
            self._check_closed()
            await self._fsync_u(datasync)


# ------------------------------------------------------------------------------------------
# buffered layer: io.BufferedReader / BufferedWriter / BufferedRandom on a RawFile
# ------------------------------------------------------------------------------------------


class BufferedFile(AsyncFile[bytes]):
    """A buffered binary file, like :class:`io.BufferedReader`, ``BufferedWriter`` or
    ``BufferedRandom`` (by mode).

    Reads fill a read-ahead buffer with one ring operation of at least ``buffer_size`` bytes;
    writes collect up to ``buffer_size`` bytes before a ring operation (larger writes go to the
    ring directly).  Reading and writing never have buffered data at the same time.
    """

    def __init__(self, raw: RawFile, buffer_size: int) -> None:
        self._raw = raw
        self._lock = raw._lock
        self._limiter = raw._limiter
        self._buffer_size = buffer_size
        self._readable = raw._readable
        self._writable = raw._writable
        #: Read-ahead: bytes from file offset ``raw._pos - len(_rbuf)`` (positional files).
        self._rbuf = bytearray()
        #: Pending writes: bytes for file offset ``raw._pos`` (the end, in append mode).
        self._wbuf = bytearray()

    def __repr__(self) -> str:
        state = " [closed]" if self._raw._closed else ""
        return f"<anyio_uring.{self._kind}{state} name={self._raw.name!r}>"

    async def aclose(self) -> None:
        """Flush and close the file; shielded from cancellation (as in anyio).  With nothing to
        flush, an inline close (see ``_inline.py``) and nobody else using the file, it closes at
        once: nothing could be cancelled, so there is no scope to enter."""
        raw = self._raw
        if raw._inline_close and not self._wbuf and raw._closefd and not raw._closed and not self._lock._busy:
            raw._closed = True
            self._rbuf = bytearray()
            await _close_inline(raw._fd)
            return
        await super().aclose()

    @property
    def _kind(self) -> str:
        if self._readable and self._writable:
            return "BufferedRandom"
        return "BufferedReader" if self._readable else "BufferedWriter"

    # -- attributes ------------------------------------------------------------------------

    @property
    def raw(self) -> RawFile:
        return self._raw

    @property
    def name(self) -> object:
        return self._raw.name

    @property
    def mode(self) -> str:
        return self._raw.mode

    @property
    def closed(self) -> bool:
        return self._raw._closed

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    def fileno(self) -> int:
        return self._raw.fileno()

    def isatty(self) -> bool:
        return self._raw.isatty()

    def readable(self) -> bool:
        return self._raw.readable() if self._readable else False

    def writable(self) -> bool:
        return self._raw.writable() if self._writable else False

    def seekable(self) -> bool:
        return self._raw.seekable()

    def _check_closed(self, message: str) -> None:
        if self._raw._closed:
            raise ValueError(message)

    def _check_read(self, closed_message: str, unsupported: str = "read") -> None:
        if not self._readable:
            raise _unsupported(unsupported)
        if self._raw._closed:
            raise ValueError(closed_message)

    # -- internals (the lock is held) ----------------------------------------------------------

    def _take(self, n: int) -> bytes:
        rbuf = self._rbuf
        if n >= len(rbuf):
            data = bytes(rbuf)
            self._rbuf = bytearray()
            return data
        data = bytes(rbuf[:n])
        del rbuf[:n]
        return data

    async def _fill(self, size: int) -> tuple[int, bool]:
        """One raw read of up to ``size`` bytes appended to the read-ahead buffer: (the bytes
        read, whether that was the end of the file).  The chunk is sized by ``raw._request``
        (a regular file's known size bounds it) and is lazy for streams."""
        raw = self._raw
        if raw._positional and raw._pos < 0:
            await raw._sync_pos()
        request = raw._request(min(size, _MAX_RW), len(self._rbuf))
        chunk = _alloc(request, not raw._regular)
        n = await raw._pread(chunk)
        if n:
            if type(chunk) is not bytearray:
                self._rbuf += chunk[:n]
            elif self._rbuf:
                self._rbuf += memoryview(chunk)[:n]
            else:
                if n < len(chunk):
                    del chunk[n:]
                self._rbuf = chunk
        return n, raw._at_eof(request, n)

    async def _prepare_read(self) -> None:
        if self._wbuf:
            await self._flush_u()

    def _prepare_write(self) -> None:
        """Switch from reading to writing: the raw position goes back to the logical one."""
        raw = self._raw
        if self._rbuf and raw._positional:
            if raw._pos >= 0:
                raw._pos -= len(self._rbuf)
            self._rbuf = bytearray()
        raw._drop_stash()

    async def _read_u(self, n: int) -> bytes:
        """CPython's read(n): whole buffer-size blocks straight from the raw file, the last
        partial block through a fresh buffer (its rest stays read ahead).  Every byte goes
        through ``_rbuf``, so a cancelled read leaves what it got there."""
        if n < 0:
            return await self._readall_u()
        rbuf = self._rbuf
        if len(rbuf) >= n:
            return self._take(n)
        if self._wbuf:
            await self._flush_u()
        raw = self._raw
        bs = self._buffer_size
        if (
            not rbuf
            and not n % bs
            and n <= _MAX_RW
            and raw._positional
            and raw._pos >= 0
            and (n <= _STREAM_READ or raw._pos + n <= raw._size or not raw._regular)
        ):
            # The hot path: whole blocks, nothing buffered -- one READ straight into the result.
            # (A large request past a regular file's known end goes below, in chunks sized
            # from the file.)
            chunk = bytearray(n)
            res = await raw._read_here(chunk)
            if res < 0:
                raise os_error(res)
            raw._pos += res
            if res == n:
                return bytes(chunk)
            if res:
                del chunk[res:]
                self._rbuf = chunk
            if raw._at_eof(n, res):
                return self._take(n)
        while True:
            remaining = n - len(self._rbuf)
            block = remaining - remaining % bs
            if block <= 0:
                break
            got, eof = await self._fill(block)
            if eof:
                return self._take(n)
        fresh = 0
        while len(self._rbuf) < n and fresh < bs:
            got, eof = await self._fill(bs - fresh)
            if eof:
                break
            fresh += got
        return self._take(n)

    async def _readinto_u(self, view: memoryview) -> int:
        """CPython's readinto: a rest larger than the buffer straight from the raw file,
        otherwise through the buffer."""
        n = len(view)
        if len(self._rbuf) < n:
            await self._prepare_read()
            bs = self._buffer_size
            fresh = 0
            while len(self._rbuf) < n:
                remaining = n - len(self._rbuf)
                request = remaining if remaining > bs else bs - fresh
                if request <= 0:
                    break
                got, eof = await self._fill(request)
                if eof:
                    break
                if remaining <= bs:
                    fresh += got
        data = self._take(n)
        view[: len(data)] = data
        return len(data)

    async def _readall_u(self) -> bytes:
        if self._wbuf:
            await self._flush_u()
        raw = self._raw
        if raw._positional:
            if raw._pos < 0:
                await raw._sync_pos()
            request = max(raw._size - raw._pos, 0) + 1
            if not self._rbuf and request <= _MAX_RW:
                # The common case: one READ of the known rest (+1 to see the end) does it.
                chunk = bytearray(request)
                res = await raw._read_here(chunk)
                if res < 0:
                    raise os_error(res)
                raw._pos += res
                if res < request:
                    del chunk[res:]
                if raw._at_eof(request, res):
                    return bytes(chunk)
                if chunk:
                    self._rbuf = chunk  # the file grew (or a short read): go on below
        else:
            request = max(self._buffer_size, _STREAM_READ)
        while True:
            _, eof = await self._fill(request)
            if eof:
                break
            request = max(request, len(self._rbuf))
        return self._take(len(self._rbuf))

    async def _read1_u(self, n: int) -> bytes:
        if n < 0:
            n = self._buffer_size
        if n == 0:
            return b""
        if self._rbuf:
            return self._take(n)
        await self._prepare_read()
        raw = self._raw
        if raw._positional and raw._pos < 0:
            await raw._sync_pos()
        buf = _alloc(raw._request(min(n, _MAX_RW)), not raw._regular)
        return _detach(buf, await raw._pread(buf))

    async def _readinto1_u(self, view: memoryview) -> int:
        """CPython's readinto1: the buffered bytes, then (if more are wanted) at most one raw
        read -- straight into ``view`` when the rest exceeds the buffer size."""
        rbuf = self._rbuf
        n = len(view)
        have = min(len(rbuf), n)
        if have == n:
            view[:] = self._take(n)
            return n
        if not have or n - have > self._buffer_size:
            await self._prepare_read()
            if n - have > self._buffer_size:
                # One raw read into a scratch buffer: the bytes go to the caller only together
                # with the buffered ones, so a cancellation loses nothing.
                raw = self._raw
                if raw._positional and raw._pos < 0:
                    await raw._sync_pos()
                chunk = _alloc(raw._request(n - have), not raw._regular)
                got = await raw._pread(chunk)
                view[: len(rbuf)] = rbuf
                with memoryview(chunk) as scratch:
                    view[have : have + got] = scratch[:got]
                self._rbuf = bytearray()
                return have + got
            await self._fill(self._buffer_size)
            have = min(len(self._rbuf), n)
        view[:have] = self._take(have)
        return have

    async def _readline_u(self) -> bytes:
        await self._prepare_read()
        searched = 0
        request = self._buffer_size
        while True:
            i = self._rbuf.find(b"\n", searched)
            if i >= 0:
                return self._take(i + 1)
            searched = len(self._rbuf)
            got, eof = await self._fill(request)
            if got == 0 or (eof and self._rbuf.find(b"\n", searched) < 0):
                return self._take(len(self._rbuf))

    async def _write_u(self, view: memoryview) -> int:
        n = len(view)
        if not n:
            return 0  # changes nothing, not even the read-ahead (as in C)
        self._prepare_write()
        wbuf = self._wbuf
        if len(wbuf) + n <= self._buffer_size:
            wbuf += view
            return n
        if wbuf:
            await self._flush_u()
        if n < self._buffer_size:
            self._wbuf += view
            return n
        await self._write_all(view)
        return n

    def _accept(self, data: bytes) -> None:
        """Take ``data`` into the write buffer (no I/O; see :meth:`_flush_excess`)."""
        self._prepare_write()
        self._wbuf += data

    async def _flush_excess(self) -> None:
        if len(self._wbuf) > self._buffer_size:
            await self._flush_u()

    async def _write_all(self, view: memoryview) -> None:
        raw = self._raw
        while view:
            written = await raw._pwrite(view[:_MAX_RW])
            if written <= 0:
                raise OSError(errno.EIO, f"raw write() returned invalid length {written}")
            view = view[written:]

    async def _flush_u(self) -> None:
        wbuf = self._wbuf
        raw = self._raw
        while wbuf:
            with memoryview(wbuf) as view:
                written = await raw._pwrite(view[:_MAX_RW])
            if written <= 0:
                raise OSError(errno.EIO, f"raw write() returned invalid length {written}")
            del wbuf[:written]  # what the kernel took is gone; the rest stays pending

    async def _flush_and_rewind(self) -> None:
        """``flush()``: write what is pending; a read-write file also drops its read-ahead
        (CPython's ``buffered_flush_and_rewind``)."""
        if self._wbuf:
            await self._flush_u()
        if self._readable and self._writable:
            self._prepare_write()

    async def _tell_u(self) -> int:
        pos = await self._raw._logical_pos() - len(self._rbuf) + len(self._wbuf)
        return max(pos, 0)

    async def _seek_u(self, target: int, whence: int) -> int:
        raw = self._raw
        if whence not in (0, 1, 2, getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)):
            raise ValueError(f"whence value {whence} unsupported")
        if whence in (0, 1) and self._rbuf and raw._positional and raw._pos >= 0:
            # Inside the read-ahead buffer: no I/O.
            start = raw._pos - len(self._rbuf)
            new = target if whence == 0 else start + target
            if start <= new <= raw._pos:
                del self._rbuf[: new - start]
                return new
        if self._wbuf:
            await self._flush_u()
        if whence == 1:
            target -= len(self._rbuf)
        new = await raw._seek_u(target, whence)
        self._rbuf = bytearray()  # only now: a failed seek keeps the read-ahead (as in C)
        return new

    async def _truncate_u(self, pos: int | None) -> int:
        if self._wbuf:
            await self._flush_u()
        self._prepare_write()
        return await self._raw._truncate_u(pos)

    async def _close_u(self) -> None:
        raw = self._raw
        if raw._closed:
            return
        if not self._wbuf:
            self._rbuf = bytearray()
            if raw._closefd:  # the common case, without another frame
                raw._closed = True
                if raw._inline_close:
                    await _close_inline(raw._fd)
                    return
                res = await wait_operation(raw._ring.close_fd(raw._fd))
                if res < 0:
                    raise os_error(res)
                return
            await raw._close_u()
            return
        try:
            await self._flush_u()
        finally:
            self._rbuf = bytearray()
            await raw._close_u()

    def __del__(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is None or raw._closed or not self._wbuf:
            return
        try:  # finalizer path: flush with plain system calls, like io's __del__
            data = bytes(self._wbuf)
            self._wbuf = bytearray()
            if raw._positional and not raw._appending and raw._pos >= 0:
                while data:
                    data = data[os.pwrite(raw._fd, data, raw._pos) :]
            else:
                while data:
                    data = data[os.write(raw._fd, data) :]
        except OSError:
            pass

    # -- the public API ----------------------------------------------------------------------

    async def read(self, size: int | None = -1) -> bytes:
        n = size if type(size) is int else _index(size)
        if n < -1:
            raise ValueError("read length must be non-negative or -1")
        lock = self._lock
        if lock._busy:
            await lock.wait()
        else:
            lock._busy = True
        try:
            self._check_read("read of closed file")
            if cancel_pending():
                await checkpoint_if_cancelled()
            return await self._read_u(n)
        finally:
            lock.release()

    async def read1(self, size: int | None = -1) -> bytes:
        n = _index(size)
        async with self._lock:
            self._check_read("read of closed file", "read1")
            await checkpoint_if_cancelled()
            return await self._read1_u(n)

    async def readinto(self, b: WriteableBuffer) -> int:
        view = _writable_view(b)
        async with self._lock:
            self._check_read("readinto of closed file")
            await checkpoint_if_cancelled()
            return await self._readinto_u(view)

    async def readinto1(self, b: WriteableBuffer) -> int:
        view = _writable_view(b, "readinto1")
        async with self._lock:
            self._check_read("readinto of closed file", "read1")
            await checkpoint_if_cancelled()
            return await self._readinto1_u(view)

    async def readline(self) -> bytes:
        async with self._lock:
            self._check_read("readline of closed file")
            await checkpoint_if_cancelled()
            return await self._readline_u()

    async def readlines(self) -> list[bytes]:
        async with self._lock:
            self._check_closed(_CLOSED_IO + ".")
            self._check_read("readline of closed file")
            await checkpoint_if_cancelled()
            lines: list[bytes] = []
            while True:
                line = await self._readline_u()
                if not line:
                    return lines
                lines.append(line)

    async def write(self, b: ReadableBuffer) -> int:
        if not self._writable:
            raise _unsupported("write")
        async with self._lock:
            self._check_closed("write to closed file")
            view = _readable_view(b)
            await checkpoint_if_cancelled()
            return await self._write_u(view)

    async def writelines(self, lines: Iterable[ReadableBuffer]) -> None:
        async with self._lock:
            self._check_closed(_CLOSED_IO + ".")
            if not self._writable:
                raise _unsupported("write")
            await checkpoint_if_cancelled()
            for line in lines:
                await self._write_u(_readable_view(line))

    async def seek(self, offset: int, whence: int | None = os.SEEK_SET) -> int:
        raw = self._raw
        lock = self._lock
        if (
            type(offset) is int
            and whence == 0
            and 0 <= offset <= raw._size
            and not lock._busy
            and not self._wbuf
            and raw._positional
            and not raw._closed
        ):
            # The hot path: an absolute seek inside the file is bookkeeping (a cancel point, no
            # I/O); past the known end, the raw layer checks the kernel's limit.
            if cancel_pending():
                await checkpoint_if_cancelled()
            rbuf = self._rbuf
            start = raw._pos - len(rbuf)
            if rbuf and raw._pos >= 0 and start <= offset <= raw._pos:
                del rbuf[: offset - start]
            else:
                if rbuf:
                    self._rbuf = bytearray()
                if raw._stash:
                    raw._stash = bytearray()
                raw._pos = offset
            return offset
        async with self._lock:
            self._check_closed("seek of closed file")
            if not self._raw._positional and not self._raw.seekable():
                raise _unsupported("File or stream is not seekable.")
            target = _int_arg(offset)
            how = _int_arg(whence)
            if not _OFF_MIN <= target <= _OFF_MAX:  # PyNumber_AsOff_t(target, ValueError)
                raise ValueError(f"cannot fit '{type(offset).__name__}' into an offset-sized integer")
            await checkpoint_if_cancelled()
            return await self._seek_u(target, how)

    async def tell(self) -> int:
        async with self._lock:
            self._check_closed(_CLOSED_IO)
            await checkpoint_if_cancelled()
            return await self._tell_u()

    async def truncate(self, size: int | None = None) -> int:
        async with self._lock:
            self._check_closed("truncate of closed file")
            if not self._writable:
                raise _unsupported("truncate")
            pos = None if size is None else _int_arg(size)
            await checkpoint_if_cancelled()
            return await self._truncate_u(pos)

    async def flush(self) -> None:
        async with self._lock:
            if self._writable:
                self._check_closed("flush of closed file")
            else:
                self._check_closed(_CLOSED_IO + ".")
            await checkpoint_if_cancelled()
            await self._flush_and_rewind()

    async def fsync(self, datasync: bool = False) -> None:
        """Flush, then ``FSYNC`` (``datasync=True``: ``fdatasync``) -- an extension."""
        async with self._lock:
            self._check_closed("flush of closed file")
            if self._wbuf:
                await self._flush_u()
            await self._raw._fsync_u(datasync)


# ------------------------------------------------------------------------------------------
# text layer: io.TextIOWrapper on a BufferedFile
# ------------------------------------------------------------------------------------------

# tell() cookies use the layout of CPython's C TextIOWrapper (textio.c, cookie_type):
# start_pos (64 bits) | dec_flags (32) | bytes_to_feed (32) | chars_to_skip (32) | need_eof (8).
_COOKIE: Final = struct.Struct("<qiiiB")


def _build_cookie(start_pos: int, dec_flags: int = 0, bytes_to_feed: int = 0, chars_to_skip: int = 0,
                  need_eof: bool = False) -> int:  # fmt: skip
    raw = _COOKIE.pack(start_pos, dec_flags, bytes_to_feed, chars_to_skip, need_eof)
    return int.from_bytes(raw, "little")


def _parse_cookie(cookie: int) -> tuple[int, int, int, int, bool]:
    try:
        raw = cookie.to_bytes(_COOKIE.size, "little")
    except OverflowError:
        raise OverflowError("int too big to convert") from None  # CPython's message
    start_pos, dec_flags, bytes_to_feed, chars_to_skip, need_eof = _COOKIE.unpack(raw)
    return start_pos, dec_flags, bytes_to_feed, chars_to_skip, bool(need_eof)


def _default_encoding() -> str:
    if sys.flags.utf8_mode:
        return "utf-8"
    return locale.getencoding()


class TextFile(AsyncFile[str]):
    """A text file, like :class:`io.TextIOWrapper` (same decoding, newline translation,
    buffering and ``tell()`` cookies as CPython's C implementation).

    Differences, both invisible for the usual codecs: characters decoded from several chunks
    by one ``read``/``readline`` stay in one pending string (so a cancellation loses nothing),
    and lines longer than two chunks are read with growing chunk sizes.
    """

    def __init__(
        self,
        buffer: BufferedFile,
        encoding: str | None,
        errors: str | None,
        newline: str | None,
        line_buffering: bool,
        mode: str,
    ) -> None:
        self._buffer = buffer
        self._lock = buffer._lock
        self._limiter = buffer._limiter
        self.mode = mode
        if encoding is None:
            if sys.flags.warn_default_encoding:
                warnings.warn("'encoding' argument not specified", EncodingWarning, stacklevel=4)
            encoding = _default_encoding()
        elif encoding == "locale":
            encoding = _default_encoding()
        codec_info = codecs.lookup(encoding)
        if not codec_info._is_text_encoding:
            raise LookupError(
                f"{encoding!r} is not a text encoding; use codecs.open() to handle arbitrary codecs"
            )
        if errors is None:
            errors = "strict"
        self._encoding = encoding
        self._errors = errors
        self._readuniversal = not newline
        self._readtranslate = newline is None
        self._readnl = newline
        self._writetranslate = newline != ""
        self._writenl = newline if newline in ("\r", "\r\n") else None
        self._line_buffering = line_buffering
        self._chunk_size = _TEXT_CHUNK_SIZE
        self._decoder: Any = None
        self._encoder: Any = None
        if buffer._readable:
            decoder: Any = codec_info.incrementaldecoder(errors)
            if self._readuniversal:
                decoder = io.IncrementalNewlineDecoder(decoder, self._readtranslate)
            self._decoder = decoder
        if buffer._writable:
            self._encoder = codec_info.incrementalencoder(errors)
        raw = buffer._raw
        self._seekable = self._telling = raw._positional or raw.seekable()
        #: Decoded characters not yet returned start at ``_chars[_used]``.
        self._chars = ""
        self._used = 0
        #: ``(dec_flags, next_input)``: feeding ``next_input`` to a decoder in state
        #: ``(b"", dec_flags)`` yields ``_chars``; the bytes end at the buffer's position.
        self._snapshot: tuple[int, bytes] | None = None
        #: Where the last chunk's characters start in ``_chars`` (> 0 after appending), and
        #: that chunk's own snapshot: see :meth:`_settle`.
        self._last_start = 0
        self._last_snapshot: tuple[int, bytes] | None = None
        self._b2cratio = 0.0
        #: Encoded text not yet handed to the buffer (C's ``pending_bytes``, up to a chunk).
        self._pending: list[bytes] = []
        self._pending_count = 0
        if self._seekable and self._encoder is not None and raw._positional and raw._pos > 0:
            self._encoder.setstate(0)  # no BOM in the middle of a file

    def __repr__(self) -> str:
        if self._buffer._raw._closed:
            return f"<anyio_uring.TextFile [closed] mode={self.mode!r}>"
        return f"<anyio_uring.TextFile name={self.name!r} mode={self.mode!r} encoding={self._encoding!r}>"

    # -- attributes ------------------------------------------------------------------------

    @property
    def buffer(self) -> BufferedFile:
        return self._buffer

    @property
    def name(self) -> object:
        return self._buffer._raw.name

    @property
    def closed(self) -> bool:
        return self._buffer._raw._closed

    @property
    def encoding(self) -> str:
        return self._encoding

    @property
    def errors(self) -> str:
        return self._errors

    @property
    def line_buffering(self) -> bool:
        return self._line_buffering

    @property
    def write_through(self) -> bool:
        return False

    @property
    def newlines(self) -> str | tuple[str, ...] | None:
        return getattr(self._decoder, "newlines", None) if self._decoder is not None else None

    def fileno(self) -> int:
        return self._buffer.fileno()

    def isatty(self) -> bool:
        return self._buffer.isatty()

    def readable(self) -> bool:
        return self._buffer.readable()

    def writable(self) -> bool:
        return self._buffer.writable()

    def seekable(self) -> bool:
        self._buffer._raw._check_closed()
        return self._seekable

    def _check_closed(self) -> None:
        if self._buffer._raw._closed:
            raise ValueError(_CLOSED_IO + ".")

    def __del__(self) -> None:
        if getattr(self, "_pending", None) and not self._buffer._raw._closed:
            self._writeflush()  # the buffer's finalizer writes it

    # -- decoding ----------------------------------------------------------------------------

    def _reset_read_state(self) -> None:
        self._chars = ""
        self._used = 0
        self._snapshot = None
        self._last_start = 0

    async def _read_chunk(self, size_hint: int) -> bool:
        """Read one chunk (``read1``), decode it into the pending characters; False at EOF.

        The chunk replaces the pending characters when they are used up (CPython's behaviour)
        and is appended to them otherwise (a ``read``/``readline`` spanning chunks)."""
        decoder = self._decoder
        if decoder is None:
            raise _unsupported("not readable")
        if self._telling:
            dec_buffer, dec_flags = decoder.getstate()
        if size_hint > 0:
            size_hint = int(max(self._b2cratio, 1.0) * size_hint)
        input_chunk = await self._buffer._read1_u(max(self._chunk_size, size_hint))
        nbytes = len(input_chunk)
        eof = nbytes == 0
        decoded: str = decoder.decode(input_chunk, eof)
        nchars = len(decoded)
        self._b2cratio = nbytes / nchars if nchars else 0.0
        if nchars:
            eof = False
        last_snapshot = (dec_flags, dec_buffer + input_chunk) if self._telling else None
        if self._used >= len(self._chars):
            self._chars = decoded
            self._used = 0
            self._last_start = 0
            self._snapshot = last_snapshot
        else:
            self._last_start = len(self._chars)
            self._chars += decoded
            if self._snapshot is not None:
                self._snapshot = (self._snapshot[0], self._snapshot[1] + input_chunk)
        self._last_snapshot = last_snapshot
        return not eof

    def _settle(self) -> None:
        """After a read that appended chunks: keep only the last chunk's characters and
        snapshot -- the state CPython is in (so ``tell()`` cookies are identical)."""
        start = self._last_start
        if start and self._used >= start:
            self._chars = self._chars[start:]
            self._used -= start
            self._snapshot = self._last_snapshot
            self._last_start = 0

    def _find_line_ending(self, line: str, start: int) -> tuple[int, int]:
        """(end of the first line in ``line[start:]`` or -1, index up to which no line ends)."""
        if self._readtranslate:
            i = line.find("\n", start)
            return (i + 1, i + 1) if i >= 0 else (-1, len(line))
        if self._readuniversal:
            nl = line.find("\n", start)
            cr = line.find("\r", start, nl if nl >= 0 else len(line))
            if cr < 0:
                return (nl + 1, nl + 1) if nl >= 0 else (-1, len(line))
            end = cr + 2 if line.startswith("\n", cr + 1) else cr + 1
            return end, end
        readnl = self._readnl
        assert readnl is not None
        i = line.find(readnl, start)
        if i >= 0:
            return i + len(readnl), i + len(readnl)
        return -1, max(len(line) - (len(readnl) - 1), start)

    # -- internals (the lock is held) ----------------------------------------------------------

    async def _read_u(self, n: int) -> str:
        decoder = self._decoder
        if decoder is None:
            raise _unsupported("not readable")
        self._writeflush()
        if n < 0:
            data = await self._buffer._read_u(-1)
            result: str = self._chars[self._used :] + decoder.decode(data, True)
            self._reset_read_state()
            return result
        while len(self._chars) - self._used < n:
            if not await self._read_chunk(n - (len(self._chars) - self._used)):
                break
        start = self._used
        result = self._chars[start : start + n]
        self._used = start + len(result)
        self._settle()
        return result

    async def _readline_u(self) -> str:
        if self._decoder is None:
            raise _unsupported("not readable")
        self._writeflush()
        start = self._used
        search = start
        while True:
            chars = self._chars
            end, consumed = self._find_line_ending(chars, search) if search < len(chars) else (-1, search)
            if end >= 0:
                self._used = end
                self._settle()
                return chars[start:end]
            offset = consumed - start
            pending = len(chars) - start
            hint = pending if pending > 2 * self._chunk_size else 0  # long line: grow the chunks
            while True:
                more = await self._read_chunk(hint)
                if not more or len(self._chars) - self._used > pending:
                    break
            start = self._used
            search = start + offset
            if not more:
                line = self._chars[start:]
                self._reset_read_state()
                return line

    async def _write_u(self, s: str) -> int:
        encoder = self._encoder
        if encoder is None:
            raise _unsupported("not writable")
        length = len(s)
        haslf = (self._writenl is not None or self._line_buffering) and "\n" in s
        if haslf and self._writetranslate and self._writenl is not None:
            s = s.replace("\n", self._writenl)
        needflush = self._line_buffering and (haslf or "\r" in s)
        data: bytes = encoder.encode(s)
        self._pending.append(data)
        self._pending_count += len(data)
        if self._pending_count >= self._chunk_size or needflush:
            self._writeflush()
            await self._buffer._flush_excess()
            if needflush and self._buffer._wbuf:
                await self._buffer._flush_u()
        self._reset_read_state()
        if self._decoder is not None:
            self._decoder.reset()
        return length

    def _writeflush(self) -> None:
        """Move the pending encoded text into the buffer (no I/O, so nothing can be lost)."""
        if self._pending:
            pending = self._pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._pending = []
            self._pending_count = 0
            self._buffer._accept(data)

    async def _flush_u(self) -> None:
        self._telling = self._seekable
        self._writeflush()
        await self._buffer._flush_and_rewind()

    def _decoder_setstate(self, start_pos: int, dec_flags: int) -> None:
        if start_pos == 0 and dec_flags == 0:
            self._decoder.reset()
        else:
            self._decoder.setstate((b"", dec_flags))

    def _encoder_reset(self, start_of_stream: bool) -> None:
        if self._encoder is not None:
            if start_of_stream:
                self._encoder.reset()
            else:
                self._encoder.setstate(0)

    async def _tell_u(self) -> int:
        if not self._seekable:
            raise _unsupported("underlying stream is not seekable")
        if not self._telling:
            raise OSError("telling position disabled by next() call")
        await self._flush_u()
        position = await self._buffer._tell_u()
        decoder = self._decoder
        snapshot = self._snapshot
        if decoder is None or snapshot is None:
            return position
        dec_flags, next_input = snapshot
        start_pos = position - len(next_input)
        chars_to_skip = self._used
        if chars_to_skip == 0:
            return _build_cookie(start_pos, dec_flags)
        saved_state = decoder.getstate()
        try:
            # Fast search for an acceptable start point, close to our current position.
            skip_bytes = int(self._b2cratio * chars_to_skip)
            skip_back = 1
            while skip_bytes > 0:
                self._decoder_setstate(start_pos, dec_flags)
                n = len(decoder.decode(next_input[:skip_bytes]))
                if n <= chars_to_skip:
                    dec_buffer, flags = decoder.getstate()
                    if not dec_buffer:
                        dec_flags = flags
                        chars_to_skip -= n
                        break
                    skip_bytes -= len(dec_buffer)
                    skip_back = 1
                else:
                    skip_bytes -= skip_back
                    skip_back *= 2
            if skip_bytes <= 0:
                skip_bytes = 0
                self._decoder_setstate(start_pos, dec_flags)
            start_pos += skip_bytes
            if chars_to_skip == 0:
                return _build_cookie(start_pos, dec_flags)
            # Feed one byte at a time, noting the last safe start point (nothing buffered).
            bytes_to_feed = 0
            need_eof = False
            chars_decoded = 0
            i = skip_bytes
            end = len(next_input)
            while i < end:
                chars_decoded += len(decoder.decode(next_input[i : i + 1]))
                bytes_to_feed += 1
                dec_buffer, flags = decoder.getstate()
                if not dec_buffer and chars_decoded <= chars_to_skip:
                    start_pos += bytes_to_feed
                    chars_to_skip -= chars_decoded
                    dec_flags = flags
                    bytes_to_feed = 0
                    chars_decoded = 0
                if chars_decoded >= chars_to_skip:
                    break
                i += 1
            if i == end:
                chars_decoded += len(decoder.decode(b"", True))
                need_eof = True
                if chars_decoded < chars_to_skip:
                    raise OSError("can't reconstruct logical file position")
            return _build_cookie(start_pos, dec_flags, bytes_to_feed, chars_to_skip, need_eof)
        finally:
            decoder.setstate(saved_state)

    async def _seek_u(self, cookie: Any, whence: int) -> Any:
        # ``cookie`` is compared and converted the way C's TextIOWrapper.seek does it.
        if not self._seekable:
            raise _unsupported("underlying stream is not seekable")
        if whence == os.SEEK_CUR:
            if cookie != 0:
                raise _unsupported("can't do nonzero cur-relative seeks")
            cookie = await self._tell_u()
        elif whence == os.SEEK_END:
            if cookie != 0:
                raise _unsupported("can't do nonzero end-relative seeks")
            await self._flush_u()
            self._reset_read_state()
            if self._decoder is not None:
                self._decoder.reset()
            position = await self._buffer._seek_u(0, 2)
            self._encoder_reset(position == 0)
            return position
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if cookie < 0:
            raise ValueError(f"negative seek position {cookie!r}")
        await self._flush_u()
        start_pos, dec_flags, bytes_to_feed, chars_to_skip, need_eof = _parse_cookie(int(cookie))
        await self._buffer._seek_u(start_pos, 0)
        self._reset_read_state()
        if self._decoder is not None:
            self._decoder_setstate(start_pos, dec_flags)
        if chars_to_skip:
            input_chunk = await self._buffer._read_u(bytes_to_feed)
            self._snapshot = (dec_flags, input_chunk)
            decoded = self._decoder.decode(input_chunk, need_eof)
            self._chars = decoded
            if len(decoded) < chars_to_skip:
                raise OSError("can't restore logical file position")
            self._used = chars_to_skip
        else:
            self._snapshot = (dec_flags, b"")
        self._encoder_reset(start_pos == 0 and dec_flags == 0)
        return cookie

    async def _close_u(self) -> None:
        if self._buffer._raw._closed:
            return
        try:
            await self._flush_u()
        finally:
            await self._buffer._close_u()

    # -- the public API ----------------------------------------------------------------------

    async def read(self, size: int | None = -1) -> str:
        n = _index(size)
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            return await self._read_u(n)

    async def read1(self, size: int = -1) -> bytes:
        raise self._no_attribute("read1")

    async def readinto(self, b: WriteableBuffer) -> int:
        raise self._no_attribute("readinto")

    async def readinto1(self, b: WriteableBuffer) -> int:
        raise self._no_attribute("readinto1")

    async def readline(self) -> str:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            return await self._readline_u()

    async def readlines(self) -> list[str]:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            lines: list[str] = []
            while True:
                line = await self._readline_u()
                if not line:
                    self._snapshot = None
                    return lines
                lines.append(line)

    async def write(self, b: str) -> int:
        async with self._lock:
            self._check_closed()
            if not isinstance(b, str):
                raise TypeError(f"write() argument must be str, not {type(b).__name__}")
            await checkpoint_if_cancelled()
            return await self._write_u(b)

    async def writelines(self, lines: Iterable[str]) -> None:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            for line in lines:
                if not isinstance(line, str):
                    raise TypeError(f"write() argument must be str, not {type(line).__name__}")
                await self._write_u(line)

    async def seek(self, offset: int, whence: int | None = os.SEEK_SET) -> int:
        how = _int_arg(whence)
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            result: int = await self._seek_u(offset, how)
            return result

    async def tell(self) -> int:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            return await self._tell_u()

    async def truncate(self, size: int | None = None) -> int:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            await self._flush_u()
            buffer = self._buffer
            if not buffer._writable:
                raise _unsupported("truncate")
            pos = None if size is None else _int_arg(size)
            return await buffer._truncate_u(pos)

    async def flush(self) -> None:
        async with self._lock:
            self._check_closed()
            await checkpoint_if_cancelled()
            await self._flush_u()

    async def fsync(self, datasync: bool = False) -> None:
        """Flush, then ``FSYNC`` (``datasync=True``: ``fdatasync``) -- an extension."""
        async with self._lock:
            self._check_closed()
            await self._flush_u()
            await self._buffer._raw._fsync_u(datasync)


# ------------------------------------------------------------------------------------------
# open_file
# ------------------------------------------------------------------------------------------


def _check_str_or_none(value: object, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"open() argument '{name}' must be str or None, not {type(value).__name__}")


class _Mode:
    """A parsed ``open()`` mode (the checks and messages of CPython's ``_io_open_impl``)."""

    __slots__ = ("appending", "binary", "creating", "flags", "reading", "text", "updating", "writing")

    def __init__(self, mode: str) -> None:
        if not isinstance(mode, str):
            raise TypeError(f"open() argument 'mode' must be str, not {type(mode).__name__}")
        seen: set[str] = set()
        for c in mode:
            if c not in "xrwa+tb" or c in seen:
                raise ValueError(f"invalid mode: '{mode}'")
            seen.add(c)
        self.creating = "x" in seen
        self.reading = "r" in seen
        self.writing = "w" in seen
        self.appending = "a" in seen
        self.updating = "+" in seen
        self.text = "t" in seen
        self.binary = "b" in seen
        if self.text and self.binary:
            raise ValueError("can't have text and binary mode at once")
        if self.creating + self.reading + self.writing + self.appending > 1:
            raise ValueError("must have exactly one of create/read/write/append mode")
        flags = 0
        if self.creating + self.reading + self.writing + self.appending != 1:
            flags = -1  # FileIO's error, raised after the encoding checks
        elif self.creating:
            flags = os.O_EXCL | os.O_CREAT
        elif self.reading:
            flags = 0
        elif self.writing:
            flags = os.O_CREAT | os.O_TRUNC
        else:
            flags = os.O_APPEND | os.O_CREAT
        if flags >= 0:
            if self.updating:
                flags |= os.O_RDWR
            elif self.reading:
                flags |= os.O_RDONLY
            else:
                flags |= os.O_WRONLY
            flags |= os.O_CLOEXEC
        self.flags = flags

    @property
    def readable(self) -> bool:
        return self.reading or self.updating

    @property
    def writable(self) -> bool:
        return not self.reading or self.updating


_MODES: dict[str, _Mode] = {}


async def _open_raw(
    ring: Ring,
    file: Any,
    mode: _Mode,
    closefd: bool,
    opener: Callable[[str, int], int] | None,
    limiter: _AnyioCapacityLimiter | None,
) -> RawFile:
    """FileIO's constructor: OPENAT (or adopt an fd / call the opener), then STATX -- each tried
    inline first where that cannot block (see ``_inline.py``)."""
    flags = mode.flags
    inline = capabilities(ring)[2]
    found = opened_inline = False  # the inline attempts: statx in hand, open done inline
    adopted = isinstance(file, int)
    if adopted:
        assert isinstance(file, int)
        if file < 0:
            raise ValueError("negative file descriptor")
        fd = file
        owned = None
    else:
        if not closefd:
            raise ValueError("Cannot use closefd=False with file name")
        res = _EAGAIN
        if opener is None and inline is not None and not flags & _RING_ONLY_OPEN:
            path = file if type(file) is bytes else os.fsencode(file)
            res = lib.aur_inline_open(inline.c, AT_FDCWD, path, flags)
            if res >= 0:
                owned = OwnedFd(res)
                fd = res
                opened_inline = True
                found = bool(inline.c.found)
            elif res != _EAGAIN:
                await cancel_shielded_checkpoint()  # where the OPENAT's result would have come
                raise os_error(res, file)
        if opened_inline:
            pass
        elif opener is None:
            owned = await wait_owned_fd(
                ring.openat(AT_FDCWD, file, flags, 0o666), lambda r: os_error(r, file)
            )
            fd = owned.fd
        else:
            fd = await run_sync_in_thread(opener, file, flags, limiter=limiter)
            if not isinstance(fd, int):
                raise TypeError("expected integer from opener")
            if fd < 0:
                raise ValueError(f"opener returned {fd}")
            owned = OwnedFd(fd)
            adopted = True
    st: tuple[int, int, int]
    mount = 0
    try:
        if inline is not None and not found and (not opened_inline or inline.learn()):
            found = inline.fstat(fd)  # (after an inline open: only once its mount is local)
        if found:
            assert inline is not None
            mount = inline.c.mnt_id  # (read now: another task may use inline.c after a yield)
            st = _STATX_OPEN.unpack_from(inline.statx)
            st = (st[1], st[2], st[0])
            if opened_inline:
                await cancel_shielded_checkpoint()  # the open's schedule point
        elif use_statx(ring):
            op = ring.statx(fd, b"", AT_EMPTY_PATH, STATX_BASIC_STATS)
            res = await wait_operation(op)
            if res < 0:
                raise os_error(res)
            st = _STATX_OPEN.unpack_from(ffi.buffer(op.output))
            st = (st[1], st[2], st[0])
        else:
            full = await run_sync_in_thread(os.fstat, fd, limiter=limiter)
            st = (full.st_mode, full.st_size, full.st_blksize)
        if _stat.S_ISDIR(st[0]):
            raise os_error(-errno.EISDIR, file)
        if _stat.S_ISFIFO(st[0]) and not adopted and flags & os.O_ACCMODE == os.O_RDONLY:
            await _fifo_wait_for_writer(ring, fd, file)
        positional = _stat.S_ISREG(st[0]) or _stat.S_ISBLK(st[0])
        pos = 0
        if mode.appending and positional:
            pos = st[1]
        elif adopted and positional:
            pos = os.lseek(fd, 0, os.SEEK_CUR)  # no LSEEK opcode; never blocks
        if owned is not None:
            owned.take()  # from here on the RawFile closes it
        return RawFile(
            ring,
            fd,
            file,
            readable=mode.readable,
            writable=mode.writable,
            appending=mode.appending,
            created=mode.creating,
            closefd=closefd,
            st=st,
            pos=pos,
            adopted=adopted,
            limiter=limiter,
            local=found,
            mount=mount,
            # An fd from elsewhere may be O_DIRECT: a synchronous RWF_NOWAIT read of it would
            # still wait for the device, so it reads on the ring (F_GETFL never blocks).
            direct=found and adopted and bool(fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT),
        )
    except BaseException:
        if owned is not None and owned.owned:
            await wait_operation(ring.close_fd(owned.take()))  # CLOSE: never withdrawn
        raise


async def _fifo_wait_for_writer(ring: Ring, fd: int, file: Any) -> None:
    """Make opening a FIFO for reading wait until a writer has opened it, as ``open(2)`` does.

    The OPENAT may not have waited: io_uring first tries it inline with ``O_NONBLOCK`` added
    (and cleared afterwards), and a FIFO opened so for reading needs no writer.  So, holding
    ``fd`` (a reader: writers' opens do not wait, and a writer that was waiting is released):

    * ``POLLHUP`` on ``fd`` means a writer came and left since ``fd`` was opened (a FIFO
      opened with ``O_NONBLOCK`` and no writer reports no hang-up until one has been there;
      data alone proves nothing: a writer gone before the open may have left it): done;
    * otherwise the FIFO is opened again -- ``/proc/self/fd/N``, the very same one -- in io-wq
      (``IOSQE_ASYNC``), where the open blocks like ``open(2)``: until a writer opens, or not at
      all if one is there.  A ``POLL_ADD`` for ``POLLHUP`` on ``fd`` runs meanwhile: a writer
      that comes and leaves before that open looks would make it wait for the *next* writer, so
      the poll's completion ends the open.  The second fd is closed at once.

    Cancellable: ``ASYNC_CANCEL`` interrupts io-wq's wait."""
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP (and POLLERR) are always reported
    if poller.poll(0):
        return
    target = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else file
    reopen = ring.openat(AT_FDCWD, target, os.O_RDONLY | os.O_CLOEXEC, 0, IOSQE_ASYNC)
    watch = ring.poll_add(fd, 0)  # completes on POLLHUP (the kernel always adds it)
    seen = False

    def writer_seen(op: Operation) -> None:
        nonlocal seen
        seen = True
        end_operation(reopen)

    watch.callback = writer_seen
    try:
        res = await wait_operation(reopen)
    finally:
        watch.callback = None
        await end_and_reap(watch)  # fd stays open (and its number ours) until its final CQE
    if res >= 0:
        os.close(res)  # a FIFO's close never blocks
        return
    if seen:
        return  # ended by the poll: a writer has been there
    raise os_error(res, file)


async def _close_inline(fd: int) -> None:
    """``CLOSE`` as a system call (a regular file on a local mount, see ``_inline.py``), then the
    schedule point the ring operation would have been."""
    try:
        os.close(fd)
    finally:
        await cancel_shielded_checkpoint()


async def _close_quietly(f: AsyncFile[Any]) -> None:
    with CancelScope(shield=True):
        try:
            async with f._lock:
                await f._close_u()
        except Exception:
            pass


@overload
async def open_file(
    file: str | os.PathLike[str] | int,
    mode: OpenBinaryMode,
    buffering: int = ...,
    encoding: str | None = ...,
    errors: str | None = ...,
    newline: str | None = ...,
    closefd: bool = ...,
    opener: Callable[[str, int], int] | None = ...,
    *,
    limiter: _AnyioCapacityLimiter | None = ...,
) -> AsyncFile[bytes]: ...


@overload
async def open_file(
    file: str | os.PathLike[str] | int,
    mode: OpenTextMode = ...,
    buffering: int = ...,
    encoding: str | None = ...,
    errors: str | None = ...,
    newline: str | None = ...,
    closefd: bool = ...,
    opener: Callable[[str, int], int] | None = ...,
    *,
    limiter: _AnyioCapacityLimiter | None = ...,
) -> AsyncFile[str]: ...


async def open_file(
    file: str | os.PathLike[str] | int,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
    *,
    limiter: _AnyioCapacityLimiter | None = None,
) -> AsyncFile[Any]:
    """Open a file with its I/O on the ring; the arguments are those of :func:`anyio.open_file`
    (and of the builtin :func:`open`).

    Returns a :class:`RawFile` (``buffering=0``), a :class:`BufferedFile` (binary) or a
    :class:`TextFile`; all are :class:`AsyncFile` (and :class:`anyio.AsyncFile`) objects.
    ``limiter`` applies to the worker-thread fallbacks (``opener``, ``SEEK_DATA``, kernels
    without STATX/FTRUNCATE).  Outside a uring loop (the trio fallback where io_uring is blocked,
    another anyio backend) it is :func:`anyio.open_file`, in worker threads.
    """
    return await open_any(file, mode, buffering, encoding, errors, newline, closefd, opener, limiter=limiter)


async def open_any(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
    *,
    limiter: _AnyioCapacityLimiter | None = None,
) -> AsyncFile[Any]:
    """:func:`open_file` without the overloads (``mode`` is any ``str``)."""
    runner = GLOBAL.runner
    if runner is None:  # no uring loop in this thread: anyio's implementation
        anyio_file: AsyncFile[Any] = await _anyio_open_file(
            file,
            mode,
            buffering,
            encoding,
            errors,
            newline,
            closefd,
            opener,  # type: ignore[call-overload]
        )
        return anyio_file
    ring = runner.ring
    if limiter is not None and not isinstance(limiter, _AnyioCapacityLimiter):
        raise TypeError(f"limiter must be a CapacityLimiter or None, not {limiter.__class__.__name__}")
    if not isinstance(file, (str, bytes, int)):
        file = os.fspath(file)
    if isinstance(file, bool):
        warnings.warn("bool is used as a file descriptor", RuntimeWarning, stacklevel=2)
        file = int(file)
    if type(buffering) is not int:
        buffering = _int_arg(buffering)
    if encoding is not None or errors is not None or newline is not None:
        _check_str_or_none(encoding, "encoding")
        _check_str_or_none(errors, "errors")
        _check_str_or_none(newline, "newline")
    if closefd is not True:
        closefd = bool(_int_arg(closefd))
    m = _MODES.get(mode) if type(mode) is str else None
    if m is None:
        m = _Mode(mode)
        if len(_MODES) < 64:
            _MODES[mode] = m
    if m.binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if m.binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if m.binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if m.binary and buffering == 1:
        warnings.warn(
            "line buffering (buffering=1) isn't supported in binary mode, "
            "the default buffer size will be used",
            RuntimeWarning,
            stacklevel=2,
        )
    if m.flags < 0:
        raise ValueError("Must have exactly one of create/read/write/append mode and at most one plus")
    if (isinstance(file, str) and "\0" in file) or (isinstance(file, bytes) and b"\0" in file):
        raise ValueError("embedded null byte")
    if cancel_pending():
        await checkpoint_if_cancelled()
    raw = await _open_raw(ring, file, m, closefd, opener, limiter)
    result: AsyncFile[Any] = raw
    try:
        line_buffering = False
        if buffering == 1 or (buffering < 0 and raw._isatty):
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = raw._blksize if raw._blksize > 1 else DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if m.binary:
                return raw
            raise ValueError("can't have unbuffered text I/O")
        buffered = BufferedFile(raw, buffering)
        result = buffered
        if m.binary:
            return buffered
        if newline is not None and newline not in ("", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline}")
        return TextFile(buffered, encoding, errors, newline, line_buffering, mode)
    except BaseException:
        await _close_quietly(result)
        raise


if not TYPE_CHECKING:  # at run time open_file is the implementation itself (no extra frame)
    open_any.__doc__ = open_file.__doc__
    open_any.__name__ = open_any.__qualname__ = "open_file"
    open_file = open_any
