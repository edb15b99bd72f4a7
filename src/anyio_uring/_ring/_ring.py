"""Ring and Operation: the ledger of in-flight operations and the memory they own.

Theory of operation
-------------------
A :class:`Ring` is one io_uring instance owned by one thread.  Each submitted SQE is an
:class:`Operation` with a unique ``user_data``: a 63-bit counter that is never reused while the
ring lives, so it doubles as a generation tag -- a stale or duplicated CQE finds no live
operation and is *rejected* (counted in ``Ring.rejected_cqes``), it can never complete the wrong
one.  ``user_data`` values with the top bit set are the runtime's own (cancel requests).

Ownership rule (DESIGN.md, invariant 1): everything the kernel may read or write for an
operation -- buffers exported with ``ffi.from_buffer``, sockaddr/statx/siginfo output buffers,
path strings, timespecs -- is referenced by the Operation from the moment its SQE is written until
its *final* CQE is reaped (multishot: the CQE without ``IORING_CQE_F_MORE``).  The single place
where that memory is let go is :meth:`Operation._complete` (via ``_release``).  Cancelling,
closing a socket, dropping the last reference or closing the ring never releases it earlier:
* ``Ring.cancel(op)`` withdraws an SQE that the kernel has not seen yet (no syscall), otherwise
  queues ``IORING_OP_ASYNC_CANCEL`` and leaves ``op`` alive until its own final CQE, whatever the
  cancel request itself answers (0, -ENOENT, -EALREADY: measured to carry no information);
* ``Ring.close()`` cancels every live operation and reaps until none is left before unmapping;
  operations that still do not finish within ``drain_timeout`` have their memory parked in
  ``_ABANDONED`` for the life of the process (leaked, never trampled) -- closing the ring fd is
  not a barrier: the kernel can write into a buffer after ``close()`` returns;
* live rings are referenced from ``_LIVE_RINGS`` until closed, so garbage collection cannot free
  an in-flight operation's memory.

The park/reschedule contract: whoever waits sets ``op.callback``; the ring calls it exactly once,
on the final CQE, from inside ``Ring.wait``.  ``Ring.cancel`` returning ``True`` means the
operation was withdrawn and the callback will *not* be called (trio's ``Abort.SUCCEEDED``);
``False`` means the callback is still owed (``Abort.FAILED``).
"""

from __future__ import annotations

import errno
import math
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from .._errors import ForkedRingError, RingClosedError, UringInternalError
from .._native import ffi, lib
from ._msghdr import MsgHdr
from ._ops import DEFAULT_FACTS as _DEFAULT_FACTS
from ._ops import FACTS as _FACTS
from ._ops import (
    OP_ACCEPT,
    OP_CLOSE,
    OP_CONNECT,
    OP_FSYNC,
    OP_FTRUNCATE,
    OP_LINKAT,
    OP_MKDIRAT,
    OP_NOP,
    OP_OPENAT,
    OP_POLL_ADD,
    OP_READ,
    OP_RECV,
    OP_RECVMSG,
    OP_RENAMEAT,
    OP_SEND,
    OP_SEND_ZC,
    OP_SENDMSG,
    OP_SHUTDOWN,
    OP_SOCKET,
    OP_STATX,
    OP_SYMLINKAT,
    OP_TIMEOUT,
    OP_UNLINKAT,
    OP_WAITID,
    OP_WRITE,
    OpFacts,
)
from ._probe import OPCODE_NAMES, KernelSupport, RingOptions, unavailable_error

__all__ = ["Ledger", "OpState", "Operation", "Ring"]

_U64: Final = (1 << 64) - 1
_MAX_RW: Final = 0x7FFFF000  # the kernel's MAX_RW_COUNT: longer transfers are short anyway
_TAG_CANCEL: Final[int] = lib.AUR_UD_TAG_CANCEL
_F_MORE: Final[int] = lib.AUR_CQE_F_MORE
_F_BUFFER: Final[int] = lib.AUR_CQE_F_BUFFER
_BUFFER_SHIFT: Final[int] = lib.AUR_CQE_BUFFER_SHIFT
_EBADFD: Final = 77
#: The longest bounded wait (2**62 ns, ~146 years).  Longer finite timeouts are clamped to it: the
#: nanosecond count must fit an int64, and so must ``now + timeout`` for the absolute TIMEOUT SQE
#: used when ``IORING_ENTER_EXT_ARG`` is unavailable (aur.c, ``arm_fallback_timeout``).
_MAX_WAIT_NS: Final = 1 << 62
_MAX_WAIT_S: Final = _MAX_WAIT_NS / 1e9
_CQE = struct.Struct("QiI")

_facts_get = _FACTS.get

#: Memory of operations that outlived a ring's drain: kept for the life of the process.
_ABANDONED: list[object] = []
#: Rings not yet closed (strong references: GC must never free in-flight memory).
_LIVE_RINGS: set[Ring] = set()


