"""What every socket object of the backend shares: the wrapped ``socket.socket``, the operations
it has in flight, closing, and the translation of results into anyio's errors.

Socket classes hold no cancellation logic (DESIGN.md section 3): each builds a ring operation,
awaits it through :class:`~anyio_uring._core._cancel.InFlight` (or a
:class:`~anyio_uring._core._cancel.MultishotFeed`) and translates the result.  Closing ends
whatever is in flight -- every waiting task resumes and raises ``ClosedResourceError`` -- waits
for the final CQEs, and only then closes the fd, so the kernel never touches a reused fd number
and no orphaned receive eats data (KERNEL-FACTS.md section 2f).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Final, NoReturn

import anyio

from .._core import checkpoint, current_runner
from .._core._cancel import InFlight

if TYPE_CHECKING:
    from .._core import Runner
    from .._ring import Ring

__all__ = ["RingSocket", "broken", "check_socket"]

_ECANCELED: Final = -errno.ECANCELED


def broken(res: int) -> NoReturn:
    """Raise ``BrokenResourceError`` caused by the ``OSError`` of the result ``res`` (< 0)."""
    raise anyio.BrokenResourceError from OSError(-res, os.strerror(-res))


def check_socket(sock: socket.socket, kind: int | None = None, family: int | None = None) -> None:
    """Refuse what cannot be wrapped: a closed socket, the wrong type or family."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
    if sock.fileno() < 0:
        raise ValueError("the socket is closed")
    if kind is not None and sock.type != kind:
        raise ValueError(f"the socket must be of type {socket.SocketKind(kind).name}, not {sock.type.name}")
    if family is not None and sock.family != family:
        raise ValueError(
            f"the socket must be of family {socket.AddressFamily(family).name}, not {sock.family.name}"
        )


class RingSocket:
    """A socket driven by the current loop's ring (the base of every socket object here)."""

    # Not __slots__: anyio's ABCs (TypedAttributeProvider) have instance dictionaries anyway.

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        runner: Runner = current_runner()
        self._ring: Ring = runner.ring
        self._inflight = InFlight()
        self._closed = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    def _check(self) -> None:
        """Raise if the socket cannot be used: closed by us, or closed under us."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._sock.fileno() < 0:
            raise anyio.BrokenResourceError("the socket was closed outside of its anyio object")

    async def _end_all(self) -> None:
        """End every operation in flight and wait for their final CQEs (shielded)."""
        await self._inflight.end_all()

    async def aclose(self) -> None:
        """Close the socket: tasks waiting on it raise ``ClosedResourceError``; the fd is closed
        once their operations are over.  A checkpoint (after closing)."""
        self._closed = True
        await self._end_all()  # a second closer waits for the same operations, then finds it closed
        self._sock.close()
        await checkpoint()
