"""Ring and Operation: the ledger of in-flight operations and the memory they own.

Theory of operation
-------------------
A :class:`Ring` is one io_uring instance owned by one thread (the C core refuses every other
thread before touching the ring, so no per-operation check is needed here).  Each submitted SQE
is an :class:`Operation` with a unique ``user_data``: its slot + 1, where the slot counts every
SQE the ring ever wrote, so it is never reused while the ring lives and doubles as a generation
tag -- a stale or duplicated CQE finds no live operation and is *rejected* (counted in
``Ring.rejected_cqes``), it can never complete the wrong one.  ``user_data`` values with the top
bit set are the runtime's own (cancel requests).

Ownership rule (DESIGN.md, invariant 1): everything the kernel may read or write for an
operation -- buffers exported with ``ffi.from_buffer``, sockaddr/statx/siginfo output buffers,
path strings, timespecs -- is referenced by the Operation from the moment its SQE is written until
its *final* CQE is reaped (multishot: the CQE without ``IORING_CQE_F_MORE``).  The single place
where that memory is let go is :meth:`Operation._release`, called for the final CQE (by
``Ring._dispatch``, which inlines ``Operation._complete`` for CQEs without flags) or for an SQE
withdrawn before the kernel saw it (``Ring.cancel``).  Cancelling,
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
_NEG_ENOENT: Final = -errno.ENOENT
_EBADFD: Final = 77
_EWRONGTHREAD: Final[int] = lib.AUR_EWRONGTHREAD
#: A prep's user_data argument that asks the C core for ``slot + 1`` (``Ring._queue``).
_FROM_SLOT: Final[int] = lib.AUR_UD_FROM_SLOT
#: The longest bounded wait (2**62 ns, ~146 years).  Longer finite timeouts are clamped to it: the
#: nanosecond count must fit an int64, and so must ``now + timeout`` for the absolute TIMEOUT SQE
#: used when ``IORING_ENTER_EXT_ARG`` is unavailable (aur.c, ``arm_fallback_timeout``).
_MAX_WAIT_NS: Final = 1 << 62
_MAX_WAIT_S: Final = _MAX_WAIT_NS / 1e9
_CQE = struct.Struct("QiI")
_iter_cqes = _CQE.iter_unpack
_from_buffer = ffi.from_buffer
_BYTES: Final = ffi.typeof("char[]")  # from_buffer's default type, passed as a ctype: no parsing
_CData: Final = ffi.CData
_ffi_release = ffi.release
_aur_wait: Final[Callable[..., int]] = lib.aur_wait
_aur_has_work: Final[Callable[[Any], int]] = lib.aur_has_work
_F_MORE_OR_BUFFER: Final = _F_MORE | _F_BUFFER
#: The ``_pins`` of an operation that lends the kernel nothing (``is`` tests it: an empty tuple
#: that is not this one only costs a needless ``_release`` call).
_NO_PINS: Final[tuple[Any, ...]] = ()

_facts_get = _FACTS.get

# The prep functions, bound once: each use of an attribute of cffi's ``lib`` is a dictionary lookup.
_prep_accept = lib.aur_prep_accept
_prep_cancel = lib.aur_prep_cancel
_prep_close = lib.aur_prep_close
_prep_connect = lib.aur_prep_connect
_prep_fsync = lib.aur_prep_fsync
_prep_ftruncate = lib.aur_prep_ftruncate
_prep_linkat = lib.aur_prep_linkat
_prep_mkdirat = lib.aur_prep_mkdirat
_prep_nop = lib.aur_prep_nop
_prep_openat = lib.aur_prep_openat
_prep_poll_add = lib.aur_prep_poll_add
_prep_read = lib.aur_prep_read
_prep_recv = lib.aur_prep_recv
_prep_recvmsg = lib.aur_prep_recvmsg
_prep_renameat = lib.aur_prep_renameat
_prep_send = lib.aur_prep_send
_prep_send_zc = lib.aur_prep_send_zc
_prep_sendmsg = lib.aur_prep_sendmsg
_prep_shutdown = lib.aur_prep_shutdown
_prep_socket = lib.aur_prep_socket
_prep_statx = lib.aur_prep_statx
_prep_symlinkat = lib.aur_prep_symlinkat
_prep_timeout = lib.aur_prep_timeout
_prep_unlinkat = lib.aur_prep_unlinkat
_prep_waitid = lib.aur_prep_waitid
_prep_write = lib.aur_prep_write
_SQE_BUFFER_SELECT: Final[int] = lib.AUR_SQE_BUFFER_SELECT
_RECV_MULTISHOT: Final[int] = lib.AUR_RECV_MULTISHOT
_ACCEPT_MULTISHOT: Final[int] = lib.AUR_ACCEPT_MULTISHOT
_FSYNC_DATASYNC: Final[int] = lib.AUR_FSYNC_DATASYNC

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
_CANCEL_REQUESTED: Final = int(OpState.CANCEL_REQUESTED)
_DONE: Final = int(OpState.DONE)
_TRANSITIONS: Final[dict[tuple[int, str], int]] = {
    (_PENDING, "cancel"): _CANCEL_REQUESTED,
    (_PENDING, "withdraw"): _DONE,
    (_PENDING, "final"): _DONE,
    (_CANCEL_REQUESTED, "final"): _DONE,
}
#: ``Operation._state`` holds the lifecycle state in its low bits and two flags above them;
#: ``_F_ABANDONED`` is the highest, so ``state < _F_ABANDONED`` means "not abandoned".
_LIFE: Final = 3
_F_MULTISHOT: Final = 4
_F_ABANDONED: Final = 8
_MULTISHOT_OR_ABANDONED: Final = _F_MULTISHOT | _F_ABANDONED


def _after(event: str) -> tuple[int | None, ...]:
    """``_TRANSITIONS``' row for ``event`` indexed by the whole ``_state`` value, flags included
    (``None``: illegal), for the dispatch loop, which must not build a tuple key per CQE."""
    row: list[int | None] = []
    for state in range(2 * _F_ABANDONED):
        new = _TRANSITIONS.get((state & _LIFE, event))
        row.append(None if new is None else state & ~_LIFE | new)
    return tuple(row)


_AFTER_FINAL: Final = _after("final")


class Operation:
    """One submitted SQE and everything the kernel may touch for it.

    ``result`` is the final CQE's ``res`` (``-errno`` on failure) and ``cqe_flags`` its flags,
    both ``None`` until :attr:`done`.  ``output`` is a buffer the ring allocated for the kernel
    to fill (sockaddr, statx, siginfo), readable after completion.

    Only :class:`Ring` creates operations (its prep methods): the class has no ``__init__``, and
    ``Ring._queue`` sets every slot, the fewest stores a new operation can cost.
    """

    __slots__ = (
        "_pins",
        "_state",
        "buffers",
        "callback",
        "cqe_flags",
        "on_more",
        "opcode",
        "output",
        "pinned_bytes",
        "result",
        "ring",
        "user_data",
    )

    ring: Ring
    #: ``slot + 1`` (see :attr:`slot`): unique for the life of the ring, top bit clear.
    user_data: int
    opcode: int
    #: The lifecycle state (``& _LIFE``) | ``_F_MULTISHOT`` | ``_F_ABANDONED``.
    _state: int
    #: Everything the kernel may read or write for this operation; let go only by ``_release``.
    _pins: tuple[Any, ...]
    #: Bytes of caller memory lent through ``_pins`` (nonzero only if ``_pins`` is not empty).
    pinned_bytes: int
    output: Any
    #: The ProvidedBufferRing a BUFFER_SELECT receive picks from (None otherwise).
    buffers: Any
    result: int | None
    cqe_flags: int | None
    #: Called once with this operation when its final CQE is reaped.
    callback: Callable[[Operation], object] | None
    #: Multishot only: called with (op, res, flags) for each CQE that has F_MORE.
    on_more: Callable[[Operation, int, int], object] | None

    def __repr__(self) -> str:
        name = OPCODE_NAMES.get(self.opcode, str(self.opcode))
        return f"<Operation {name} ud={self.user_data:#x} {self.state.name} result={self.result}>"

    @property
    def state(self) -> OpState:
        life = self._state & _LIFE
        if life == _PENDING:
            queued = self.slot >= self.ring._c.sq_published
            return OpState.QUEUED if queued else OpState.SUBMITTED
        return OpState(life)

    @property
    def slot(self) -> int:
        """The SQE's position in the ring's stream of SQEs (``aur_ring.sq_written`` when written)."""
        return self.user_data - 1

    @property
    def facts(self) -> OpFacts:
        """What this opcode promises (fd result, cancellability, result-vs-release CQE)."""
        return _facts_get(self.opcode, _DEFAULT_FACTS)

    @property
    def multishot(self) -> bool:
        """Queued as a multishot request: every CQE but the final one has ``F_MORE``."""
        return bool(self._state & _F_MULTISHOT)

    @property
    def abandoned(self) -> bool:
        """Nobody will consume the result (see :meth:`abandon`)."""
        return bool(self._state & _F_ABANDONED)

    @property
    def returns_fd(self) -> bool:
        """A result ``>= 0`` is a new fd (closed by the ring if nobody takes it)."""
        return _facts_get(self.opcode, _DEFAULT_FACTS).returns_fd

    @property
    def done(self) -> bool:
        return self._state & _LIFE == _DONE

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
        if self._state & _F_ABANDONED:
            return  # an fd was (or will be) closed already; its number may belong to a new file
        self._state |= _F_ABANDONED
        self.callback = None
        self.on_more = None
        if self._state & _LIFE == _DONE:
            self._dispose(self.result, self.cqe_flags or 0)

    # -- called by Ring only --------------------------------------------------------------

    def _transition(self, event: str) -> None:
        state = self._state
        new = _TRANSITIONS.get((state & _LIFE, event))
        if new is None:
            raise self._illegal(event)
        self._state = state & ~_LIFE | new

    def _illegal(self, event: str) -> UringInternalError:
        """The one error for an event ``_TRANSITIONS`` does not allow in the current state."""
        return UringInternalError(f"illegal transition {event!r} from {self.state.name} for {self!r}")

    def _release(self) -> None:
        """THE place where memory lent to the kernel is given back (after the final CQE)."""
        pins = self._pins
        if pins:
            for pin in pins:
                if isinstance(pin, _CData):
                    _ffi_release(pin)
                elif isinstance(pin, MsgHdr):
                    pin.release_pins()
            self._pins = _NO_PINS
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
        """The final CQE: ``Ring._dispatch`` inlines this for CQEs without flags; keep them alike."""
        self._transition("final")
        if self.result is None:  # else: the result CQE came first (result_on_more)
            self.result = res
            self.cqe_flags = flags
        if self._pins is not _NO_PINS:
            self._release()
        callback = self.callback
        self.callback = None
        self.on_more = None
        if self._state & _F_ABANDONED:
            self._dispose(res, flags)
        elif callback is not None:
            callback(self)

    def _intermediate(self, res: int, flags: int) -> None:
        if self._state & _F_MULTISHOT == 0 and _facts_get(self.opcode, _DEFAULT_FACTS).result_on_more:
            # The result CQE (SEND_ZC's byte count): the memory stays lent until the final one.
            self.result = res
            self.cqe_flags = flags
            return
        on_more = self.on_more
        if on_more is not None and not self._state & _F_ABANDONED:
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


def _timeout_ns(timeout: float) -> int:
    """``Ring.wait``'s timeout in ns for ``aur_wait`` (-1: no limit), for anything but None and 0."""
    if timeout == math.inf:
        return -1
    if timeout <= 0:
        return 0
    if timeout < _MAX_WAIT_S:
        return max(int(timeout * 1e9), 1)
    if timeout >= _MAX_WAIT_S:
        return _MAX_WAIT_NS
    raise ValueError("timeout must not be NaN")