class OpState(IntEnum):
    """Lifecycle of an :class:`Operation` (transitions are checked; see ``_TRANSITIONS``)."""

    QUEUED = 0
    """SQE written into the SQ ring but not yet visible to the kernel: can be withdrawn."""
    SUBMITTED = 1
    """Visible to the kernel, which owns the operation's memory until the final CQE."""
    CANCEL_REQUESTED = 2
    """``IORING_OP_ASYNC_CANCEL`` queued; still owned by the kernel until the final CQE."""
    DONE = 3
    """Final CQE reaped (or SQE withdrawn before submission); memory released."""


# Internally QUEUED and SUBMITTED are one state, _PENDING, told apart by the SQE's slot.
_PENDING: Final = 0
_TRANSITIONS: Final[dict[tuple[int, str], int]] = {
    (_PENDING, "cancel"): OpState.CANCEL_REQUESTED,
    (_PENDING, "withdraw"): OpState.DONE,
    (_PENDING, "final"): OpState.DONE,
    (OpState.CANCEL_REQUESTED, "final"): OpState.DONE,
}


class Operation:
    """One submitted SQE and everything the kernel may touch for it.

    ``result`` is the final CQE's ``res`` (``-errno`` on failure) and ``cqe_flags`` its flags,
    both ``None`` until :attr:`done`.  ``output`` is a buffer the ring allocated for the kernel
    to fill (sockaddr, statx, siginfo), readable after completion.
    """

    __slots__ = (
        "__weakref__",
        "_pins",
        "_state",
        "abandoned",
        "buffers",
        "callback",
        "cqe_flags",
        "facts",
        "multishot",
        "on_more",
        "opcode",
        "output",
        "pinned_bytes",
        "result",
        "ring",
        "slot",
        "user_data",
    )

    def __init__(
        self,
        ring: Ring,
        user_data: int,
        opcode: int,
        pins: tuple[Any, ...],
        pinned_bytes: int,
        output: Any,
        multishot: bool,
    ) -> None:
        self.ring = ring
        self.user_data = user_data
        self.opcode = opcode
        self.slot = -1
        self._state: int = _PENDING
        self._pins = pins
        self.pinned_bytes = pinned_bytes
        self.output = output
        self.multishot = multishot
        #: What this opcode promises (fd result, cancellability, result-vs-release CQE).
        self.facts: OpFacts = _facts_get(opcode, _DEFAULT_FACTS)
        self.abandoned = False
        #: The ProvidedBufferRing a BUFFER_SELECT receive picks from (None otherwise).
        self.buffers: Any = None
        self.result: int | None = None
        self.cqe_flags: int | None = None
        #: Called once with this operation when its final CQE is reaped.
        self.callback: Callable[[Operation], object] | None = None
        #: Multishot only: called with (op, res, flags) for each CQE that has F_MORE.
        self.on_more: Callable[[Operation, int, int], object] | None = None

    def __repr__(self) -> str:
        name = OPCODE_NAMES.get(self.opcode, str(self.opcode))
        return f"<Operation {name} ud={self.user_data:#x} {self.state.name} result={self.result}>"

    @property
    def state(self) -> OpState:
        if self._state == _PENDING:
            queued = self.slot >= self.ring._c.sq_published
            return OpState.QUEUED if queued else OpState.SUBMITTED
        return OpState(self._state)

    @property
    def returns_fd(self) -> bool:
        """A result ``>= 0`` is a new fd (closed by the ring if nobody takes it)."""
        return self.facts.returns_fd

    @property
    def done(self) -> bool:
        return self._state == OpState.DONE

    def cancel(self) -> bool:
        """Shorthand for ``self.ring.cancel(self)``."""
        return self.ring.cancel(self)

    def unwrap(self) -> int:
        """The result, or the ``OSError`` a negative result stands for."""
        res = self.result
        if res is None:
            raise UringInternalError(f"{self!r} has no result yet")
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return res

    def abandon(self) -> None:
        """Nobody will consume this operation's result: fds it returns are closed (once)."""
        if self.abandoned:
            return  # an fd was (or will be) closed already; its number may belong to a new file
        self.abandoned = True
        self.callback = None
        self.on_more = None
        if self._state == OpState.DONE:
            self._dispose(self.result, self.cqe_flags or 0)

    # -- called by Ring only --------------------------------------------------------------

    def _transition(self, event: str) -> None:
        new = _TRANSITIONS.get((self._state, event))
        if new is None:
            raise UringInternalError(f"illegal transition {event!r} from {self.state.name} for {self!r}")
        self._state = new

    def _release(self) -> None:
        """THE place where memory lent to the kernel is given back (after the final CQE)."""
        pins = self._pins
        if pins:
            for pin in pins:
                if isinstance(pin, ffi.CData):
                    ffi.release(pin)
                elif isinstance(pin, MsgHdr):
                    pin.release_pins()
            self._pins = ()
        self.ring._pinned_bytes -= self.pinned_bytes

    def _dispose(self, res: int | None, flags: int) -> None:
        """Nobody will take this result: close the fd it carries, recycle its buffer."""
        if self.returns_fd and res is not None and res >= 0:
            try:
                os.close(res)
            except OSError:
                pass
        if flags & _F_BUFFER and self.buffers is not None and not self.buffers.closed:
            self.buffers.recycle(flags >> _BUFFER_SHIFT)

    def _complete(self, res: int, flags: int) -> None:
        self._transition("final")
        if self.result is None:  # else: the result CQE came first (result_on_more)
            self.result = res
            self.cqe_flags = flags
        self._release()
        callback = self.callback
        self.callback = None
        self.on_more = None
        if self.abandoned:
            self._dispose(res, flags)
        elif callback is not None:
            callback(self)

    def _intermediate(self, res: int, flags: int) -> None:
        if self.facts.result_on_more and not self.multishot:
            # The result CQE (SEND_ZC's byte count): the memory stays lent until the final one.
            self.result = res
            self.cqe_flags = flags
            return
        on_more = self.on_more
        if on_more is not None and not self.abandoned:
            on_more(self, res, flags)
        else:
            self._dispose(res, flags)  # e.g. a multishot accept's fd that nobody will take


