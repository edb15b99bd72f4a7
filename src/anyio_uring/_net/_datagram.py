"""Datagram sockets (UDP and UNIX), connected and not.

A receive is one ``RECVMSG`` (``RECV`` when connected) into the socket's own 64 KiB buffer:
datagram sockets are few, and a datagram must arrive whole.  A send is one ``SENDMSG`` with the
destination (``SEND`` when connected); it waits while the kernel's send buffer is full, and a
cancelled send never reaches the wire later.
"""

from __future__ import annotations

import socket
from typing import Any, Final

import anyio
import anyio.abc
from anyio._core._sockets import convert_ipv6_sockaddr

from .._ring import MsgHdr
from ._addr import SOCKADDR_CAPACITY, decode_sockaddr, encode_sockaddr
from ._socket import RingSocket, broken

__all__ = [
    "ConnectedUDPSocket",
    "ConnectedUNIXDatagramSocket",
    "UDPSocket",
    "UNIXDatagramSocket",
]

_MAX_DATAGRAM: Final = 65536
_SEND_FLAGS: Final = socket.MSG_NOSIGNAL


class _DatagramSocket(RingSocket):
    """Receive and send of whole datagrams, one task at a time each way."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._buf = bytearray(_MAX_DATAGRAM)
        self._receiving = False
        self._sending = False

    def _start(self, receiving: bool) -> None:
        if receiving:
            if self._receiving:
                raise anyio.BusyResourceError("reading from")
        elif self._sending:
            raise anyio.BusyResourceError("writing to")
        self._check()

    async def _receive_from(self) -> tuple[bytes, Any]:
        self._start(True)
        msg = MsgHdr([self._buf], writable=True, name_capacity=SOCKADDR_CAPACITY)
        self._receiving = True
        try:
            res = await self._inflight.wait(self._ring.recvmsg(self._fd, msg))
        finally:
            self._receiving = False
        if self._inflight.closing:
            raise anyio.ClosedResourceError
        if res < 0:
            broken(res)
        return bytes(memoryview(self._buf)[:res]), decode_sockaddr(msg.name())

    async def _receive(self) -> bytes:
        self._start(True)
        self._receiving = True
        try:
            res = await self._inflight.wait(self._ring.recv(self._fd, self._buf))
        finally:
            self._receiving = False
        if self._inflight.closing:
            raise anyio.ClosedResourceError
        if res < 0:
            broken(res)
        return bytes(memoryview(self._buf)[:res])

    async def _send_to(self, data: bytes, address: Any) -> None:
        self._start(False)
        family = self._sock.family
        try:
            name = encode_sockaddr(family, address)
        except OSError:
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise
            # A host name: resolve it (in a worker thread, like every backend).
            host, port = address[:2]
            infos = await anyio.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            name = encode_sockaddr(family, infos[0][4])
            self._check()
        msg = MsgHdr([data], name=name)
        await self._send_msg(msg)

    async def _send_msg(self, msg: MsgHdr | bytes) -> None:
        self._start(False)
        self._sending = True
        try:
            if isinstance(msg, MsgHdr):
                op = self._ring.sendmsg(self._fd, msg, _SEND_FLAGS)
            else:
                op = self._ring.send(self._fd, msg, _SEND_FLAGS)
            res = await self._inflight.wait(op)
        finally:
            self._sending = False
        if self._inflight.closing:
            raise anyio.ClosedResourceError
        if res < 0:
            broken(res)


class UDPSocket(_DatagramSocket, anyio.abc.UDPSocket):
    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        data, addr = await self._receive_from()
        return data, convert_ipv6_sockaddr(addr)

    async def send(self, item: tuple[bytes, tuple[str, int]]) -> None:
        data, address = item
        await self._send_to(data, address)


class ConnectedUDPSocket(_DatagramSocket, anyio.abc.ConnectedUDPSocket):
    async def receive(self) -> bytes:
        return await self._receive()

    async def send(self, item: bytes) -> None:
        await self._send_msg(item)


class UNIXDatagramSocket(_DatagramSocket, anyio.abc.UNIXDatagramSocket):
    async def receive(self) -> tuple[bytes, str]:
        data, path = await self._receive_from()
        return data, path

    async def send(self, item: tuple[bytes, str]) -> None:
        data, path = item
        await self._send_to(data, path)


class ConnectedUNIXDatagramSocket(_DatagramSocket, anyio.abc.ConnectedUNIXDatagramSocket):
    async def receive(self) -> bytes:
        return await self._receive()

    async def send(self, item: bytes) -> None:
        await self._send_msg(item)
