"""Sockets on the ring: stream, listener and datagram objects, and the receive-buffer pool.

* ``_pool``: how streams receive (provided-buffer size classes grown lazily, poll-then-recv,
  owned buffers) and the per-loop socket settings;
* ``_socket``: the shared base (closing, errors); ``_stream``, ``_listener``, ``_datagram``: the
  anyio socket classes; ``_addr``: raw sockaddr encoding; ``_connect``: making and wrapping
  sockets (what the backend's socket methods call).

Socket classes build an operation, await it through ``_core`` (``InFlight``,
``MultishotFeed``, ``wait_operation``) and translate the result; they hold no cancellation
logic.
"""

from ._connect import (
    connect_tcp,
    connect_unix,
    create_udp_socket,
    create_unix_datagram_socket,
    listener,
)
from ._datagram import ConnectedUDPSocket, ConnectedUNIXDatagramSocket, UDPSocket, UNIXDatagramSocket
from ._listener import SocketListener
from ._pool import NetConfig, configure, net_state
from ._stream import SocketStream, UNIXSocketStream

__all__ = [
    "ConnectedUDPSocket",
    "ConnectedUNIXDatagramSocket",
    "NetConfig",
    "SocketListener",
    "SocketStream",
    "UDPSocket",
    "UNIXDatagramSocket",
    "UNIXSocketStream",
    "configure",
    "connect_tcp",
    "connect_unix",
    "create_udp_socket",
    "create_unix_datagram_socket",
    "listener",
    "net_state",
]
