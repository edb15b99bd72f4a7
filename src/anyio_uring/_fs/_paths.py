"""``anyio_uring.Path``: :class:`anyio.Path` with its I/O on the ring where the kernel has an opcode.

``Path`` subclasses :class:`anyio.Path` (so ``isinstance(p, anyio.Path)`` holds and every pure
method -- ``parent``, ``with_suffix``, ``/`` ... -- is anyio's) and overrides every method that
does I/O.  Each takes one of two paths:

======================================  ==================================================
method                                  how
======================================  ==================================================
``stat``, ``lstat``                     ``STATX`` -> ``os.stat_result`` (same fields as
                                        ``os.stat``)
``exists``, ``is_file``, ``is_dir``,    ``STATX`` (``lstat`` for ``is_symlink``), with
``is_symlink``, ``is_fifo``,            pathlib's error handling (ENOENT, ENOTDIR, EBADF,
``is_socket``, ``is_block_device``,     ELOOP and invalid paths give ``False``)
``is_char_device``
``samefile``                            two ``STATX``
``is_junction`` (3.12+)                 no I/O: always ``False`` on Linux
``mkdir``                               ``MKDIRAT`` (+ ``STATX`` for ``exist_ok``; parents
                                        created like pathlib)
``rmdir``                               ``UNLINKAT`` with ``AT_REMOVEDIR``
``unlink``                              ``UNLINKAT`` (``missing_ok`` like pathlib)
``rename``, ``replace``                 ``RENAMEAT`` (both replace an existing target, as
                                        ``os.rename`` does on POSIX)
``symlink_to``                          ``SYMLINKAT``
``hardlink_to``                         ``LINKAT`` (like ``link(2)``: no symlink following)
``open``, ``read_bytes``,               :func:`anyio_uring.open_file`: ``OPENAT``, ``STATX``,
``read_text``, ``write_bytes``,         ``READ``/``WRITE``, ``CLOSE``
``write_text``
``touch``                               ``utime`` in a worker thread (no opcode), then on a
                                        missing file ``OPENAT(O_CREAT)`` + ``CLOSE``
``absolute``, ``chmod``, ``lchmod``,    a worker thread (no io_uring opcode exists), as in
``owner``, ``group``, ``readlink``,     anyio; ``limiter`` applies
``resolve``, ``expanduser``, ``cwd``,
``home``, ``is_mount``, ``iterdir``,
``glob``, ``rglob``, ``walk`` (3.12+),
``copy``/``move``... (3.14+)
======================================  ==================================================

``STATX`` is preceded by an inline attempt that cannot block (a cached lookup and, on a local
file system, ``statx(2)``; see ``_inline.py``); ``STATX`` runs where it would block.

The ring paths raise exactly what the ``os`` functions raise (same ``OSError`` subclass, errno,
``filename`` and ``filename2``; for a path with a NUL byte, the ``ValueError`` of the running
CPython, whose text changed in 3.13).  ``STATX``, when masked or missing, falls back to ``os.stat``
in a worker thread.
"""

from __future__ import annotations

import errno
import os
import pathlib
import stat as _stat
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial, wraps
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import anyio

from .._core._cancel import wait_operation, wait_owned_fd
from .._core._context import GLOBAL
from .._core._run import cancel_pending, checkpoint, checkpoint_if_cancelled, current_runner
from .._core._traps import cancel_shielded_checkpoint
from .._native import lib
from . import _inline
from ._files import (
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    STATX_BASIC_STATS,
    AsyncFile,
    capabilities,
    open_any,
    os_error,
    ring_stat,
    run_sync_in_thread,
    stat_from_statx,
    stat_from_view,
)

if TYPE_CHECKING:
    from _typeshed import OpenBinaryMode, OpenTextMode, ReadableBuffer

    from .._ring import Ring

from typing import Self

__all__ = ["Path"]