@dataclass(frozen=True, slots=True)
class Ledger:
    """A snapshot of a ring's in-flight operations."""

    count: int
    bytes_pinned: int
    by_state: dict[str, int]
    by_opcode: dict[str, int]


def _check_fd(fd: int) -> int:
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"file descriptor must be a non-negative int, got {fd!r}")
    return fd


def _path_pin(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> Any:
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte in path")
    return ffi.new("char[]", raw)


class Ring:
    """One io_uring owned by the creating thread.

    Operations are queued by the ``prep`` methods (one C call each) and submitted, waited for and
    reaped by :meth:`wait` (one C call per loop tick).  See the module docstring for the rules.
    """

    def __init__(self, options: RingOptions | None = None) -> None:
        opts = options if options is not None else RingOptions()
        self.options = opts
        c = lib.aur_ring_new()
        if c == ffi.NULL:
            raise MemoryError("cannot allocate the ring structure")
        self._c: Any = ffi.gc(c, lib.aur_ring_free)
        cq_entries = opts.resolved_cq_entries()
        rc = lib.aur_setup(self._c, opts.entries, cq_entries, opts.setup_allow_mask())
        if rc < 0:
            raise unavailable_error(-rc, opts.entries)
        self._owner = threading.get_ident()
        self._pid = os.getpid()
        self._ops: dict[int, Operation] = {}
        self._next_ud = 1
        self._pinned_bytes = 0
        self._closed = False
        self._forked = False
        self._buffer_rings: dict[int, Any] = {}
        self._cap = max(self._c.cq_entries, 256)
        self._out = ffi.new("aur_cqe[]", self._cap)
        self._out_view = memoryview(ffi.buffer(self._out))
        #: CQEs whose user_data matched no live operation (stale or duplicate): rejected.
        self.rejected_cqes = 0
        #: CQEs of our own ASYNC_CANCEL requests (their result decides nothing).
        self.cancel_cqes = 0
        #: Operations withdrawn before the kernel saw them.
        self.withdrawn = 0
        self.support = self._probe(opts)
        _LIVE_RINGS.add(self)

    def _probe(self, opts: RingOptions) -> KernelSupport:
        ops = ffi.new("uint8_t[256]")
        rc = lib.aur_probe(self._c, ops)
        opcodes = frozenset(i for i in range(256) if ops[i]) if rc >= 0 else frozenset()
        disabled = opts.effective_disable()
        buffer_rings = False
        if "buffer_rings" not in disabled:
            pbuf = ffi.new("aur_pbuf *")
            if lib.aur_pbuf_register(self._c, pbuf, 1, 65535, 0) == 0:
                buffer_rings = True
                lib.aur_pbuf_unregister(self._c, pbuf)
        return KernelSupport(
            kernel_release=os.uname().release,
            setup_flags=self._c.setup_flags,
            features=self._c.features,
            opcodes=opcodes,
            disabled=disabled,
            ext_arg=bool(self._c.use_ext_arg),
            registered_fd=bool(self._c.use_registered_fd),
            buffer_rings=buffer_rings,
            sq_entries=self._c.sq_entries,
            cq_entries=self._c.cq_entries,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._ops)} in flight"
        return f"<Ring fd={self._c.ring_fd} sq={self._c.sq_entries} cq={self._c.cq_entries} {state}>"

    # -- introspection ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fd(self) -> int:
        return int(self._c.ring_fd)

    @property
    def inflight(self) -> int:
        """Number of operations whose final CQE has not been reaped."""
        return len(self._ops)

    @property
    def bytes_pinned(self) -> int:
        """Bytes of caller memory currently lent to the kernel by in-flight operations."""
        return self._pinned_bytes

    def ledger(self) -> Ledger:
        by_state: dict[str, int] = {}
        by_opcode: dict[str, int] = {}
        for op in self._ops.values():
            st = op.state.name
            by_state[st] = by_state.get(st, 0) + 1
            name = OPCODE_NAMES.get(op.opcode, str(op.opcode))
            by_opcode[name] = by_opcode.get(name, 0) + 1
        return Ledger(len(self._ops), self._pinned_bytes, by_state, by_opcode)

    def counters(self) -> dict[str, int]:
        """Native and Python-side counters (enters, flushes, rejected CQEs, ...)."""
        c = self._c
        return {
            "enters": c.enters,
            "sq_full_flushes": c.sq_full_flushes,
            "overflow_flushes": c.overflow_flushes,
            "sqes_written": c.sq_written,
            "rejected_cqes": self.rejected_cqes,
            "cancel_cqes": self.cancel_cqes,
            "withdrawn": self.withdrawn,
        }

    # -- queueing (the one path every prep method goes through) -----------------------------

    def _check_usable(self) -> None:
        if self._closed:
            if self._forked or self._c.forked:
                raise ForkedRingError(
                    "this io_uring belongs to the parent process: it cannot be used after fork(); "
                    "start a new event loop in the child"
                )
            raise RingClosedError("the ring is closed")
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                "an io_uring can only be used by the thread that created it (its event loop's thread); "
                "use the loop's thread-safe entry points from other threads"
            )

    def _queue(
        self,
        opcode: int,
        prep: Callable[..., int],
        args: tuple[Any, ...],
        pins: tuple[Any, ...] = (),
        nbytes: int = 0,
        output: Any = None,
        *,
        multishot: bool = False,
    ) -> Operation:
        if self._closed or threading.get_ident() != self._owner:
            self._check_usable()
        ud = self._next_ud
        self._next_ud = ud + 1
        op = Operation(self, ud, opcode, pins, nbytes, output, multishot)
        slot = prep(self._c, ud, *args)
        if slot < 0:
            slot = self._prep_failed(slot, prep, ud, args)
        op.slot = slot
        self._ops[ud] = op
        self._pinned_bytes += nbytes
        return op

    def _prep_failed(self, rc: int, prep: Callable[..., int], ud: int, args: tuple[Any, ...]) -> int:
        # -EBUSY: the SQ is full and the kernel would not take more; reap and retry.
        for _ in range(100):
            if rc != -errno.EBUSY:
                break
            self.wait(timeout=0.01)
            rc = prep(self._c, ud, *args)
            if rc >= 0:
                return rc
        if rc == -_EBADFD:
            self._closed = True
            self._check_usable()
        raise OSError(-rc, f"cannot queue an io_uring operation: {os.strerror(-rc)}")

    # -- prep methods: one per opcode -------------------------------------------------------

    def nop(self, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_NOP, lib.aur_prep_nop, (sqe_flags,))

    def read(self, fd: int, buf: Any, offset: int = -1, sqe_flags: int = 0) -> Operation:
        """Read into the writable buffer ``buf`` at ``offset`` (-1: the file position)."""
        pin = ffi.from_buffer(buf, require_writable=True)
        n = min(len(pin), _MAX_RW)
        args = (sqe_flags, _check_fd(fd), pin, n, offset & _U64)
        return self._queue(OP_READ, lib.aur_prep_read, args, (pin,), len(pin))

    def write(self, fd: int, data: Any, offset: int = -1, sqe_flags: int = 0) -> Operation:
        """Write the bytes-like ``data`` at ``offset`` (-1: the file position)."""
        pin = ffi.from_buffer(data)
        n = min(len(pin), _MAX_RW)
        args = (sqe_flags, _check_fd(fd), pin, n, offset & _U64)
        return self._queue(OP_WRITE, lib.aur_prep_write, args, (pin,), len(pin))

    def recv(self, fd: int, buf: Any, flags: int = 0, sqe_flags: int = 0) -> Operation:
        pin = ffi.from_buffer(buf, require_writable=True)
        args = (sqe_flags, _check_fd(fd), pin, min(len(pin), _MAX_RW), flags, 0, 0)
        return self._queue(OP_RECV, lib.aur_prep_recv, args, (pin,), len(pin))

    def recv_select(
        self, fd: int, buffers: Any, length: int = 0, flags: int = 0, *, multishot: bool = False
    ) -> Operation:
        """Receive into a buffer the kernel picks from ``buffers`` (a ProvidedBufferRing)."""
        ioprio = lib.AUR_RECV_MULTISHOT if multishot else 0
        args = (lib.AUR_SQE_BUFFER_SELECT, _check_fd(fd), ffi.NULL, length, flags, ioprio, buffers.bgid)
        op = self._queue(OP_RECV, lib.aur_prep_recv, args, (buffers,), multishot=multishot)
        op.buffers = buffers
        return op

    def send(self, fd: int, data: Any, flags: int = 0, sqe_flags: int = 0) -> Operation:
        pin = ffi.from_buffer(data)
        args = (sqe_flags, _check_fd(fd), pin, min(len(pin), _MAX_RW), flags)
        return self._queue(OP_SEND, lib.aur_prep_send, args, (pin,), len(pin))

    def send_zc(self, fd: int, data: Any, flags: int = 0, zc_flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Zero-copy send: ``result`` is the byte count (from the CQE with ``F_MORE``); the
        callback runs, and ``data`` is released, only on the ``F_NOTIF`` CQE that says the kernel
        no longer reads it (on loopback tens of ms later; KERNEL-FACTS section 4)."""
        pin = ffi.from_buffer(data)
        args = (sqe_flags, _check_fd(fd), pin, min(len(pin), _MAX_RW), flags, zc_flags)
        return self._queue(OP_SEND_ZC, lib.aur_prep_send_zc, args, (pin,), len(pin))

    def sendmsg(self, fd: int, msg: MsgHdr, flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Send a prepared :class:`MsgHdr` (it holds the memory the kernel reads)."""
        args = (sqe_flags, _check_fd(fd), msg.ptr, flags)
        return self._queue(OP_SENDMSG, lib.aur_prep_sendmsg, args, (msg,), msg.nbytes)

    def recvmsg(self, fd: int, msg: MsgHdr, flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Receive into a prepared :class:`MsgHdr` (writable buffers)."""
        args = (sqe_flags, _check_fd(fd), msg.ptr, flags)
        return self._queue(OP_RECVMSG, lib.aur_prep_recvmsg, args, (msg,), msg.nbytes)

    def accept(self, fd: int, flags: int = 0, *, multishot: bool = False, sqe_flags: int = 0) -> Operation:
        """Accept a connection; ``output`` is (sockaddr buffer, socklen) unless multishot."""
        if multishot:
            args = (sqe_flags, _check_fd(fd), ffi.NULL, ffi.NULL, flags, lib.AUR_ACCEPT_MULTISHOT)
            return self._queue(OP_ACCEPT, lib.aur_prep_accept, args, multishot=True)
        addr = ffi.new("char[128]")
        addrlen = ffi.new("uint32_t *", 128)
        args = (sqe_flags, _check_fd(fd), addr, addrlen, flags, 0)
        return self._queue(OP_ACCEPT, lib.aur_prep_accept, args, (), 0, (addr, addrlen))

    def connect(self, fd: int, sockaddr: bytes, sqe_flags: int = 0) -> Operation:
        """Connect to a raw ``struct sockaddr`` (see ``_sockaddr``)."""
        pin = ffi.new("char[]", sockaddr)
        args = (sqe_flags, _check_fd(fd), pin, len(sockaddr))
        return self._queue(OP_CONNECT, lib.aur_prep_connect, args, (pin,))

    def shutdown(self, fd: int, how: int, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_SHUTDOWN, lib.aur_prep_shutdown, (sqe_flags, _check_fd(fd), how))

    def close_fd(self, fd: int, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_CLOSE, lib.aur_prep_close, (sqe_flags, _check_fd(fd)))

    def socket(self, domain: int, type: int, protocol: int = 0, sqe_flags: int = 0) -> Operation:
        args = (sqe_flags, domain, type, protocol)
        return self._queue(OP_SOCKET, lib.aur_prep_socket, args)

    def openat(
        self,
        dirfd: int,
        path: str | bytes | os.PathLike[Any],
        flags: int,
        mode: int = 0o666,
        sqe_flags: int = 0,
    ) -> Operation:
        pin = _path_pin(path)
        args = (sqe_flags, dirfd, pin, flags, mode)
        return self._queue(OP_OPENAT, lib.aur_prep_openat, args, (pin,))

    def statx(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], flags: int, mask: int, sqe_flags: int = 0
    ) -> Operation:
        """``output`` is the 256-byte ``struct statx`` (decode with ``_files``)."""
        pin = _path_pin(path)
        buf = ffi.new("char[256]")
        args = (sqe_flags, dirfd, pin, flags, mask, buf)
        return self._queue(OP_STATX, lib.aur_prep_statx, args, (pin,), 0, buf)

    def fsync(self, fd: int, *, datasync: bool = False, sqe_flags: int = 0) -> Operation:
        args = (sqe_flags, _check_fd(fd), lib.AUR_FSYNC_DATASYNC if datasync else 0)
        return self._queue(OP_FSYNC, lib.aur_prep_fsync, args)

    def ftruncate(self, fd: int, length: int, sqe_flags: int = 0) -> Operation:
        if length < 0:
            raise ValueError(f"negative size value {length}")
        return self._queue(OP_FTRUNCATE, lib.aur_prep_ftruncate, (sqe_flags, _check_fd(fd), length))

    def unlinkat(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], flags: int = 0, sqe_flags: int = 0
    ) -> Operation:
        pin = _path_pin(path)
        return self._queue(OP_UNLINKAT, lib.aur_prep_unlinkat, (sqe_flags, dirfd, pin, flags), (pin,))

    def renameat(
        self,
        olddirfd: int,
        oldpath: str | bytes | os.PathLike[Any],
        newdirfd: int,
        newpath: str | bytes | os.PathLike[Any],
        flags: int = 0,
        sqe_flags: int = 0,
    ) -> Operation:
        return self._path_pair(
            OP_RENAMEAT, lib.aur_prep_renameat, olddirfd, oldpath, newdirfd, newpath, flags, sqe_flags
        )

    def mkdirat(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], mode: int = 0o777, sqe_flags: int = 0
    ) -> Operation:
        pin = _path_pin(path)
        return self._queue(OP_MKDIRAT, lib.aur_prep_mkdirat, (sqe_flags, dirfd, pin, mode), (pin,))

    def symlinkat(
        self,
        target: str | bytes | os.PathLike[Any],
        newdirfd: int,
        linkpath: str | bytes | os.PathLike[Any],
        sqe_flags: int = 0,
    ) -> Operation:
        tgt, link = _path_pin(target), _path_pin(linkpath)
        args = (sqe_flags, tgt, newdirfd, link)
        return self._queue(OP_SYMLINKAT, lib.aur_prep_symlinkat, args, (tgt, link))

    def linkat(
        self,
        olddirfd: int,
        oldpath: str | bytes | os.PathLike[Any],
        newdirfd: int,
        newpath: str | bytes | os.PathLike[Any],
        flags: int = 0,
        sqe_flags: int = 0,
    ) -> Operation:
        return self._path_pair(
            OP_LINKAT, lib.aur_prep_linkat, olddirfd, oldpath, newdirfd, newpath, flags, sqe_flags
        )

    def _path_pair(
        self,
        opcode: int,
        prep: Callable[..., int],
        olddirfd: int,
        oldpath: str | bytes | os.PathLike[Any],
        newdirfd: int,
        newpath: str | bytes | os.PathLike[Any],
        flags: int,
        sqe_flags: int,
    ) -> Operation:
        """RENAMEAT and LINKAT take the same (dirfd, path) pair twice."""
        old, new = _path_pin(oldpath), _path_pin(newpath)
        return self._queue(opcode, prep, (sqe_flags, olddirfd, old, newdirfd, new, flags), (old, new))

    def poll_add(self, fd: int, events: int, *, multishot: bool = False, sqe_flags: int = 0) -> Operation:
        args = (sqe_flags, _check_fd(fd), events, 1 if multishot else 0)
        return self._queue(OP_POLL_ADD, lib.aur_prep_poll_add, args, multishot=multishot)

    def timeout(self, seconds: float, sqe_flags: int = 0) -> Operation:
        """A relative timer; completes with ``-ETIME`` when it expires."""
        if seconds < 0:
            raise ValueError("timeout must be non-negative")
        ns = int(seconds * 1e9)
        ts = ffi.new("int64_t[2]", [ns // 1_000_000_000, ns % 1_000_000_000])
        return self._queue(OP_TIMEOUT, lib.aur_prep_timeout, (sqe_flags, ts, 0, 0), (ts,))

    def waitid(self, idtype: int, id: int, options: int, sqe_flags: int = 0) -> Operation:
        """``output`` is a 128-byte ``siginfo_t``.  Note: WAITID reaps the child."""
        info = ffi.new("char[128]")
        args = (sqe_flags, idtype, id, info, options)
        return self._queue(OP_WAITID, lib.aur_prep_waitid, args, (), 0, info)

    # -- cancellation -----------------------------------------------------------------------

    def cancel(self, op: Operation) -> bool:
        """End ``op`` early.

        Returns ``True`` if the SQE was withdrawn before the kernel saw it: ``op`` is done with
        ``-ECANCELED`` and its callback will not be called.  Returns ``False`` otherwise: an
        ``ASYNC_CANCEL`` is queued (unless one already is, or ``op`` is done) and ``op`` stays
        alive -- memory and all -- until its own final CQE, which may carry a real result.
        """
        if op.ring is not self:
            raise ValueError(f"{op!r} does not belong to {self!r}")
        if op._state != _PENDING or not op.facts.cancellable:
            return False  # done, cancel already requested, or never to be withdrawn (CLOSE)
        self._check_usable()
        if lib.aur_withdraw(self._c, op.slot, op.user_data):
            del self._ops[op.user_data]
            self.withdrawn += 1
            op._transition("withdraw")
            op.result = -errno.ECANCELED
            op.cqe_flags = 0
            op._release()
            op.callback = None
            op.on_more = None
            return True
        # Queue the ASYNC_CANCEL first: if that fails (SQ full after retries, ring gone) the
        # operation keeps its state, so a later cancel tries again instead of believing one is
        # on its way.  Queueing may reap CQEs (SQ full): the operation can finish meanwhile.
        self._queue_internal(lib.aur_prep_cancel, (0, op.user_data, 0, 0))
        if op._state == _PENDING:
            op._transition("cancel")
        return False

    def cancel_fd(self, fd: int) -> None:
        """Queue ``ASYNC_CANCEL`` for every operation on ``fd`` (``CANCEL_FD|CANCEL_ALL``).

        Call it *before* closing ``fd``: afterwards the kernel cannot resolve the number.  The
        operations' states do not change here; their final CQEs arrive as usual.
        """
        self._queue_internal(
            lib.aur_prep_cancel, (0, 0, _check_fd(fd), lib.AUR_CANCEL_FD | lib.AUR_CANCEL_ALL)
        )

    def _queue_internal(self, prep: Callable[..., int], args: tuple[Any, ...]) -> None:
        self._check_usable()
        ud = _TAG_CANCEL | (self._next_ud & ~_TAG_CANCEL)
        self._next_ud += 1
        rc = prep(self._c, ud, *args)
        if rc < 0:
            self._prep_failed(rc, prep, ud, args)

    # -- the loop's one wait ----------------------------------------------------------------

    def submit(self) -> int:
        """Submit queued SQEs now, without waiting.  Returns the number submitted."""
        self._check_usable()
        rc = lib.aur_submit(self._c)
        if rc < 0 and rc not in (-errno.EBUSY, -errno.EAGAIN, -errno.EINTR):
            raise OSError(-rc, f"io_uring_enter failed: {os.strerror(-rc)}")
        return max(int(rc), 0)

    def wait(self, timeout: float | None = None, min_complete: int = 1) -> int:
        """Submit everything queued, wait for ``min_complete`` completions or ``timeout`` seconds
        (``None``: no limit, ``0``: do not block), reap every available CQE and dispatch it.

        Returns the number of completions dispatched (0 on timeout or signal).  A timeout of
        ``math.inf`` is no limit; a finite one beyond ~146 years is clamped to that (so a far
        deadline, e.g. ``sleep(sys.maxsize)``, waits "forever" instead of overflowing).
        """
        self._check_usable()
        if timeout is None or timeout == math.inf:
            t_ns = -1
        elif timeout <= 0:
            t_ns = 0
        elif timeout < _MAX_WAIT_S:
            t_ns = max(int(timeout * 1e9), 1)
        elif timeout >= _MAX_WAIT_S:
            t_ns = _MAX_WAIT_NS
        else:
            raise ValueError("timeout must not be NaN")
        total = 0
        rc = lib.aur_wait(self._c, min_complete, t_ns, self._out, self._cap)
        while True:
            if rc < 0:
                if rc == -errno.EINTR:
                    return total
                if rc == -_EBADFD:
                    self._closed = True
                    self._check_usable()
                raise OSError(-rc, f"io_uring_enter failed: {os.strerror(-rc)}")
            if rc:
                total += rc
                self._dispatch(self._out_view[: rc * 16].tobytes())
            if not self._c.more:
                return total
            rc = lib.aur_wait(self._c, 0, 0, self._out, self._cap)

    def _dispatch(self, data: bytes) -> None:
        """Deliver each CQE in ``data`` (packed ``aur_cqe`` records) to its operation, in order.

        A CQE carrying a provided buffer is first reported to the buffer's group, so the group
        knows which buffers the kernel holds before any callback consumes one.

        Every CQE reaches its operation even when a callback (or the buffer bookkeeping) raises;
        the errors are raised once the whole batch is dispatched, and none is dropped:

        * the first ``KeyboardInterrupt`` or ``SystemExit`` (a signal handler or ``sys.exit``
          running inside a callback: a request to stop, not a bug) propagates as itself; any
          other errors of the batch hang off it as its ``__cause__``, a
          :class:`UringInternalError` (or, when the exception already has a cause, in a note);
        * otherwise -- any other exception, including other ``BaseException`` subclasses -- a
          callback has a bug: :class:`UringInternalError` is raised, its ``__cause__`` an
          (Base)ExceptionGroup of every error, in CQE order.
        """
        ops = self._ops
        errors: list[BaseException] = []
        for ud, res, flags in _CQE.iter_unpack(data):
            op = ops.get(ud)
            if op is None:
                if ud & _TAG_CANCEL:
                    self.cancel_cqes += 1
                else:
                    self.rejected_cqes += 1
                continue
            if flags & _F_BUFFER and op.buffers is not None:
                try:
                    op.buffers._reaped(res, flags)
                except BaseException as exc:  # the CQE still goes to its op below
                    errors.append(exc)
            try:
                if flags & _F_MORE:
                    op._intermediate(res, flags)
                else:
                    del ops[ud]
                    op._complete(res, flags)
            except BaseException as exc:  # keep dispatching: every CQE must reach its op
                errors.append(exc)
        if not errors:
            return
        stop = next((e for e in errors if isinstance(e, (KeyboardInterrupt, SystemExit))), None)
        others = [e for e in errors if e is not stop]
        if stop is None:
            group = BaseExceptionGroup("errors raised while dispatching completions", others)
            raise UringInternalError(f"{len(others)} error(s) while dispatching completions") from group
        if others:
            report = UringInternalError(
                f"{len(others)} other error(s) while dispatching the completions that raised {stop!r}"
            )
            report.__cause__ = BaseExceptionGroup("errors raised while dispatching completions", others)
            if stop.__cause__ is None:
                stop.__cause__ = report
            else:
                stop.add_note(f"anyio_uring: {report}: {others!r}")
        raise stop

    # -- buffer rings ------------------------------------------------------------------------

    def _register_buffer_ring(self, bgid: int, pbuf: Any, entries: int, flags: int) -> None:
        self._check_usable()
        if bgid in self._buffer_rings:
            raise ValueError(f"buffer group {bgid} is already registered on this ring")
        rc = lib.aur_pbuf_register(self._c, pbuf, entries, bgid, flags)
        if rc < 0:
            raise OSError(-rc, f"cannot register a provided-buffer ring: {os.strerror(-rc)}")

    def _unregister_buffer_ring(self, bgid: int, pbuf: Any) -> None:
        self._buffer_rings.pop(bgid, None)
        rc = lib.aur_pbuf_unregister(self._c, pbuf)
        if rc < 0:
            raise OSError(-rc, f"cannot unregister a provided-buffer ring: {os.strerror(-rc)}")

    def _buffer_ring_in_use(self, buffers: object) -> bool:
        return any(buffers in op._pins for op in self._ops.values())

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, drain_timeout: float = 30.0) -> None:
        """Cancel every live operation, reap until none is left, then unmap and close.

        Must run on the ring's thread.  Operations that have not finished after
        ``drain_timeout`` seconds keep their memory for the life of the process (a
        ``RuntimeWarning`` says so): it is never released while the kernel may still use it.
        """
        if self._closed:
            if self._c.forked and not self._c.closed:
                lib.aur_close(self._c)
            _LIVE_RINGS.discard(self)
            return
        if self._c.forked or os.getpid() != self._pid:
            self._forget_after_fork()
            return
        if threading.get_ident() != self._owner:
            raise RuntimeError("a ring must be closed by the thread that created it")
        try:
            self._drain(drain_timeout)
        finally:
            if self._ops:  # the drain was interrupted (a callback raised): never free their memory
                _ABANDONED.extend(self._ops.values())
                for op in self._ops.values():
                    op.abandoned = True
                self._ops.clear()
            for bgid, br in list(self._buffer_rings.items()):
                self._buffer_rings.pop(bgid, None)
                br._forget()
            self._closed = True
            lib.aur_close(self._c)
            _LIVE_RINGS.discard(self)

    def abandon_orphans(self) -> None:
        """Mark every live operation that nobody waits for (no callback, no ``on_more``) as
        abandoned: an fd it returns -- an accept completing during shutdown -- is then closed,
        a buffer it picked is recycled.  Call it before reaping CQEs at shutdown."""
        for op in list(self._ops.values()):
            if op.callback is None and op.on_more is None:
                op.abandon()

    def _drain(self, drain_timeout: float) -> None:
        if not self._ops:
            return
        deadline = time.monotonic() + drain_timeout
        self.abandon_orphans()
        for op in list(self._ops.values()):
            self.cancel(op)
        while self._ops:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.wait(timeout=min(remaining, 0.25))
        if self._ops:
            stuck = list(self._ops.values())
            _ABANDONED.extend(stuck)
            for op in stuck:
                op.abandoned = True
            self._ops.clear()
            warnings.warn(
                f"{len(stuck)} io_uring operation(s) did not finish within {drain_timeout}s of "
                f"closing the ring ({stuck[:3]}...); their memory is kept until the process exits",
                RuntimeWarning,
                stacklevel=3,
            )

    def _forget_after_fork(self) -> None:
        """In a fork child: the parent's ring is not ours; drop everything without syscalls."""
        self._closed = True
        self._forked = True
        self._ops.clear()
        self._buffer_rings.clear()
        lib.aur_close(self._c)  # no munmap/close happens for a forked ring: see fork_child in aur.c
        _LIVE_RINGS.discard(self)


def _after_fork_in_child() -> None:
    for ring in list(_LIVE_RINGS):
        ring._closed = True
        ring._forked = True
    _LIVE_RINGS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
