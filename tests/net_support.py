"""Helpers shared by the socket tests (test_net_*.py): running a loop with backend options,
loopback connection pairs, and the accounting (fds, in-flight operations) the tests compare
against a baseline."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import anyio
import anyio.abc
import pytest

from anyio_uring._core import current_runner
from anyio_uring._net._pool import net_state

#: The receive strategies (backend option ``socket_receive``).
STRATEGIES = ("hybrid", "select", "poll", "owned", "multishot")

#: The two ring modes: the default (DEFER_TASKRUN where the kernel has it) and the other one.
RING_MODES = {"default": {}, "no_defer": {"disable": "defer_taskrun"}}

#: Every strategy in every ring mode, as pytest parameters of backend options -- but for
#: "multishot" without DEFER_TASKRUN, which is "hybrid" without the switch, i.e. "hybrid-no_defer"
#: (test_multishot_needs_defer_taskrun checks that).
STRATEGY_MODES = [
    pytest.param({"socket_receive": strategy, **mode}, id=f"{strategy}-{name}")
    for strategy in STRATEGIES
    for name, mode in RING_MODES.items()
    if not (strategy == "multishot" and "defer_taskrun" in mode.get("disable", ""))
]


def run(fn: Any, *args: Any, **options: Any) -> Any:
    """``anyio.run`` on the uring backend with ``options`` as its backend options."""
    return anyio.run(fn, *args, backend="uring", backend_options=options or None)


def fd_count() -> int:
    """The process's open file descriptors (the listing's own fd is counted at every call)."""
    return len(os.listdir("/proc/self/fd"))


def inflight() -> int:
    """Operations the current loop's ring has in flight."""
    return int(current_runner().ring.inflight)


def strategy() -> str:
    """The receive strategy the current loop resolved."""
    return str(net_state(current_runner()).strategy)


def pool() -> Any:
    """The current loop's ReceivePool."""
    return net_state(current_runner()).pool


async def tcp_pair() -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
    """A connected loopback TCP pair ``(client, server)``, both backend streams."""
    async with await tcp_listener() as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
    return client, server


async def tcp_listener() -> anyio.abc.SocketListener:
    """A backend listener on an ephemeral loopback TCP port."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
    return await anyio.abc.SocketListener.from_socket(sock)


async def unix_pair() -> tuple[anyio.abc.UNIXSocketStream, anyio.abc.UNIXSocketStream]:
    """A connected AF_UNIX stream pair, both backend streams."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return await anyio.abc.UNIXSocketStream.from_socket(a), await anyio.abc.UNIXSocketStream.from_socket(b)


async def stream_pair(kind: str) -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
    """``tcp_pair()`` or ``unix_pair()`` by name."""
    if kind == "tcp":
        return await tcp_pair()
    return await unix_pair()


class Unwedger:
    """A watchdog for tests whose failure mode is a hang on a blocked send: after ``seconds`` a
    thread shuts ``sock`` down (SHUT_RDWR, through a dup of its fd), which ends any operation
    still in flight on it, so the test fails instead of hanging.  ``fired`` says whether it had to."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock.dup()
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.fired = False

    def _run(self) -> None:
        if self._stop.wait(self._seconds):
            return
        self.fired = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self) -> Unwedger:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
