"""Owned results: a file descriptor an operation produced, closed unless someone takes it.

An ``OPENAT``, ``ACCEPT`` or ``SOCKET`` that completes hands its fd to whoever waited as an
:class:`OwnedFd` (monoio's ``MaybeFd``).  Until :meth:`OwnedFd.take` is called, the fd belongs to
that object: leaving a ``with`` block, an exception, cancellation or garbage collection closes it,
so no path between "the kernel made an fd" and "an object that closes it holds it" can drop it.
(An fd whose operation nobody waits for any more is closed by the ring itself: ``Operation.abandon``.)
"""

from __future__ import annotations

import os
import warnings
from types import TracebackType
from typing import Final

__all__ = ["OwnedFd"]

_NONE: Final = -1


class OwnedFd:
    """A file descriptor owned by this object until :meth:`take` (see the module docstring)."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"an owned file descriptor must be a non-negative int, got {fd!r}")
        self._fd = fd

    def __repr__(self) -> str:
        state = "taken or closed" if self._fd == _NONE else f"fd={self._fd}"
        return f"<OwnedFd {state}>"

    @property
    def fd(self) -> int:
        """The fd, still owned by this object (raises once taken or closed)."""
        if self._fd == _NONE:
            raise ValueError("the file descriptor was already taken or closed")
        return self._fd

    @property
    def owned(self) -> bool:
        """Whether this object still owns (and will close) the fd."""
        return self._fd != _NONE

    def take(self) -> int:
        """Transfer ownership to the caller, who from now on must close the fd."""
        fd = self.fd
        self._fd = _NONE
        return fd

    def close(self) -> None:
        """Close the fd unless it was taken (idempotent)."""
        fd, self._fd = self._fd, _NONE
        if fd != _NONE:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", _NONE) != _NONE:
            warnings.warn(f"unclosed owned file descriptor {self._fd}", ResourceWarning, stacklevel=2)
            self.close()