def _raise_dispatch_errors(errors: list[BaseException]) -> None:
    """Raise what the callbacks of one dispatched batch raised (see ``Ring._dispatch``)."""
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
        self._next_cancel_ud = 1
        #: ASYNC_CANCEL user_data -> the operation it targets (until the cancel's CQE).
        self._cancel_targets: dict[int, Operation] = {}
        #: The user_data of the newest SQE queued from Python (an operation's or a cancel's):
        #: it changes whenever anything is queued, so the run loop can compare it with the
        #: value it saw at its last harvest.  A plain attribute (no int is made per operation):
        #: the loop reads it every tick.
        self._queue_mark = 0
        #: Set by the ring's owner (the runner: its entry queue's ``run_sync_soon``): runs a call
        #: on the ring's thread soon, from any thread.  :meth:`cancel_soon` uses it.
        self.call_soon: Callable[..., object] | None = None
        #: How many CQEs the newest :meth:`wait` that reaped any dispatched: a measure of how
        #: busy the loop is (a socket stream arms a multishot receive only on a busy loop).
        self.reaped = 0
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
        #: ASYNC_CANCELs queued again because the first found no target while it was in flight.
        self.cancel_retries = 0
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
    def _next_ud(self) -> int:
        """The user_data the next operation will get (slot + 1), from the C core's SQE count.
        Loops that only need "was anything queued?" read the cheaper ``_queue_mark``."""
        return int(self._c.sq_written) + 1

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
            "cancel_retries": self.cancel_retries,
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
        pins: tuple[Any, ...] = _NO_PINS,
        nbytes: int = 0,
        output: Any = None,
        multishot: bool = False,  # not keyword-only: kw-only defaults cost a dict lookup per call
    ) -> Operation:
        """Write one SQE with ``prep(*args)`` and enter its operation in the ledger.

        ``args`` are the prep function's whole argument list, starting with ``self._c`` and
        ``_FROM_SLOT``: the C core gives the SQE the user_data ``slot + 1``, which is never
        reused (``slot`` counts every SQE the ring ever wrote) and never has the top bit set.
        The caller's tuple is passed on as it is.  No Python-side check happens here: the prep
        refuses a closed or forked ring (-EBADFD) and a thread that does not own the ring
        (-AUR_EWRONGTHREAD) before it touches anything, and ``_prep_failed`` turns those into
        the errors ``_check_usable`` raises.
        """
        op = Operation()  # before the SQE exists: past the prep call, nothing may fail
        op.ring = self
        op.opcode = opcode
        op._state = _F_MULTISHOT if multishot else _PENDING
        op._pins = pins
        op.pinned_bytes = nbytes
        op.output = output
        op.buffers = None
        op.result = None
        op.cqe_flags = None
        op.callback = None
        op.on_more = None
        slot = prep(*args)
        if slot < 0:
            slot = self._prep_failed(slot, prep, args)
        op.user_data = ud = slot + 1
        self._ops[ud] = op
        self._queue_mark = ud
        if nbytes:
            self._pinned_bytes += nbytes
        return op

    def _prep_failed(self, rc: int, prep: Callable[..., int], args: tuple[Any, ...]) -> int:
        # -EBUSY: the SQ is full and the kernel would not take more; reap and retry.
        for _ in range(100):
            if rc != -errno.EBUSY:
                break
            self.wait(timeout=0.01)
            rc = prep(*args)
            if rc >= 0:
                return rc
        if rc == -_EBADFD:
            self._closed = True
        self._check_usable()  # a closed or forked ring, or another thread (-AUR_EWRONGTHREAD)
        raise OSError(-rc, f"cannot queue an io_uring operation: {os.strerror(-rc)}")

    # -- prep methods: one per opcode -------------------------------------------------------

    def nop(self, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_NOP, _prep_nop, (self._c, _FROM_SLOT, sqe_flags))

    def read(self, fd: int, buf: Any, offset: int = -1, sqe_flags: int = 0) -> Operation:
        """Read into the writable buffer ``buf`` at ``offset`` (-1: the file position)."""
        pin = _from_buffer(_BYTES, buf, True)  # writable; positional: keywords cost ~1800 instructions
        n = len(pin)
        args = (
            self._c,
            _FROM_SLOT,
            sqe_flags,
            _check_fd(fd),
            pin,
            n if n < _MAX_RW else _MAX_RW,
            offset & _U64,
        )
        return self._queue(OP_READ, _prep_read, args, (pin,), n)

    def write(self, fd: int, data: Any, offset: int = -1, sqe_flags: int = 0) -> Operation:
        """Write the bytes-like ``data`` at ``offset`` (-1: the file position)."""
        pin = _from_buffer(_BYTES, data)
        n = len(pin)
        args = (
            self._c,
            _FROM_SLOT,
            sqe_flags,
            _check_fd(fd),
            pin,
            n if n < _MAX_RW else _MAX_RW,
            offset & _U64,
        )
        return self._queue(OP_WRITE, _prep_write, args, (pin,), n)

    def recv(self, fd: int, buf: Any, flags: int = 0, sqe_flags: int = 0) -> Operation:
        pin = _from_buffer(_BYTES, buf, True)
        n = len(pin)
        args = (
            self._c,
            _FROM_SLOT,
            sqe_flags,
            _check_fd(fd),
            pin,
            n if n < _MAX_RW else _MAX_RW,
            flags,
            0,
            0,
        )
        return self._queue(OP_RECV, _prep_recv, args, (pin,), n)

    def recv_select(
        self, fd: int, buffers: Any, length: int = 0, flags: int = 0, *, multishot: bool = False
    ) -> Operation:
        """Receive into a buffer the kernel picks from ``buffers`` (a ProvidedBufferRing)."""
        ioprio = _RECV_MULTISHOT if multishot else 0
        args = (
            self._c,
            _FROM_SLOT,
            _SQE_BUFFER_SELECT,
            _check_fd(fd),
            ffi.NULL,
            length,
            flags,
            ioprio,
            buffers.bgid,
        )
        # No pins: ``op.buffers`` holds the group (and the ring holds it until closed).
        op = self._queue(OP_RECV, _prep_recv, args, _NO_PINS, 0, None, multishot)
        op.buffers = buffers
        return op

    def send(self, fd: int, data: Any, flags: int = 0, sqe_flags: int = 0) -> Operation:
        pin = _from_buffer(_BYTES, data)
        n = len(pin)
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), pin, n if n < _MAX_RW else _MAX_RW, flags)
        return self._queue(OP_SEND, _prep_send, args, (pin,), n)

    def send_zc(self, fd: int, data: Any, flags: int = 0, zc_flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Zero-copy send: ``result`` is the byte count (from the CQE with ``F_MORE``); the
        callback runs, and ``data`` is released, only on the ``F_NOTIF`` CQE that says the kernel
        no longer reads it (on loopback tens of ms later; KERNEL-FACTS section 4)."""
        pin = _from_buffer(_BYTES, data)
        n = len(pin)
        count = n if n < _MAX_RW else _MAX_RW
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), pin, count, flags, zc_flags)
        return self._queue(OP_SEND_ZC, _prep_send_zc, args, (pin,), n)

    def sendmsg(self, fd: int, msg: MsgHdr, flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Send a prepared :class:`MsgHdr` (it holds the memory the kernel reads)."""
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), msg.ptr, flags)
        return self._queue(OP_SENDMSG, _prep_sendmsg, args, (msg,), msg.nbytes)

    def recvmsg(self, fd: int, msg: MsgHdr, flags: int = 0, sqe_flags: int = 0) -> Operation:
        """Receive into a prepared :class:`MsgHdr` (writable buffers)."""
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), msg.ptr, flags)
        return self._queue(OP_RECVMSG, _prep_recvmsg, args, (msg,), msg.nbytes)

    def accept(self, fd: int, flags: int = 0, *, multishot: bool = False, sqe_flags: int = 0) -> Operation:
        """Accept a connection; ``output`` is (sockaddr buffer, socklen) unless multishot."""
        if multishot:
            args = (
                self._c,
                _FROM_SLOT,
                sqe_flags,
                _check_fd(fd),
                ffi.NULL,
                ffi.NULL,
                flags,
                _ACCEPT_MULTISHOT,
            )
            return self._queue(OP_ACCEPT, _prep_accept, args, multishot=True)
        addr = ffi.new("char[128]")
        addrlen = ffi.new("uint32_t *", 128)
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), addr, addrlen, flags, 0)
        return self._queue(OP_ACCEPT, _prep_accept, args, (), 0, (addr, addrlen))

    def connect(self, fd: int, sockaddr: bytes, sqe_flags: int = 0) -> Operation:
        """Connect to a raw ``struct sockaddr`` (see ``_sockaddr``)."""
        pin = ffi.new("char[]", sockaddr)
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), pin, len(sockaddr))
        return self._queue(OP_CONNECT, _prep_connect, args, (pin,))

    def shutdown(self, fd: int, how: int, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_SHUTDOWN, _prep_shutdown, (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), how))

    def close_fd(self, fd: int, sqe_flags: int = 0) -> Operation:
        return self._queue(OP_CLOSE, _prep_close, (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd)))

    def socket(self, domain: int, type: int, protocol: int = 0, sqe_flags: int = 0) -> Operation:
        args = (self._c, _FROM_SLOT, sqe_flags, domain, type, protocol)
        return self._queue(OP_SOCKET, _prep_socket, args)

    def openat(
        self,
        dirfd: int,
        path: str | bytes | os.PathLike[Any],
        flags: int,
        mode: int = 0o666,
        sqe_flags: int = 0,
    ) -> Operation:
        pin = _path_pin(path)
        args = (self._c, _FROM_SLOT, sqe_flags, dirfd, pin, flags, mode)
        return self._queue(OP_OPENAT, _prep_openat, args, (pin,))

    def statx(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], flags: int, mask: int, sqe_flags: int = 0
    ) -> Operation:
        """``output`` is the 256-byte ``struct statx`` (decode with ``_files``)."""
        pin = _path_pin(path)
        buf = ffi.new("char[256]")
        args = (self._c, _FROM_SLOT, sqe_flags, dirfd, pin, flags, mask, buf)
        return self._queue(OP_STATX, _prep_statx, args, (pin,), 0, buf)

    def fsync(self, fd: int, *, datasync: bool = False, sqe_flags: int = 0) -> Operation:
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), _FSYNC_DATASYNC if datasync else 0)
        return self._queue(OP_FSYNC, _prep_fsync, args)

    def ftruncate(self, fd: int, length: int, sqe_flags: int = 0) -> Operation:
        if length < 0:
            raise ValueError(f"negative size value {length}")
        return self._queue(
            OP_FTRUNCATE, _prep_ftruncate, (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), length)
        )

    def unlinkat(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], flags: int = 0, sqe_flags: int = 0
    ) -> Operation:
        pin = _path_pin(path)
        return self._queue(
            OP_UNLINKAT, _prep_unlinkat, (self._c, _FROM_SLOT, sqe_flags, dirfd, pin, flags), (pin,)
        )

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
            OP_RENAMEAT, _prep_renameat, olddirfd, oldpath, newdirfd, newpath, flags, sqe_flags
        )

    def mkdirat(
        self, dirfd: int, path: str | bytes | os.PathLike[Any], mode: int = 0o777, sqe_flags: int = 0
    ) -> Operation:
        pin = _path_pin(path)
        return self._queue(
            OP_MKDIRAT, _prep_mkdirat, (self._c, _FROM_SLOT, sqe_flags, dirfd, pin, mode), (pin,)
        )

    def symlinkat(
        self,
        target: str | bytes | os.PathLike[Any],
        newdirfd: int,
        linkpath: str | bytes | os.PathLike[Any],
        sqe_flags: int = 0,
    ) -> Operation:
        tgt, link = _path_pin(target), _path_pin(linkpath)
        args = (self._c, _FROM_SLOT, sqe_flags, tgt, newdirfd, link)
        return self._queue(OP_SYMLINKAT, _prep_symlinkat, args, (tgt, link))

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
            OP_LINKAT, _prep_linkat, olddirfd, oldpath, newdirfd, newpath, flags, sqe_flags
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
        return self._queue(
            opcode, prep, (self._c, _FROM_SLOT, sqe_flags, olddirfd, old, newdirfd, new, flags), (old, new)
        )

    def poll_add(self, fd: int, events: int, *, multishot: bool = False, sqe_flags: int = 0) -> Operation:
        args = (self._c, _FROM_SLOT, sqe_flags, _check_fd(fd), events, 1 if multishot else 0)
        return self._queue(OP_POLL_ADD, _prep_poll_add, args, multishot=multishot)

    def timeout(self, seconds: float, sqe_flags: int = 0) -> Operation:
        """A relative timer; completes with ``-ETIME`` when it expires."""
        if seconds < 0:
            raise ValueError("timeout must be non-negative")
        ns = int(seconds * 1e9)
        ts = ffi.new("int64_t[2]", [ns // 1_000_000_000, ns % 1_000_000_000])
        return self._queue(OP_TIMEOUT, _prep_timeout, (self._c, _FROM_SLOT, sqe_flags, ts, 0, 0), (ts,))

    def waitid(self, idtype: int, id: int, options: int, sqe_flags: int = 0) -> Operation:
        """``output`` is a 128-byte ``siginfo_t``.  Note: WAITID reaps the child."""
        info = ffi.new("char[128]")
        args = (self._c, _FROM_SLOT, sqe_flags, idtype, id, info, options)
        return self._queue(OP_WAITID, _prep_waitid, args, (), 0, info)

    # -- cancellation -----------------------------------------------------------------------

    def cancel_soon(self, op: Operation) -> None:
        """End ``op`` from a finalizer: :meth:`cancel`, run on the ring's thread through
        :attr:`call_soon` (at once, on the ring's thread, when no owner set it).

        The cyclic garbage collector runs finalizers on whatever thread triggers it (a worker
        thread, say, while the loop waits in the kernel) and inside whatever code that thread
        was running, where the ring must not be touched; an operation a dropped object owned
        (an armed multishot) must still end, or it would go on taking what its fd receives.
        Never raises: a loop that has stopped ends every operation in :meth:`close` anyway.
        """
        if self._closed or os.getpid() != self._pid:
            return  # over, or the parent's ring (after fork): nothing of ours is in flight
        call = self.call_soon
        try:
            if call is not None:
                call(self._cancel_if_live, op)
            elif threading.get_ident() == self._owner:
                self._cancel_if_live(op)
        except Exception:  # the loop has stopped (its entry queue refuses calls), or the ring is unusable
            pass

    def _cancel_if_live(self, op: Operation) -> None:
        if not self._closed:
            self.cancel(op)  # a no-op for an operation that is done or being cancelled

    def cancel(self, op: Operation) -> bool:
        """End ``op`` early.

        Returns ``True`` if the SQE was withdrawn before the kernel saw it: ``op`` is done with
        ``-ECANCELED`` and its callback will not be called.  Returns ``False`` otherwise: an
        ``ASYNC_CANCEL`` is queued (unless one already is, or ``op`` is done) and ``op`` stays
        alive -- memory and all -- until its own final CQE, which may carry a real result.
        """
        if op.ring is not self:
            raise ValueError(f"{op!r} does not belong to {self!r}")
        if op._state & _LIFE != _PENDING or not op.facts.cancellable:
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
        self._cancel_targets[self._queue_internal(_prep_cancel, (0, op.user_data, 0, 0))] = op
        if op._state & _LIFE == _PENDING:
            op._transition("cancel")
        return False

    def cancel_fd(self, fd: int) -> None:
        """Queue ``ASYNC_CANCEL`` for every operation on ``fd`` (``CANCEL_FD|CANCEL_ALL``).

        Call it *before* closing ``fd``: afterwards the kernel cannot resolve the number.  The
        operations' states do not change here; their final CQEs arrive as usual.
        """
        self._queue_internal(_prep_cancel, (0, 0, _check_fd(fd), lib.AUR_CANCEL_FD | lib.AUR_CANCEL_ALL))

    def _queue_internal(self, prep: Callable[..., int], args: tuple[Any, ...]) -> int:
        """Queue a runtime-internal SQE (an ASYNC_CANCEL); returns its user_data."""
        self._check_usable()
        ud = _TAG_CANCEL | (self._next_cancel_ud & ~_TAG_CANCEL)
        self._next_cancel_ud += 1
        self._queue_mark = ud
        full = (self._c, ud, *args)
        rc = prep(*full)
        if rc < 0:
            self._prep_failed(rc, prep, full)
        return ud

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

        ``wait(0)`` with nothing queued and nothing to reap -- no SQE, no CQE, no deferred
        completion flagged by ``IORING_SQ_TASKRUN``, no CQ overflow -- returns after one
        ``aur_has_work`` call, which reads the ring's shared memory (no system call, the GIL
        kept).  Otherwise one ``aur_wait`` call; the GIL is released only if it may block or
        submits (build.py).  ``aur_wait`` refuses a closed or forked ring and another thread.
        """
        c = self._c
        if timeout is None:
            t_ns = -1
        elif timeout == 0:
            if not _aur_has_work(c):  # one cheap call: the loop polls like this after every batch
                return 0
            t_ns = 0
        else:
            t_ns = _timeout_ns(timeout)
        rc = _aur_wait(c, min_complete, t_ns, self._out, self._cap)
        if rc <= 0:
            return self._wait_failed(rc, 0) if rc else 0
        total = 0
        while True:
            total += rc
            # A copy: a callback may reach another wait (a prep that finds the SQ full and the
            # kernel refusing), which refills self._out while this batch is being dispatched.
            self._dispatch(self._out_view[: rc << 4].tobytes())
            # `more` is worth a look only after a full array: otherwise aur_wait stopped because
            # the CQ was empty, and what completes from now on is the next wait's to reap.
            if rc < self._cap or not c.more:
                self.reaped = total
                return total
            rc = _aur_wait(c, 0, 0, self._out, self._cap)
            if rc <= 0:
                self.reaped = total
                return self._wait_failed(rc, total) if rc else total

    def _wait_failed(self, rc: int, total: int) -> int:
        """``aur_wait`` returned ``rc < 0``: raise, or return ``total`` if a signal interrupted."""
        if rc == -errno.EINTR:
            return total
        if rc == -_EBADFD:
            self._closed = True
        self._check_usable()  # a closed or forked ring, or another thread (-AUR_EWRONGTHREAD)
        raise OSError(-rc, f"io_uring_enter failed: {os.strerror(-rc)}")

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
        pop = ops.pop
        errors: list[BaseException] = []
        for ud, res, flags in _iter_cqes(data):
            if flags == 0 or not flags & _F_MORE_OR_BUFFER:
                op = pop(ud, None)
                if op is not None:
                    # Operation._complete, inlined: a final CQE without MORE/BUFFER is the rule.
                    try:
                        state = _AFTER_FINAL[op._state]
                        if state is None:
                            raise op._illegal("final")
                        op._state = state
                        if op.result is None:  # else: the result CQE came first (result_on_more)
                            op.result = res
                            op.cqe_flags = flags
                        if op._pins is not _NO_PINS:
                            op._release()
                        callback = op.callback
                        op.callback = None
                        op.on_more = None
                        if state >= _F_ABANDONED:
                            op._dispose(res, flags)
                        elif callback is not None:
                            callback(op)
                    except BaseException as exc:  # keep dispatching: every CQE must reach its op
                        errors.append(exc)
                    continue
            else:
                op = ops.get(ud)
                if op is not None:
                    self._dispatch_flagged(op, ud, res, flags, errors)
                    continue
            if ud & _TAG_CANCEL:
                self.cancel_cqes += 1
                target = self._cancel_targets.pop(ud, None)
                if target is not None and res == _NEG_ENOENT and target._state & _LIFE != _DONE:
                    # The cancel found nothing, yet the target has not completed: it was between
                    # states (a poll-driven SEND or RECV being retried from task_work, seen on
                    # 6.18 with a small SO_SNDBUF).  Cancel it again, or it may wait forever.
                    try:
                        self.cancel_retries += 1
                        self._cancel_targets[
                            self._queue_internal(_prep_cancel, (0, target.user_data, 0, 0))
                        ] = target
                    except BaseException as exc:
                        errors.append(exc)
            else:
                self.rejected_cqes += 1
        if errors:
            _raise_dispatch_errors(errors)

    def _dispatch_flagged(
        self, op: Operation, ud: int, res: int, flags: int, errors: list[BaseException]
    ) -> None:
        """A CQE with ``F_MORE`` or ``F_BUFFER`` (see ``_dispatch``); errors go to ``errors``."""
        buffers = op.buffers
        plain = buffers is not None and not buffers.incremental
        if plain and flags & _F_MORE and op._state & _MULTISHOT_OR_ABANDONED == _F_MULTISHOT:
            # A live multishot BUFFER_SELECT receive's CQE (one per message of a stream that
            # switched to one), inlined: ProvidedBufferRing._reaped, then Operation._intermediate.
            on_more = op.on_more
            bid = flags >> _BUFFER_SHIFT
            if flags & _F_BUFFER and on_more is not None and not buffers._closed and 0 <= bid < buffers.count:
                lent = buffers._lent
                if lent[bid]:
                    lent[bid] = 0
                    try:
                        on_more(op, res, flags)
                    except BaseException as exc:  # keep dispatching: every CQE must reach its op
                        errors.append(exc)
                    return
        if plain and not flags & _F_MORE and op.callback is not None:
            # The common case -- a single-shot BUFFER_SELECT receive's final CQE -- inlined:
            # ProvidedBufferRing._reaped for a plain ring, then Operation._complete.
            try:
                bid = flags >> _BUFFER_SHIFT
                lent = buffers._lent
                if buffers._closed or not 0 <= bid < buffers.count or not lent[bid]:
                    buffers._reaped(res, flags)  # closed, or the loud error for a bad bid
                else:
                    lent[bid] = 0
                del self._ops[ud]
                state = _AFTER_FINAL[op._state]
                if state is None or state >= _F_ABANDONED:
                    op._complete(res, flags)  # not expected here: the general path
                    return
                op._state = state
                op.result = res
                op.cqe_flags = flags
                if op._pins is not _NO_PINS:
                    op._release()
                callback = op.callback
                op.callback = None
                op.on_more = None
                callback(op)
            except BaseException as exc:  # keep dispatching: every CQE must reach its op
                errors.append(exc)
            return
        if flags & _F_BUFFER and buffers is not None:
            try:
                op.buffers._reaped(res, flags)
            except BaseException as exc:  # the CQE still goes to its op below
                errors.append(exc)
        try:
            if flags & _F_MORE:
                op._intermediate(res, flags)
            else:
                del self._ops[ud]
                op._complete(res, flags)
        except BaseException as exc:  # keep dispatching: every CQE must reach its op
            errors.append(exc)

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
        return any(op.buffers is buffers for op in self._ops.values())

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
                    op._state |= _F_ABANDONED
                self._ops.clear()
                self._cancel_targets.clear()
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
                op._state |= _F_ABANDONED
            self._ops.clear()
            self._cancel_targets.clear()
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
        self._cancel_targets.clear()
        self._buffer_rings.clear()
        lib.aur_close(self._c)  # no munmap/close happens for a forked ring: see fork_child in aur.c
        _LIVE_RINGS.discard(self)


def _after_fork_in_child() -> None:
    for ring in list(_LIVE_RINGS):
        ring._closed = True
        ring._forked = True
    _LIVE_RINGS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
