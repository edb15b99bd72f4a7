"""Listeners (TCP and UNIX): multishot ``ACCEPT`` where the kernel has it, one ``ACCEPT`` per
connection otherwise (``disable="multishot_accept"``).

The multishot accept belongs to the listener, not to the accepting task (DESIGN.md section 5):
a cancelled ``accept()`` merely stops waiting, and a connection accepted meanwhile waits for the
next ``accept()`` -- or is closed when the listener closes; it is never leaked.  After an error
ends the multishot operation (``EMFILE`` when the process runs out of fds), ``accept()`` raises
that ``OSError`` once and the next ``accept()`` arms a new one: the listener keeps serving as
soon as fds are free again.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Final

import anyio
import anyio.abc

from .._core._cancel import MultishotFeed
from .._ring import Operation
from ._socket import RingSocket
from ._stream import SocketStream, UNIXSocketStream

__all__ = ["SocketListener"]

_ACCEPT_FLAGS: Final = socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
#: Accept errors that concern one connection only (as trio's listeners): try the next one.
_IGNORABLE: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ETIMEDOUT",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)
#: Connections a multishot accept may queue before it pauses (the kernel's backlog holds more).
_QUEUE_LIMIT: Final = 64


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class SocketListener(RingSocket, anyio.abc.SocketListener):
    """A listening TCP or UNIX socket; ``accept()`` returns the matching stream class."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._unix = sock.family == socket.AF_UNIX
        multishot = self._ring.support.multishot_accept
        self._feed = MultishotFeed(_close_quietly, _QUEUE_LIMIT) if multishot else None
        self._accepting = False

    def _arm(self) -> Operation:
        return self._ring.accept(self._fd, _ACCEPT_FLAGS, multishot=True)

    async def accept(self) -> SocketStream:
        if self._accepting:
            raise anyio.BusyResourceError("accepting connections from")
        self._check()
        self._accepting = True
        try:
            while True:
                if self._feed is not None:
                    res = await self._feed.get(self._arm)
                else:
                    op = self._ring.accept(self._fd, _ACCEPT_FLAGS)
                    res = await self._inflight.wait(op)
                if self._closed:
                    if res >= 0:
                        _close_quietly(res)
                    raise anyio.ClosedResourceError
                if res >= 0:
                    break
                if -res not in _IGNORABLE:
                    raise OSError(-res, os.strerror(-res))
        finally:
            self._accepting = False
        family = self._sock.family
        try:
            sock = socket.socket(family, self._sock.type, self._sock.proto, fileno=res)
        except BaseException:
            _close_quietly(res)
            raise
        if self._unix:
            return UNIXSocketStream(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the connection was reset already: the stream reports it
        return SocketStream(sock)

    def __del__(self) -> None:
        # Dropped without aclose(): an armed multishot accept would outlive the socket object and
        # keep accepting (KERNEL-FACTS.md 2f); end it.
        feed = self.__dict__.get("_feed")
        if feed is not None:
            feed.abandon()

    async def _end_all(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        await self._inflight.end_all()
