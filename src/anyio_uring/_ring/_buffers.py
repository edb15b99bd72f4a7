"""Provided-buffer rings (``IORING_REGISTER_PBUF_RING``).

A :class:`ProvidedBufferRing` is a group of equally sized buffers that the kernel picks from
when a receive with ``IOSQE_BUFFER_SELECT`` actually has data, so an idle receive pins no memory
of its own.  The completion's flags name the buffer (``bid = flags >> 16``); :meth:`take` copies
out exactly ``res`` bytes and hands the buffer straight back to the kernel.

The ring's memory is owned by this object and referenced by every operation selecting from it,
and by its :class:`~anyio_uring._ring.Ring` until that ring is closed, so the kernel can never
write into freed memory.  (Size classes, lazy growth on ``-ENOBUFS`` and per-socket adaptive sizing
build on this class in the sockets layer.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._native import ffi, lib

if TYPE_CHECKING:
    from ._ring import Ring

__all__ = ["ProvidedBufferRing"]


class ProvidedBufferRing:
    """``count`` buffers of ``size`` bytes registered as buffer group ``bgid`` on ``ring``."""

    def __init__(self, ring: Ring, bgid: int, count: int, size: int, *, incremental: bool = False) -> None:
        if not 1 <= count <= 32768 or count & (count - 1):
            raise ValueError(f"count must be a power of two in 1..32768, got {count}")
        if not 1 <= size <= 1 << 24:
            raise ValueError(f"size must be in 1..16 MiB, got {size}")
        if not 0 <= bgid <= 65534:
            raise ValueError(f"bgid must be in 0..65534, got {bgid}")
        self.ring = ring
        self.bgid = bgid
        self.count = count
        self.size = size
        self._pbuf: Any = ffi.new("aur_pbuf *")
        self._mem: Any = ffi.new("char[]", count * size)
        ring._register_buffer_ring(bgid, self._pbuf, count, lib.AUR_PBUF_RING_INC if incremental else 0)
        ring._buffer_rings[bgid] = self
        for bid in range(count):
            lib.aur_pbuf_add(self._pbuf, self._mem + bid * size, size, bid, bid)
        lib.aur_pbuf_advance(self._pbuf, count)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nbytes(self) -> int:
        return self.count * self.size

    def view(self, bid: int, length: int) -> memoryview:
        """A view of the first ``length`` bytes of buffer ``bid`` (valid until recycled)."""
        self._check_bid(bid, length)
        return memoryview(ffi.buffer(self._mem + bid * self.size, length))

    def take(self, res: int, flags: int) -> bytes:
        """Copy out the ``res`` bytes a completion put into its buffer and recycle the buffer."""
        if not flags & lib.AUR_CQE_F_BUFFER:
            raise ValueError("the completion carries no provided buffer (IORING_CQE_F_BUFFER unset)")
        bid = flags >> lib.AUR_CQE_BUFFER_SHIFT
        self._check_bid(bid, res)
        data = bytes(ffi.buffer(self._mem + bid * self.size, res))
        self.recycle(bid)
        return data

    def recycle(self, bid: int) -> None:
        """Hand buffer ``bid`` back to the kernel."""
        self._check_bid(bid, 0)
        lib.aur_pbuf_recycle(self._pbuf, self._mem + bid * self.size, self.size, bid)

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

    def _forget(self) -> None:
        """Called by Ring.close after draining: unregister (the ring fd is about to go)."""
        if not self._closed:
            self._closed = True
            lib.aur_pbuf_unregister(self.ring._c, self._pbuf)

    def _check_bid(self, bid: int, length: int) -> None:
        if self._closed:
            raise RuntimeError(f"buffer group {self.bgid} is closed")
        if not 0 <= bid < self.count or not 0 <= length <= self.size:
            raise ValueError(f"buffer {bid} / length {length} out of range for group {self.bgid}")
