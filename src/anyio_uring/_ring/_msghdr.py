"""``struct msghdr`` for SENDMSG/RECVMSG, together with the memory it points at.

A :class:`MsgHdr` is pinned by its Operation like any buffer: the iovecs, the address and the
control (ancillary data) buffers stay alive and exported until the final CQE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._native import ffi

__all__ = ["MsgHdr"]


class MsgHdr:
    """A message header for one SENDMSG or RECVMSG.

    ``buffers`` are the data (bytes-like; writable ones for receiving).  ``name`` is a raw
    ``struct sockaddr`` to send to, ``name_capacity`` the room for the sender's address when
    receiving; ``control`` / ``control_capacity`` likewise for ancillary data (e.g. SCM_RIGHTS).
    """

    __slots__ = ("_exports", "_keep", "_struct", "control_capacity", "name_capacity", "nbytes", "ptr")

    def __init__(
        self,
        buffers: Sequence[Any],
        *,
        writable: bool = False,
        name: bytes | None = None,
        name_capacity: int = 0,
        control: bytes | None = None,
        control_capacity: int = 0,
    ) -> None:
        pins = [ffi.from_buffer(b, require_writable=writable) for b in buffers]
        iov = ffi.new("aur_iovec[]", max(len(pins), 1))
        for i, pin in enumerate(pins):
            iov[i].base = pin
            iov[i].len = len(pin)
        hdr = ffi.new("aur_msghdr *")
        hdr.iov = iov
        hdr.iovlen = len(pins)
        keep: list[Any] = [iov]
        if name is not None or name_capacity:
            name_buf = ffi.new("char[]", max(len(name or b""), name_capacity, 1))
            if name:
                ffi.memmove(name_buf, name, len(name))
            hdr.name = name_buf
            hdr.namelen = len(name) if name else name_capacity
            keep.append(name_buf)
        if control is not None or control_capacity:
            size = max(len(control or b""), control_capacity)
            ctl_buf = ffi.new("char[]", max(size, 1))
            if control:
                ffi.memmove(ctl_buf, control, len(control))
            hdr.control = ctl_buf
            hdr.controllen = len(control) if control else control_capacity
            keep.append(ctl_buf)
        self._struct = hdr
        self._exports = pins
        self._keep = keep
        self.ptr = hdr
        self.nbytes = sum(len(p) for p in pins)
        self.name_capacity = name_capacity
        self.control_capacity = control_capacity

    @property
    def flags(self) -> int:
        """``msg_flags`` as set by the kernel after a receive (MSG_TRUNC, MSG_CTRUNC, ...)."""
        return int(self._struct.flags)

    def name(self) -> bytes:
        """The address the kernel stored (receive) or the one given (send)."""
        hdr = self._struct
        if hdr.name == ffi.NULL:
            return b""
        return bytes(ffi.buffer(hdr.name, hdr.namelen))

    def control(self) -> bytes:
        """The ancillary data the kernel stored (receive) or the one given (send)."""
        hdr = self._struct
        if hdr.control == ffi.NULL:
            return b""
        return bytes(ffi.buffer(hdr.control, hdr.controllen))

    def release_pins(self) -> None:
        """Release the exported caller buffers (called by the ring after the final CQE)."""
        for pin in self._exports:
            ffi.release(pin)
        self._exports = []
