"""Name resolution: ``getaddrinfo`` / ``getnameinfo`` in worker threads.

The C library's resolver blocks and io_uring has no resolver opcode, so lookups run in worker
threads with ``abandon_on_cancel=True`` (a cancelled lookup returns at once; its thread finishes
in the background and its result is dropped).  Numeric lookups -- an IP address literal and a
numeric port -- cannot block, so they are answered inline without a thread (as trio does), still
at a checkpoint.

Host names: anyio's ``getaddrinfo`` encodes a ``str`` host with IDNA 2008 before calling the
backend, so the backend usually receives ``bytes``.  A ``str`` passed here directly gets the same
treatment (ASCII is passed through unchanged, so ``"::1"`` or ``"localhost"`` are untouched;
anything else goes through ``idna.encode(uts46=True)``), never Python's built-in IDNA 2003 codec.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TypeAlias

from .._core._run import checkpoint_if_cancelled
from .._core._threads import to_thread_run_sync
from .._core._traps import cancel_shielded_checkpoint

__all__ = ["AddrInfo", "encode_hostname", "getaddrinfo", "getnameinfo"]

AddrInfo: TypeAlias = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]

_NUMERIC_ONLY = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NUMERIC_NAMES = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


def encode_hostname(host: str) -> bytes:
    """Encode a host name the way anyio does (IDNA 2008, UTS #46 mapping)."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        import idna

        return idna.encode(host, uts46=True)


async def getaddrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> Sequence[AddrInfo]:
    """:func:`socket.getaddrinfo`, without blocking the loop (same arguments and result).

    :raises socket.gaierror: if the name cannot be resolved
    :raises idna.IDNAError: if a ``str`` host is not a valid internationalized name
    """
    await checkpoint_if_cancelled()
    if isinstance(host, str):
        host = encode_hostname(host)
    try:
        result = socket.getaddrinfo(host, port, family, type, proto, flags | _NUMERIC_ONLY)
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            raise  # a numeric address that is wrong for the family, etc.: a thread says the same
    else:
        await cancel_shielded_checkpoint()
        return result
    return await to_thread_run_sync(
        socket.getaddrinfo, host, port, family, type, proto, flags, abandon_on_cancel=True
    )


async def getnameinfo(
    sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0
) -> tuple[str, str]:
    """:func:`socket.getnameinfo`, without blocking the loop (same arguments and result)."""
    if flags & _NUMERIC_NAMES == _NUMERIC_NAMES:
        await checkpoint_if_cancelled()
        result = socket.getnameinfo(sockaddr, flags)
        await cancel_shielded_checkpoint()
        return result
    return await to_thread_run_sync(socket.getnameinfo, sockaddr, flags, abandon_on_cancel=True)
