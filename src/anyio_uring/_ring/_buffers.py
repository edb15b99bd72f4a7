"""Provided-buffer rings (``IORING_REGISTER_PBUF_RING``).

A :class:`ProvidedBufferRing` is a group of equally sized buffers that the kernel picks from
when a receive with ``IOSQE_BUFFER_SELECT`` actually has data, so an idle receive pins no memory
of its own.  The completion's flags name the buffer (``bid = flags >> 16``); :meth:`take` copies
out exactly ``res`` bytes and hands the buffer back to the kernel once the kernel is done with it.

The ring's memory is owned by this object and referenced by every operation selecting from it,
and by its :class:`~anyio_uring._ring.Ring` until that ring is closed, so the kernel can never
write into freed memory.  (Size classes, lazy growth on ``-ENOBUFS`` and per-socket adaptive sizing
build on this class in the sockets layer.)

Theory of operation
-------------------
Each buffer is either *lent* (published in the ring: the kernel may select it or is still filling
it) or *held* (the kernel is done with it; its data waits to be consumed).  ``Ring._dispatch``
reports every completion that carries a buffer to :meth:`_reaped`, in the order the completions
were reaped, before any callback runs.  A buffer goes back into the ring (its entry rewritten to
the whole buffer: address and length reset) only when it is held *and* every completion that put
data into it has been consumed with :meth:`take` or :meth:`recycle`.  A completion naming a buffer
that is not lent means the kernel handed out one buffer twice: that is a loud
:class:`~anyio_uring._errors.UringInternalError`, never silent corruption.

Plain rings: one completion uses one buffer, from its start.

Incremental rings (``incremental=True``, ``IOU_PBUF_RING_INC``, Linux 6.12+, KERNEL-FACTS.md
section 3): the kernel fills a buffer piecewise and advances the address and length of its ring
entry in place.  Consecutive completions naming the same buffer carry consecutive pieces of it;
a completion with ``IORING_CQE_F_BUF_MORE`` leaves the buffer with the kernel, the first one without
it means the buffer is used up.  The kernel reports lengths, not offsets: each completion's piece
(offset, length) is derived when it is reaped, and the pieces of one buffer are consumed in that
order (first in, first out).  Older kernels (fixed upstream in 2026; liburing's
test/read-inc-buf-more.c) left ``BUF_MORE`` off some completions that did not use the buffer up
(zero-length reads, non-pollable files), so a completion without ``BUF_MORE`` that leaves room in
the buffer counts as "used up" only if the kernel's ring entry says so (its length is 0).

Contract for incremental rings: let one receive at a time select from a group (one multishot
receive, or one single-shot receive after another) -- for one request, reap order is the kernel's
fill order; across concurrent requests that held in every trial here but is not documented -- and
consume each buffer's completions in reap order, most simply with :meth:`take` in the operation's
callback or ``on_more``.  :meth:`take` checks the length of the oldest piece and raises
``ValueError`` on a mismatch instead of returning another completion's bytes.  Bundles
(``IORING_RECVSEND_BUNDLE``: one completion spanning several buffers) are not supported.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .._errors import UringInternalError
from .._native import ffi, lib

if TYPE_CHECKING:
    from ._ring import Ring

__all__ = ["ProvidedBufferRing"]

_F_BUFFER: Final[int] = lib.AUR_CQE_F_BUFFER
_F_BUF_MORE: Final[int] = lib.AUR_CQE_F_BUF_MORE
_SHIFT: Final[int] = lib.AUR_CQE_BUFFER_SHIFT
# Bound once (an attribute of cffi's ``lib`` is a dictionary lookup per use): called per completion.
_pbuf_recycle = lib.aur_pbuf_recycle
_pbuf_entry_len = lib.aur_pbuf_entry_len
_unpack = ffi.unpack


def _incremental_unavailable(reason: str) -> OSError:
    return OSError(
        errno.EOPNOTSUPP,
        f"incremental provided-buffer rings (IOU_PBUF_RING_INC) are unavailable: {reason}. "
        "They need Linux 6.12 or later; use ProvidedBufferRing(..., incremental=False) instead",
    )


class ProvidedBufferRing:
    """``count`` buffers of ``size`` bytes registered as buffer group ``bgid`` on ``ring``.

    ``incremental=True`` lets the kernel fill each buffer with several completions (see the
    module docstring); it raises ``OSError(EOPNOTSUPP)`` where the kernel lacks it or the
    ``incremental_buffers`` feature is masked.
    """

    def __init__(
        self,
        ring: Ring,
        bgid: int,
        count: int,
        size: int,
        *,
        incremental: bool = False,
        capacity: int | None = None,
    ) -> None:
        if capacity is None:
            capacity = count
        if not 1 <= capacity <= 32768 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in 1..32768, got {capacity}")
        if not 1 <= count <= capacity:
            raise ValueError(f"count must be in 1..capacity ({capacity}), got {count}")
        if not 1 <= size <= 1 << 24:
            raise ValueError(f"size must be in 1..16 MiB, got {size}")
        if not 0 <= bgid <= 65534:
            raise ValueError(f"bgid must be in 0..65534, got {bgid}")
        if incremental and not ring.support.incremental_buffers:
            why = (
                "the 'incremental_buffers' feature is masked"
                if "incremental_buffers" in ring.support.disabled
                else f"Linux {ring.support.kernel_release} does not support them"
            )
            raise _incremental_unavailable(why)
        self.ring = ring
        self.bgid = bgid
        #: Buffers in the group so far (it grows with :meth:`grow`, up to ``capacity``).
        self.count = 0
        #: Ring entries: the most buffers the group can ever hold.
        self.capacity = capacity
        self.size = size
        self.incremental = incremental
        #: Buffers handed back to the kernel after use (not counting the initial fill).
        self.recycled = 0
        self._pbuf: Any = ffi.new("aur_pbuf *")
        # The memory: one chunk per fill (the initial one and each grow()), and each buffer's
        # address, by buffer id.
        self._chunks: list[Any] = []
        self._addrs: list[Any] = []
        # Invariant: _lent[bid] == 1 exactly while buffer bid is published in the ring and the
        # kernel has not reported it used up; only then may a completion name it.
        self._lent = bytearray()
        # Incremental rings only: bytes the kernel has put into each buffer since it was
        # published, the ring position of its entry, and the reaped pieces not yet consumed.
        self._filled: list[int] = []
        self._slot: list[int] = []
        self._pieces: dict[int, deque[tuple[int, int]]] = {}
        try:
            flags = lib.AUR_PBUF_RING_INC if incremental else 0
            ring._register_buffer_ring(bgid, self._pbuf, capacity, flags)
        except OSError as exc:
            if incremental and exc.errno == errno.EINVAL:
                raise _incremental_unavailable("the kernel rejected IOU_PBUF_RING_INC (EINVAL)") from exc
            raise
        ring._buffer_rings[bgid] = self
        self._closed = False
        self.grow(count)

    def __repr__(self) -> str:
        kind = "incremental " if self.incremental else ""
        return f"<ProvidedBufferRing {kind}bgid={self.bgid} {self.count}x{self.size}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nbytes(self) -> int:
        return self.count * self.size

    @property
    def lent(self) -> int:
        """How many buffers the kernel may currently select or is still filling."""
        return sum(self._lent)

    def view(self, bid: int, length: int) -> memoryview:
        """A view of the first ``length`` bytes of buffer ``bid`` (valid until recycled)."""
        self._check_bid(bid, length)
        return memoryview(ffi.buffer(self._addrs[bid], length))

    def take(self, res: int, flags: int) -> bytes:
        """Copy out the ``res`` bytes a completion put into its buffer and consume them.

        The buffer goes back to the kernel as soon as the kernel is done with it and nothing of it
        is left to consume.  Raises ``RuntimeError`` for a completion consumed already.
        """
        if not flags & _F_BUFFER:
            raise ValueError("the completion carries no provided buffer (IORING_CQE_F_BUFFER unset)")
        bid = flags >> _SHIFT
        if self._closed or not 0 <= bid < self.count or not 0 <= res <= self.size:
            self._check_bid(bid, res)  # raises
        if not self.incremental:
            lent = self._lent
            if lent[bid]:
                raise RuntimeError(f"buffer {bid} of group {self.bgid} is not held: was it taken twice?")
            addr = self._addrs[bid]
            data: bytes = _unpack(addr, res)
            # _give_back, inlined (one receive each)
            lent[bid] = 1
            self.recycled += 1
            _pbuf_recycle(self._pbuf, addr, self.size, bid)
            return data
        offset = self._consume(bid, res)
        data = bytes(ffi.buffer(self._addrs[bid] + offset, res))
        self._release_if_done(bid)
        return data

    def recycle(self, bid: int) -> None:
        """Consume buffer ``bid`` without copying: hand it back to the kernel.

        In an incremental ring this consumes the oldest unconsumed completion of ``bid``; the
        buffer goes back once the kernel is done with it and every completion is consumed.
        """
        self._check_bid(bid, 0)
        if not self.incremental:
            if self._lent[bid]:
                raise RuntimeError(f"buffer {bid} of group {self.bgid} is not held: was it recycled twice?")
            self._give_back(bid)
            return
        self._consume(bid, None)
        self._release_if_done(bid)

    def grow(self, count: int) -> int:
        """Add up to ``count`` new buffers (new memory) to the group, never beyond ``capacity``;
        the kernel may select them at once.  Returns how many were added."""
        if self._closed:
            raise RuntimeError(f"buffer group {self.bgid} is closed")
        count = min(count, self.capacity - self.count)
        if count <= 0:
            return 0
        chunk = ffi.new("char[]", count * self.size)
        self._chunks.append(chunk)
        first = self.count
        tail = self._pbuf.tail
        for i in range(count):
            addr = chunk + i * self.size
            self._addrs.append(addr)
            lib.aur_pbuf_add(self._pbuf, addr, self.size, first + i, i)
        self._lent.extend(b"\x01" * count)
        if self.incremental:
            self._filled.extend([0] * count)
            self._slot.extend(range(tail, tail + count))
        lib.aur_pbuf_advance(self._pbuf, count)
        self.count = first + count
        return count

    def kernel_head(self) -> int:
        """How many buffers the kernel has consumed so far (IORING_REGISTER_PBUF_STATUS)."""
        rc = lib.aur_pbuf_head(self.ring._c, self._pbuf)
        if rc < 0:
            raise OSError(-rc, "IORING_REGISTER_PBUF_STATUS failed")
        return int(rc)

    def close(self) -> None:
        """Unregister the group.  Refused while an operation may still select from it."""
        if self._closed:
            return
        if self.ring._buffer_ring_in_use(self):
            raise RuntimeError(f"buffer group {self.bgid} is still used by an in-flight operation")
        self._closed = True
        if not self.ring.closed:
            self.ring._unregister_buffer_ring(self.bgid, self._pbuf)

    # -- called by Ring only ----------------------------------------------------------------

    def _reaped(self, res: int, flags: int) -> None:
        """A completion carrying buffer ``flags >> 16`` was reaped (called in reap order)."""
        if self._closed:
            return
        bid = flags >> _SHIFT
        if not 0 <= bid < self.count:
            raise UringInternalError(f"the kernel reported buffer {bid}, outside group {self.bgid}")
        if not self._lent[bid]:
            raise UringInternalError(
                f"the kernel reported buffer {bid} of group {self.bgid}, which it does not hold: "
                "one buffer was handed out twice"
            )
        if not self.incremental:
            self._lent[bid] = 0
            return
        offset = self._filled[bid]
        if not 0 <= res <= self.size - offset:
            raise UringInternalError(
                f"a completion put {res} bytes into buffer {bid} of group {self.bgid}, which had "
                f"{self.size - offset} bytes left"
            )
        self._filled[bid] = offset + res
        self._pieces.setdefault(bid, deque()).append((offset, res))
        if flags & _F_BUF_MORE:
            return  # the kernel keeps filling this buffer
        if offset + res < self.size and _pbuf_entry_len(self._pbuf, self._slot[bid]) != 0:
            return  # no BUF_MORE, yet the kernel's entry still has room: it still holds the buffer
        self._lent[bid] = 0

    def _forget(self) -> None:
        """Called by Ring.close after draining: unregister (the ring fd is about to go)."""
        if not self._closed:
            self._closed = True
            lib.aur_pbuf_unregister(self.ring._c, self._pbuf)

    # -- internals ----------------------------------------------------------------------------

    def _consume(self, bid: int, res: int | None) -> int:
        """Pop the oldest unconsumed piece of ``bid`` (of ``res`` bytes, if given): its offset."""
        pieces = self._pieces.get(bid)
        if not pieces:
            raise RuntimeError(
                f"buffer {bid} of group {self.bgid} has no unconsumed completion: was it consumed twice?"
            )
        offset, length = pieces[0]
        if res is not None and res != length:
            raise ValueError(
                f"the oldest unconsumed completion of buffer {bid} in incremental group {self.bgid} "
                f"has {length} bytes, not {res}: consume an incremental buffer's completions in the "
                "order they were reaped"
            )
        pieces.popleft()
        if not pieces:
            del self._pieces[bid]
        return offset

    def _release_if_done(self, bid: int) -> None:
        if not self._lent[bid] and bid not in self._pieces:
            self._filled[bid] = 0
            self._slot[bid] = self._pbuf.tail
            self._give_back(bid)

    def _give_back(self, bid: int) -> None:
        """Publish buffer ``bid`` again: a fresh entry with its whole address and length."""
        self._lent[bid] = 1
        self.recycled += 1
        _pbuf_recycle(self._pbuf, self._addrs[bid], self.size, bid)

    def _check_bid(self, bid: int, length: int) -> None:
        if self._closed:
            raise RuntimeError(f"buffer group {self.bgid} is closed")
        if not 0 <= bid < self.count or not 0 <= length <= self.size:
            raise ValueError(f"buffer {bid} / length {length} out of range for group {self.bgid}")