_IGNORED_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
_EAGAIN = -errno.EAGAIN
_RAW = _inline.RAW
_unpack_digest = _inline.DIGEST.unpack_from
_stat_result = os.stat_result
_STATX_MODE = struct.Struct("=28xH")


def _ring() -> Ring:
    return current_runner().ring


def _raw_path(path: object) -> Any:
    if isinstance(path, anyio.Path):
        return path._path
    return path


def _nul_error(os_func: Callable[..., object], *paths: str | bytes) -> ValueError:
    """The ``ValueError`` that ``os_func(*paths)`` raises for a path with a NUL byte.

    CPython's text depends on the version, the type and the argument ("embedded null byte" on
    3.11 and 3.12 for ``str``; "rename: embedded null character in dst" on 3.13, for example),
    so it is taken from CPython itself.  ``os_func`` fails in its argument conversion, before any
    system call.
    """
    try:
        os_func(*paths)
    except ValueError as exc:
        return exc
    raise AssertionError(f"{os_func!r} accepted a path with a NUL byte: {paths!r}")


def _fs(os_func: Callable[..., object], *paths: Any) -> list[str | bytes]:
    """``os.fspath`` of each path; a NUL byte in one raises what ``os_func(*paths)`` raises, as
    pathlib does (``os_func`` is the ``os`` function that pathlib calls for the method)."""
    result: list[str | bytes] = [os.fspath(path) for path in paths]
    if any(("\0" if isinstance(path, str) else b"\0") in path for path in result):  # type: ignore[operator]
        raise _nul_error(os_func, *result) from None
    return result


P = TypeVar("P", bound="Path")


class _PathIterator(AsyncIterator[P], Generic[P]):
    """Pull the next item of a blocking iterator in a worker thread (like anyio's)."""

    def __init__(self, iterator: Iterator[Any], path: P) -> None:
        self._iterator = iterator
        self._path = path

    async def __anext__(self) -> P:
        path = self._path
        value = await run_sync_in_thread(next, self._iterator, None, limiter=path._limiter, abandon=True)
        if value is None:
            raise StopAsyncIteration
        return type(path)(value, limiter=path._limiter)


