"""Raw ``struct sockaddr`` encoding and decoding for ring operations (CONNECT, SENDMSG, ACCEPT,
RECVMSG), which take and return socket addresses as bytes rather than Python tuples.

Only numeric addresses are encoded here; names are resolved before (``getaddrinfo``).  The
layouts are Linux's: ``sa_family`` is a native-endian ``unsigned short``, ports and IPv4/IPv6
addresses are in network order, ``sin6_scope_id`` is native-endian.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, Final

__all__ = ["SOCKADDR_CAPACITY", "decode_sockaddr", "encode_sockaddr"]

#: ``sizeof(struct sockaddr_storage)``: room for any address the kernel returns.
SOCKADDR_CAPACITY: Final = 128

_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)
_AF_UNIX: Final = int(socket.AF_UNIX)
_SUN_PATH_MAX: Final = 108
_IN4: Final = struct.Struct("=H")  # sa_family, then port/address packed by hand
_IN6_TAIL: Final = struct.Struct("=I")


def _ip_bytes(family: int, host: str) -> tuple[bytes, int]:
    """``inet_pton`` of ``host``; for IPv6 also the scope id of a ``%iface`` suffix."""
    scope = 0
    if family == _AF_INET6 and "%" in host:
        host, _, iface = host.partition("%")
        scope = int(iface) if iface.isdigit() else socket.if_nametoindex(iface)
    try:
        return socket.inet_pton(family, host), scope
    except OSError:
        raise OSError(
            f"{host!r} is not a numeric {'IPv6' if family == _AF_INET6 else 'IPv4'} address "
            "(resolve names with getaddrinfo first)"
        ) from None


def _port(port: Any) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise OverflowError(f"port must be an int in 0..65535, got {port!r}")
    return port


def encode_sockaddr(family: int, address: Any) -> bytes:
    """The raw ``struct sockaddr`` of ``address`` (as the ``socket`` module accepts it) for
    ``family``: ``(host, port)`` / ``(host, port, flowinfo, scope_id)`` or a UNIX path (``str``,
    ``bytes`` or path-like; a leading NUL names an abstract socket)."""
    if family == _AF_INET:
        host, port = address[:2]
        packed, _ = _ip_bytes(family, host)
        return _IN4.pack(family) + struct.pack("!H", _port(port)) + packed + bytes(8)
    if family == _AF_INET6:
        host, port = address[0], address[1]
        flowinfo = address[2] if len(address) > 2 else 0
        packed, scope = _ip_bytes(family, host)
        if len(address) > 3:
            scope = address[3]
        return _IN4.pack(family) + struct.pack("!HI", _port(port), flowinfo) + packed + _IN6_TAIL.pack(scope)
    if family == _AF_UNIX:
        path = os.fsencode(address)
        if len(path) > _SUN_PATH_MAX - (0 if path[:1] == b"\0" else 1):
            raise OSError(f"AF_UNIX path too long ({len(path)} bytes): {address!r}")
        # Abstract names are exactly their bytes; filesystem paths get their terminating NUL.
        return _IN4.pack(family) + path + (b"" if path[:1] == b"\0" else b"\0")
    raise ValueError(f"unsupported address family {family!r}")


def decode_sockaddr(raw: bytes) -> Any:
    """The Python form (as ``socket.getpeername`` returns it) of a raw ``struct sockaddr``."""
    if len(raw) < 2:
        return "" if not raw else None  # an unnamed UNIX socket reports length 0 or 2
    (family,) = _IN4.unpack_from(raw)
    if family == _AF_INET:
        (port,) = struct.unpack_from("!H", raw, 2)
        return socket.inet_ntop(_AF_INET, raw[4:8]), port
    if family == _AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope,) = _IN6_TAIL.unpack_from(raw, 24)
        return socket.inet_ntop(_AF_INET6, raw[8:24]), port, flowinfo, scope
    if family == _AF_UNIX:
        path = raw[2:]
        if path[:1] != b"\0":
            path = path.split(b"\0", 1)[0]
        return os.fsdecode(path) if path[:1] != b"\0" else path
    raise ValueError(f"unsupported address family {family}")
