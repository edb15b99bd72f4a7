"""Inline attempts: non-blocking system calls tried before a ring operation.

Why
---
io_uring runs some file operations in an io-wq worker thread whatever the file: ``STATX`` always
(``io_statx_prep`` sets ``REQ_F_FORCE_ASYNC``: ``->getattr`` may block), and ``OPENAT`` with
``O_CREAT``/``O_TRUNC``/``O_TMPFILE``.  A read-only ``OPENAT`` (a lookup through the dcache, with
``O_NONBLOCK`` added for the ``->open`` and cleared afterwards), a ``READ`` of cached pages and a
``CLOSE`` it tries inline, inside ``io_uring_enter``.  Each io-wq hand-off costs a thread
wake-up (tens of microseconds on a VM) that many concurrent tasks overlap and one task cannot:
``Path.stat()`` and ``open()`` (``OPENAT`` + ``STATX``) of one task were bound by it.  And every
ring operation, even one the kernel completes inline, costs a round trip through the loop.

What
----
Where the kernel can *say* "this would block" (``EAGAIN``), the loop asks it directly first, and
only on "would block" queues the ring operation exactly as it did before (cancellable, its fd
owned through ``wait_owned_fd``, its buffers lent until the final CQE):

=====================================  =======================================================
``Path.stat``/``lstat``/``exists``/    ``aur_inline_stat``: ``openat2(O_PATH, RESOLVE_CACHED)``
``is_*``/``samefile``                  (a dcache-only lookup: ``EAGAIN`` instead of I/O or
                                       sleeping), the fd's mount
                                       (``name_to_handle_at``, which does not call
                                       ``->getattr``), ``statx(fd, "", AT_EMPTY_PATH)`` if that
                                       mount is local, ``close``
``open()`` without ``O_CREAT`` or      ``aur_inline_open``: io_uring's own inline ``OPENAT``
``O_TRUNC`` (``"r"``, ``"r+"``)        attempt as a system call (``openat2(flags | O_NONBLOCK,
                                       RESOLVE_CACHED)``, ``O_NONBLOCK`` cleared with
                                       ``F_SETFL``), then the new fd's ``statx`` if local
the ``STATX`` of an open file (open,   ``aur_inline_fstat``: ``statx(fd, "", AT_EMPTY_PATH)``
``seek(0, SEEK_END)``, after appends)  if the fd's mount is local
``READ`` of a regular file on a        ``preadv2(RWF_NOWAIT)`` (``os.preadv``): ``EAGAIN``
local mount                            instead of waiting for pages; a short result is taken
                                       as the end of the file only when a second
                                       ``RWF_NOWAIT`` read at its end returns 0
``CLOSE`` of a regular file on a       ``close(2)``: these file systems have no ``->flush``, so
local mount                            io_uring's ``CLOSE`` runs exactly this inline too
=====================================  =======================================================

Each attempt is one Python -> C call (``aur_inline_*`` take a per-ring ``aur_fsinline`` whose
``statx`` field is decoded through a view made once; ``os.preadv``/``os.close`` are single calls;
a short read takes a second one).  What an attempt returns is what the ring operation would
have returned, so the caller continues as after the ring operation -- after a schedule point
that is not a cancel point (``cancel_shielded_checkpoint``): the operation happened, its result
is delivered, and a cancellation lands at the next checkpoint, exactly as when a cancelled
task's ring operation completes.  (Callers test for a pending cancellation first, as they do
before queueing an operation.)

Why an attempt never blocks
---------------------------
* The lookups are ``RESOLVE_CACHED``: the kernel walks the path in RCU mode only and fails with
  ``EAGAIN`` whatever needs I/O or sleeping: a dentry not in the cache, a file system whose
  ``->d_revalidate`` cannot answer in RCU mode (NFS needing revalidation, CIFS, 9p, cluster
  file systems), an automount point, a symlink whose body is not in memory or whose atime is
  due for an update.  ``ENOENT`` and ``ENOTDIR`` from such a walk come from cached dentries the
  file system accepted, which is what a blocking lookup returns at that instant; every other
  error is handed to the ring, which produces it itself.
* ``->getattr`` runs only on *local* mounts: the file systems in :data:`LOCAL_MAGICS`, which fill
  ``stat`` from the in-memory inode (no I/O, and no ``AT_STATX_*`` sync semantics to get wrong).
  The mount is identified before any ``->getattr`` by its unique id (``AT_HANDLE_MNT_ID_UNIQUE``)
  and classified once per mount by its super-block magic (``statmount``); unique mount ids are
  never reused.  On other mounts the ring's ``STATX`` runs as before.
* ``O_PATH`` opens call no ``->open``; the read-only open calls ``->open`` with ``O_NONBLOCK``
  as io_uring's inline attempt does (a FIFO then does not wait for a writer: see
  ``_fifo_wait_for_writer``; a lease break answers ``EAGAIN`` -> the ring, where it waits).
* ``RWF_NOWAIT`` reads answer ``EAGAIN`` instead of waiting for a page or a lock, and
  ``EOPNOTSUPP`` on files without ``FMODE_NOWAIT`` (the file then stops trying).  (A
  synchronous ``O_DIRECT`` read would still wait for the device: an adopted fd or an opener's
  fd with ``O_DIRECT`` reads on the ring.  Our own opens never set it; an fd switched to
  ``O_DIRECT`` with ``fcntl`` after the open is not noticed.)
* ``close`` of a regular file on a local mount: no ``->flush``; the final ``fput`` runs in this
  thread on return from the system call, as it does after io_uring's inline ``CLOSE``.

When there are none
-------------------
Masked with ``ANYIO_URING_DISABLE=inline_fs`` (or ``RingOptions(disable={"inline_fs"})``); when
``STATX`` is masked or missing (the worker-thread fallbacks stay as they are); and on kernels
without ``openat2``'s ``RESOLVE_CACHED`` (5.12), ``statmount`` (6.8) or
``AT_HANDLE_FID``/``AT_HANDLE_MNT_ID_UNIQUE`` (6.12), or where a seccomp policy refuses them
(checked once per process with a stat of ``/``).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any, Final

from .._native import ffi, lib

if TYPE_CHECKING:
    from .._ring import Ring

__all__ = ["LOCAL_MAGICS", "Inline", "inline_for", "nowait_read"]

#: Super-block magics of the file systems whose ``->getattr`` reads only the in-memory inode and
#: whose regular files have no ``->flush`` (include/uapi/linux/magic.h).  (Not f2fs: it has a
#: ``->flush``; not overlayfs: its getattr is that of the layers, which may be anything.)
LOCAL_MAGICS: Final[dict[int, str]] = {
    0xEF53: "ext2/ext3/ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
}

UNKNOWN_MOUNT: Final = lib.AUR_INLINE_UNKNOWN_MOUNT
#: ``aur_inline_stat``: the ``statx`` is there but not its digest (a time in ns overflows).
RAW: Final = lib.AUR_INLINE_RAW
#: ``aur_statres``: ``os.stat_result``'s 19 fields, in its order.
DIGEST: Final = struct.Struct("=QQQQQQQqqqdddqqqQQQ")
_LOCAL_MAX: Final = lib.AUR_INLINE_LOCAL_MAX
_EAGAIN: Final = -errno.EAGAIN
_RWF_NOWAIT: Final = getattr(os, "RWF_NOWAIT", 8)
_MAX_RW: Final = 0x7FFFF000
_AT_FDCWD: Final = -100
#: Inline stat results that are final: success, and the errors of a cached lookup.
_FINAL: Final = frozenset({0, RAW, -errno.ENOENT, -errno.ENOTDIR})

#: unique mount id -> whether it is local, for the whole process (such ids are never reused).
_MOUNTS: dict[int, bool] = {}
#: Whether the kernel has what the attempts need (None: not checked yet).
_SUPPORTED: list[bool] = []


class Inline:
    """One ring's inline-attempt state: the C ``aur_fsinline`` (the table of local mounts the C
    side checks, the ``struct statx`` it fills and that statx as ``os.stat_result`` fields) and
    views of those."""

    __slots__ = ("c", "no_nowait", "st", "statx")

    def __init__(self) -> None:
        self.c: Any = ffi.new("aur_fsinline *")
        #: The ``struct statx`` the last successful attempt filled (a view, made once).
        self.statx: Any = ffi.buffer(self.c.statx)
        #: Its ``aur_statres`` (:data:`DIGEST`), after ``aur_inline_stat`` returned 0.
        self.st: Any = ffi.buffer(ffi.addressof(self.c, "st"))
        assert len(self.st) == DIGEST.size
        #: Local mounts whose files refused ``RWF_NOWAIT`` (tmpfs): no read attempts there.
        self.no_nowait: set[int] = set()

    def learn(self) -> bool:
        """After ``UNKNOWN_MOUNT``: whether the mount ``c.mnt_id`` is local (classified once per
        process with ``statmount``); a local one joins the C table, so the next attempt on it
        succeeds in one call."""
        c = self.c
        mnt_id = c.mnt_id
        if not mnt_id:
            return False
        local = _MOUNTS.get(mnt_id)
        if local is None:
            magic = lib.aur_mount_magic(mnt_id)
            local = magic in LOCAL_MAGICS
            if len(_MOUNTS) >= 4096:
                _MOUNTS.clear()
            _MOUNTS[mnt_id] = local
        if local:
            n = c.nlocal
            if n >= _LOCAL_MAX:
                n = 0  # a full table starts over (more than 32 local mounts in use: rare)
            c.local[n] = mnt_id
            c.nlocal = n + 1
        return local

    def stat(self, path: bytes, follow: bool) -> int:
        """``aur_inline_stat`` (learning the mount on first sight): 0 -> :attr:`st` and
        :attr:`statx` hold the result, :data:`RAW` -> :attr:`statx` does; ``-errno`` final
        (ENOENT, ENOTDIR); ``-EAGAIN``: use the ring."""
        return self.stat_again(lib.aur_inline_stat(self.c, _AT_FDCWD, path, 0 if follow else 1), path, follow)

    def stat_again(self, res: int, path: bytes, follow: bool) -> int:
        """:meth:`stat` after its first call returned ``res`` (the hot path calls
        ``aur_inline_stat`` itself and comes here unless that returned 0)."""
        if res == UNKNOWN_MOUNT and self.learn():
            res = lib.aur_inline_stat(self.c, _AT_FDCWD, path, 0 if follow else 1)
        if res in _FINAL:
            return res
        return _EAGAIN

    def fstat(self, fd: int) -> bool:
        """``aur_inline_fstat``: whether :attr:`statx` now holds ``fd``'s statx (else: use the
        ring)."""
        res: int = lib.aur_inline_fstat(self.c, fd)
        if res == UNKNOWN_MOUNT and self.learn():
            res = lib.aur_inline_fstat(self.c, fd)
        return res == 0


def inline_for(ring: Ring, statx: bool) -> Inline | None:
    """A new :class:`Inline` for ``ring``, or ``None`` if inline attempts are off for it (masked,
    ``STATX`` off -- ``statx`` says whether it runs on the ring -- or a kernel without what they
    need)."""
    if not statx or "inline_fs" in ring.support.disabled:
        return None
    if not _SUPPORTED:
        _SUPPORTED.append(_probe())
    return Inline() if _SUPPORTED[0] else None


def _probe() -> bool:
    """One stat of ``/``: ``openat2(RESOLVE_CACHED)`` works, the mount has a unique id, and
    ``statmount`` classifies it."""
    probe = Inline()
    if lib.aur_inline_stat(probe.c, _AT_FDCWD, b"/", 0) != UNKNOWN_MOUNT or not probe.c.mnt_id:
        return False
    magic: int = lib.aur_mount_magic(probe.c.mnt_id)
    return magic >= 0


def nowait_read(fd: int, buf: Any, pos: int) -> int:
    """``preadv2(fd, buf, pos, RWF_NOWAIT)``: the bytes read -- what a blocking ``pread`` would
    return, also at the end of the file -- or -1 (it would wait: use the ring), or -2 (the file
    does not support ``RWF_NOWAIT``: stop trying)."""
    try:
        n = os.preadv(fd, (buf,), pos, _RWF_NOWAIT)
    except BlockingIOError:
        return -1
    except OSError as exc:
        return -2 if exc.errno == errno.EOPNOTSUPP else -1  # other errors: the ring reports them
    if n and n < len(buf) and n != _MAX_RW:
        # Short: the end of the file -- or cached pages followed by uncached ones, which
        # RWF_NOWAIT returns as a short read.  Only a 0 at the end says which.
        with memoryview(buf) as view:
            try:
                more = os.preadv(fd, (view[n:],), pos + n, _RWF_NOWAIT)
            except OSError:
                return -1
        if more:
            return -1  # the ring reads the whole range again (nothing was consumed)
    return n
