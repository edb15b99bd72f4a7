"""Small helpers shared by test modules."""

from __future__ import annotations


def pinned(buf: bytearray) -> bool:
    """A bytearray exported to the kernel cannot be resized: that is how we see it is pinned."""
    try:
        buf.extend(b"x")
    except BufferError:
        return True
    del buf[-1]
    return False