class Path(anyio.Path):
    """An :class:`anyio.Path` whose I/O runs on the ring (see the module docstring for the
    method table).  Outside a uring loop (the trio fallback where io_uring is blocked, another
    anyio backend) its methods are :class:`anyio.Path`'s, in worker threads."""

    __slots__ = ("_encoded",)  # the path as bytes for the kernel, made on first use
    _encoded: bytes

    # -- helpers -----------------------------------------------------------------------------

    def _thread(self, fn: Callable[..., Any], *args: Any, abandon: bool = False) -> Any:
        return run_sync_in_thread(fn, *args, limiter=self._limiter, abandon=abandon)

    def _raw(self) -> bytes:
        try:
            return self._encoded
        except AttributeError:
            raw = os.fsencode(self._path)
            if b"\0" in raw:
                raise _nul_error(os.stat, os.fspath(self._path)) from None
            self._encoded = raw
            return raw

    async def _stat(self, follow: bool) -> os.stat_result:
        ring = _ring()
        path = self._path
        raw = self._raw()
        statx, _, inline = capabilities(ring)
        if inline is not None:  # first without blocking (see _inline.py), else STATX as before
            if cancel_pending():
                await checkpoint_if_cancelled()
            res = lib.aur_inline_stat(inline.c, AT_FDCWD, raw, 0 if follow else 1)
            if res != 0:
                res = inline.stat_again(res, raw, follow)
            if res == 0:
                st = _stat_result(_unpack_digest(inline.st))
                await cancel_shielded_checkpoint()
                return st
            if res == _RAW:
                st = stat_from_view(inline.statx)
                await cancel_shielded_checkpoint()
                return st
            if res != _EAGAIN:
                await cancel_shielded_checkpoint()  # where the STATX's result would have come
                raise os_error(res, os.fspath(path))
        return await self._stat_ring(ring, raw, follow, statx)

    async def _stat_ring(self, ring: Ring, raw: bytes, follow: bool, statx: bool) -> os.stat_result:
        """:meth:`_stat` without the inline attempt: STATX, or ``os.stat`` in a worker thread."""
        path = self._path
        if statx:
            op = ring.statx(AT_FDCWD, raw, 0 if follow else AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS)
            res = await wait_operation(op)
            if res < 0:
                raise os_error(res, os.fspath(path))
            return stat_from_statx(op.output)
        fs = os.fspath(path)
        return await ring_stat(ring, AT_FDCWD, fs, 0, fs, follow=follow)  # the thread fallback

    async def _test_mode(self, test: Callable[[int], bool], follow: bool = True) -> bool:
        ring = _ring()
        statx, _, inline = capabilities(ring)
        try:
            raw = self._raw()
            if inline is not None:  # as in _stat, without making a stat_result or an OSError
                if cancel_pending():
                    await checkpoint_if_cancelled()
                res = lib.aur_inline_stat(inline.c, AT_FDCWD, raw, 0 if follow else 1)
                if res != 0:
                    res = inline.stat_again(res, raw, follow)
                if res >= 0:  # 0 or _RAW: the statx is there
                    [mode] = _STATX_MODE.unpack_from(inline.statx)
                    await cancel_shielded_checkpoint()
                    return test(mode)
                if res != _EAGAIN:  # ENOENT, ENOTDIR: no such file
                    await cancel_shielded_checkpoint()
                    return False
            st = await self._stat_ring(ring, raw, follow, statx)
        except OSError as exc:
            if exc.errno not in _IGNORED_ERRNOS:
                raise
            return False
        except ValueError:
            return False
        return test(st.st_mode)

    # -- STATX -------------------------------------------------------------------------------

    async def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return await self._stat(follow_symlinks)

    async def lstat(self) -> os.stat_result:
        return await self._stat(False)

    if sys.version_info >= (3, 12):

        async def exists(self, *, follow_symlinks: bool = True) -> bool:
            return await self._test_mode(lambda mode: True, follow_symlinks)

    else:

        async def exists(self) -> bool:
            return await self._test_mode(lambda mode: True)

    if sys.version_info >= (3, 13):

        async def is_dir(self, *, follow_symlinks: bool = True) -> bool:
            return await self._test_mode(_stat.S_ISDIR, follow_symlinks)

        async def is_file(self, *, follow_symlinks: bool = True) -> bool:
            return await self._test_mode(_stat.S_ISREG, follow_symlinks)

    else:

        async def is_dir(self) -> bool:
            return await self._test_mode(_stat.S_ISDIR)

        async def is_file(self) -> bool:
            return await self._test_mode(_stat.S_ISREG)

    async def is_symlink(self) -> bool:
        return await self._test_mode(_stat.S_ISLNK, follow=False)

    async def is_fifo(self) -> bool:
        return await self._test_mode(_stat.S_ISFIFO)

    async def is_socket(self) -> bool:
        return await self._test_mode(_stat.S_ISSOCK)

    async def is_block_device(self) -> bool:
        return await self._test_mode(_stat.S_ISBLK)

    async def is_char_device(self) -> bool:
        return await self._test_mode(_stat.S_ISCHR)

    if sys.version_info >= (3, 12):

        async def is_junction(self) -> bool:
            await checkpoint()
            return False

    async def samefile(self, other_path: str | os.PathLike[str]) -> bool:
        st = await self._stat(True)
        other = type(self)(_raw_path(other_path), limiter=self._limiter)
        other_st = await other._stat(True)
        return os.path.samestat(st, other_st)

    # -- directory entries -------------------------------------------------------------------

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        [path] = _fs(os.mkdir, self._path)
        res = await wait_operation(_ring().mkdirat(AT_FDCWD, path, mode))
        if res >= 0:
            return
        try:
            raise os_error(res, path)
        except FileNotFoundError:
            if not parents or self.parent == self:
                raise
            await self.parent.mkdir(parents=True, exist_ok=True)
            await self.mkdir(mode, parents=False, exist_ok=exist_ok)
        except OSError:
            # Like pathlib: do not rely on EEXIST (EACCES/EROFS may take priority).
            if not exist_ok or not await self.is_dir():
                raise

    async def rmdir(self) -> None:
        [path] = _fs(os.rmdir, self._path)
        res = await wait_operation(_ring().unlinkat(AT_FDCWD, path, AT_REMOVEDIR))
        if res < 0:
            raise os_error(res, path)

    async def unlink(self, missing_ok: bool = False) -> None:
        [path] = _fs(os.unlink, self._path)
        res = await wait_operation(_ring().unlinkat(AT_FDCWD, path, 0))
        if res < 0 and not (missing_ok and res == -errno.ENOENT):
            raise os_error(res, path)

    async def rename(self, target: str | pathlib.PurePath | anyio.Path) -> Self:
        return await self._rename(target, os.rename)

    async def replace(self, target: str | pathlib.PurePath | anyio.Path) -> Self:
        return await self._rename(target, os.replace)

    async def _rename(self, target: Any, os_func: Callable[..., object]) -> Self:
        target = _raw_path(target)
        src, dst = _fs(os_func, self._path, target)
        res = await wait_operation(_ring().renameat(AT_FDCWD, src, AT_FDCWD, dst))
        if res < 0:
            raise os_error(res, src, dst)
        return type(self)(target, limiter=self._limiter)

    async def symlink_to(
        self, target: str | bytes | os.PathLike[str] | os.PathLike[bytes], target_is_directory: bool = False
    ) -> None:
        tgt, link = _fs(os.symlink, _raw_path(target), self._path)
        res = await wait_operation(_ring().symlinkat(tgt, AT_FDCWD, link))
        if res < 0:
            raise os_error(res, tgt, link)

    async def hardlink_to(self, target: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
        src, dst = _fs(os.link, _raw_path(target), self._path)
        res = await wait_operation(_ring().linkat(AT_FDCWD, src, AT_FDCWD, dst, 0))
        if res < 0:
            raise os_error(res, src, dst)

    async def touch(self, mode: int = 0o666, exist_ok: bool = True) -> None:
        [path] = _fs(os.utime if exist_ok else partial(os.open, flags=os.O_RDONLY), self._path)
        if exist_ok:
            try:
                await self._thread(os.utime, path, None)  # no utimensat opcode
            except OSError:
                pass
            else:
                return
        flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
        if not exist_ok:
            flags |= os.O_EXCL
        ring = _ring()
        with await wait_owned_fd(ring.openat(AT_FDCWD, path, flags, mode), lambda r: os_error(r, path)) as fd:
            res = await wait_operation(ring.close_fd(fd.take()))  # CLOSE: never withdrawn
        if res < 0:
            raise os_error(res)

    # -- files -------------------------------------------------------------------------------

    @overload
    async def open(
        self,
        mode: OpenBinaryMode,
        buffering: int = ...,
        encoding: str | None = ...,
        errors: str | None = ...,
        newline: str | None = ...,
    ) -> AsyncFile[bytes]: ...

    @overload
    async def open(
        self,
        mode: OpenTextMode = ...,
        buffering: int = ...,
        encoding: str | None = ...,
        errors: str | None = ...,
        newline: str | None = ...,
    ) -> AsyncFile[str]: ...

    async def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> AsyncFile[Any]:
        return await open_any(self._path, mode, buffering, encoding, errors, newline, limiter=self._limiter)

    async def read_bytes(self) -> bytes:
        f = await open_any(self._path, "rb", 0, limiter=self._limiter)
        async with f:
            data: bytes = await f.read()
            return data

    if sys.version_info >= (3, 13):

        async def read_text(
            self, encoding: str | None = None, errors: str | None = None, newline: str | None = None
        ) -> str:
            f = await open_any(self._path, "r", -1, encoding, errors, newline, limiter=self._limiter)
            async with f:
                text: str = await f.read()
                return text

    else:

        async def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
            f = await open_any(self._path, "r", -1, encoding, errors, limiter=self._limiter)
            async with f:
                text: str = await f.read()
                return text

    async def write_bytes(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        async with await open_any(self._path, "wb", limiter=self._limiter) as f:
            return await f.write(view)

    async def write_text(
        self, data: str, encoding: str | None = None, errors: str | None = None, newline: str | None = None
    ) -> int:
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {data.__class__.__name__}")
        async with await open_any(self._path, "w", -1, encoding, errors, newline, limiter=self._limiter) as f:
            return await f.write(data)

    # -- worker threads (no io_uring opcode) -------------------------------------------------

    async def absolute(self) -> Self:
        return type(self)(await self._thread(self._path.absolute), limiter=self._limiter)

    async def chmod(self, mode: int, *, follow_symlinks: bool = True) -> None:
        await self._thread(partial(os.chmod, follow_symlinks=follow_symlinks), self._path, mode)

    async def lchmod(self, mode: int) -> None:
        await self._thread(self._path.lchmod, mode)

    @classmethod
    async def cwd(cls, *, limiter: anyio.CapacityLimiter | None = None) -> Self:
        path = await run_sync_in_thread(pathlib.Path.cwd, limiter=limiter)
        return cls(path, limiter=limiter)

    @classmethod
    async def home(cls, *, limiter: anyio.CapacityLimiter | None = None) -> Self:
        path = await run_sync_in_thread(pathlib.Path.home, limiter=limiter)
        return cls(path, limiter=limiter)

    async def expanduser(self) -> Self:
        return type(self)(await self._thread(self._path.expanduser, abandon=True), limiter=self._limiter)

    if sys.version_info >= (3, 13):

        async def owner(self, *, follow_symlinks: bool = True) -> str:
            func = partial(self._path.owner, follow_symlinks=follow_symlinks)
            result: str = await self._thread(func, abandon=True)
            return result

        async def group(self, *, follow_symlinks: bool = True) -> str:
            func = partial(self._path.group, follow_symlinks=follow_symlinks)
            result: str = await self._thread(func, abandon=True)
            return result

    else:

        async def owner(self) -> str:
            result: str = await self._thread(self._path.owner, abandon=True)
            return result

        async def group(self) -> str:
            result: str = await self._thread(self._path.group, abandon=True)
            return result

    async def readlink(self) -> Self:
        return type(self)(await self._thread(os.readlink, self._path), limiter=self._limiter)

    async def resolve(self, strict: bool = False) -> Self:
        func = partial(self._path.resolve, strict=strict)
        return type(self)(await self._thread(func, abandon=True), limiter=self._limiter)

    async def is_mount(self) -> bool:
        result: bool = await self._thread(os.path.ismount, self._path, abandon=True)
        return result

    async def iterdir(self) -> AsyncIterator[Self]:
        gen = await self._thread(self._path.iterdir, abandon=True)
        async for path in _PathIterator(gen, self):
            yield path

    if sys.version_info >= (3, 13):

        def glob(
            self, pattern: str | os.PathLike[str], *, case_sensitive: bool | None = None,
            recurse_symlinks: bool = False,
        ) -> AsyncIterator[Self]:  # fmt: skip
            gen = self._path.glob(pattern, case_sensitive=case_sensitive, recurse_symlinks=recurse_symlinks)  # type: ignore[arg-type]
            return _PathIterator(gen, self)

        def rglob(
            self, pattern: str | os.PathLike[str], *, case_sensitive: bool | None = None,
            recurse_symlinks: bool = False,
        ) -> AsyncIterator[Self]:  # fmt: skip
            gen = self._path.rglob(pattern, case_sensitive=case_sensitive, recurse_symlinks=recurse_symlinks)  # type: ignore[arg-type]
            return _PathIterator(gen, self)

    elif sys.version_info >= (3, 12):

        def glob(self, pattern: str, *, case_sensitive: bool | None = None) -> AsyncIterator[Self]:
            return _PathIterator(self._path.glob(pattern, case_sensitive=case_sensitive), self)

        def rglob(self, pattern: str, *, case_sensitive: bool | None = None) -> AsyncIterator[Self]:
            return _PathIterator(self._path.rglob(pattern, case_sensitive=case_sensitive), self)

    else:

        def glob(self, pattern: str) -> AsyncIterator[Self]:
            return _PathIterator(self._path.glob(pattern), self)

        def rglob(self, pattern: str) -> AsyncIterator[Self]:
            return _PathIterator(self._path.rglob(pattern), self)

    if sys.version_info >= (3, 12):

        async def walk(
            self,
            top_down: bool = True,
            on_error: Callable[[OSError], object] | None = None,
            follow_symlinks: bool = False,
        ) -> AsyncIterator[tuple[Self, list[str], list[str]]]:
            def get_next_value() -> tuple[pathlib.Path, list[str], list[str]] | None:
                try:
                    return next(gen)
                except StopIteration:
                    return None

            gen = self._path.walk(top_down, on_error, follow_symlinks)
            while True:
                value = await self._thread(get_next_value)
                if value is None:
                    return
                root, dirs, paths = value
                yield type(self)(root, limiter=self._limiter), dirs, paths

    if sys.version_info >= (3, 14):  # pragma: no cover - not the development interpreter

        async def copy(
            self,
            target: str | os.PathLike[str],
            *,
            follow_symlinks: bool = True,
            preserve_metadata: bool = False,
        ) -> Self:
            func = partial(
                self._path.copy, follow_symlinks=follow_symlinks, preserve_metadata=preserve_metadata
            )
            return type(self)(await self._thread(func, pathlib.Path(target)), limiter=self._limiter)

        async def copy_into(
            self,
            target_dir: str | os.PathLike[str],
            *,
            follow_symlinks: bool = True,
            preserve_metadata: bool = False,
        ) -> Self:
            func = partial(
                self._path.copy_into, follow_symlinks=follow_symlinks, preserve_metadata=preserve_metadata
            )
            return type(self)(await self._thread(func, pathlib.Path(target_dir)), limiter=self._limiter)

        async def move(self, target: str | os.PathLike[str]) -> Self:
            moved = await self._thread(self._path.move, pathlib.Path(target))
            return type(self)(moved, limiter=self._limiter)

        async def move_into(self, target_dir: str | os.PathLike[str]) -> Self:
            return type(self)(await self._thread(self._path.move_into, target_dir), limiter=self._limiter)


# -- outside a uring loop: anyio's worker-thread implementation ---------------------------------


def _ring_or_thread(ring_impl: Callable[..., Any], thread_impl: Callable[..., Any]) -> Callable[..., Any]:
    """``ring_impl`` where a uring loop runs in the calling thread, else anyio's ``thread_impl``.

    Outside a uring loop -- on the trio fallback where io_uring is blocked (``_fallback.py``), or
    under another anyio backend -- a ``Path`` does what an :class:`anyio.Path` does.  A plain
    function that returns the chosen method's awaitable: no extra coroutine frame.
    """

    @wraps(ring_impl)
    def method(*args: Any, **kwargs: Any) -> Any:
        if GLOBAL.runner is None:
            return thread_impl(*args, **kwargs)
        return ring_impl(*args, **kwargs)

    return method


def _outside_a_loop_use_anyio(cls: type[P]) -> type[P]:
    """Route every public method ``cls`` overrides through :func:`_ring_or_thread`."""
    for name, impl in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        base = anyio.Path.__dict__.get(name)
        if base is None:
            continue
        if isinstance(impl, classmethod) and isinstance(base, classmethod):
            setattr(cls, name, classmethod(_ring_or_thread(impl.__func__, base.__func__)))
        elif callable(impl) and callable(base):
            setattr(cls, name, _ring_or_thread(impl, base))
    return cls


_outside_a_loop_use_anyio(Path)
