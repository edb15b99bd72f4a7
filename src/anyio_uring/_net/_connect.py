"""Making and wrapping sockets: what the backend's socket methods call.

``connect_tcp``/``connect_unix`` use the ring's ``CONNECT``; a failed or cancelled connect closes
its socket and raises (``OSError`` for a refused or unreachable address, as anyio's happy
eyeballs expects).  A connect that completes while its task is being cancelled returns the
connected stream, and the cancellation lands at the caller's next checkpoint (anyio's
``connect_tcp`` closes such a winner itself).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from .._core import current_runner
from .._core._cancel import wait_operation
from ._addr import encode_sockaddr
from ._datagram import ConnectedUDPSocket, ConnectedUNIXDatagramSocket, UDPSocket, UNIXDatagramSocket
from ._listener import SocketListener
from ._stream import SocketStream, UNIXSocketStream

__all__ = [
    "connect_tcp",
    "connect_unix",
    "create_udp_socket",
    "create_unix_datagram_socket",
]


async def _connect(sock: socket.socket, address: Any) -> None:
    """CONNECT ``sock`` to ``address``; closes ``sock`` on failure or cancellation."""
    try:
        sockaddr = encode_sockaddr(sock.family, address)
        res = await wait_operation(current_runner().ring.connect(sock.fileno(), sockaddr))
        if res < 0:
            raise OSError(-res, f"{os.strerror(-res)} (connecting to {address!r})")
    except BaseException:
        sock.close()
        raise


async def connect_tcp(host: str, port: int, local_address: Any = None) -> SocketStream:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_address:
            sock.bind(local_address)
    except BaseException:
        sock.close()
        raise
    await _connect(sock, (host, port))
    return SocketStream(sock)


async def connect_unix(path: str | bytes, kind: int = socket.SOCK_STREAM) -> UNIXSocketStream:
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.setblocking(False)
    await _connect(sock, path)
    return UNIXSocketStream(sock)


async def create_udp_socket(
    family: socket.AddressFamily,
    local_address: Any,
    remote_address: Any,
    reuse_port: bool,
) -> UDPSocket | ConnectedUDPSocket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if local_address:
            sock.bind(local_address)
    except BaseException:
        sock.close()
        raise
    if remote_address:
        await _connect(sock, remote_address)
        return ConnectedUDPSocket(sock)
    return UDPSocket(sock)


async def create_unix_datagram_socket(
    sock: socket.socket, remote_path: str | bytes | None
) -> UNIXDatagramSocket | ConnectedUNIXDatagramSocket:
    if remote_path:
        await _connect(sock, remote_path)
        return ConnectedUNIXDatagramSocket(sock)
    return UNIXDatagramSocket(sock)


def listener(sock: socket.socket) -> SocketListener:
    """A listener over the bound, listening ``sock`` (TCP or UNIX)."""
    return SocketListener(sock)
