"""Listeners on the ring (``_net/_listener.py`` and ``MultishotFeed`` in ``_core/_cancel.py``):
a cancelled accept never loses or leaks a connection (DESIGN.md section 2, invariant 3), close
while another task accepts, and the fallback to one ACCEPT per connection."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from anyio_uring._core import current_runner
from net_support import Unwedger, fd_count, inflight, run

#: Multishot accept (the default) and the fallback, in both ring modes.
ACCEPT_MODES = [
    pytest.param({}, id="multishot-default"),
    pytest.param({"disable": "multishot_accept"}, id="single-default"),
    pytest.param({"disable": "defer_taskrun"}, id="multishot-no_defer"),
    pytest.param({"disable": "multishot_accept,defer_taskrun"}, id="single-no_defer"),
]


class Listening:
    """A raw listening socket (TCP or UNIX) and the clients connecting to it, each client
    identifiable from the server side by its address."""

    def __init__(self, family: str, tmp_path: Path) -> None:
        self.family = family
        if family == "tcp":
            self.sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(tmp_path / "listener.sock"))
            self.sock.listen(4096)
        self.address = self.sock.getsockname()
        self.clients: dict[Any, socket.socket] = {}
        self._n = 0

    def connect(self) -> None:
        """One more client (a plain socket; loopback connects complete at once via the backlog)."""
        if self.family == "tcp":
            client = socket.create_connection(self.address)
        else:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._n += 1
            client.bind(f"\0anyio-uring-test-{os.getpid()}-{id(self)}-{self._n}")
            client.connect(self.address)
        self.clients[client.getsockname()] = client

    def close_clients(self) -> None:
        for client in self.clients.values():
            client.close()


def _peer_key(stream: anyio.abc.SocketStream) -> Any:
    return stream.extra(anyio.abc.SocketAttribute.raw_socket).getpeername()


def _server_side_closed(client: socket.socket) -> bool:
    """True if the client sees EOF or a reset: no open fd in this process holds its server side."""
    client.setblocking(False)
    try:
        client.recv(1)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True  # b"": EOF (a byte would be a test bug: nobody sends)


# ------------------------------------------------------------------------------------------
# 2. cancelled accepts racing incoming connections
# ------------------------------------------------------------------------------------------


async def _connect_later(listening: Listening, rng: random.Random, count: int) -> None:
    for _ in range(rng.randint(0, 3)):
        await anyio.lowlevel.checkpoint()
    for _ in range(count):
        listening.connect()


def _connect_from_a_thread(listening: Listening, stop: threading.Event) -> None:
    rng = random.Random(77)
    while not stop.is_set():
        listening.connect()
        time.sleep(rng.uniform(0, 1e-3))


async def _cancel_later(scope: anyio.CancelScope, rng: random.Random) -> None:
    for _ in range(rng.randint(0, 3)):
        await anyio.lowlevel.checkpoint()
    if rng.random() < 0.3:
        await anyio.sleep(rng.uniform(0, 100e-6))
    scope.cancel()


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("options", ACCEPT_MODES)
def test_cancelled_accepts_never_lose_or_leak_a_connection(
    options: dict[str, str], family: str, tmp_path: Path
) -> None:
    """Guards invariant 3 for listeners: 3,000 accept() calls, each cancelled at a random moment
    (a tiny deadline, or another task's cancel), while clients connect at random moments --
    from the loop one at a time or in bursts past the multishot feed's queue limit (64), and
    from another thread.  Each connection is
    accepted at most once; after listener.aclose() every client sees EOF or a reset (an
    accepted-but-dropped fd would keep its connection open), and the process's fds and the
    ring's in-flight operations return to their baseline."""
    iterations = 3000

    async def main() -> dict[str, int]:
        rng = random.Random(1234)
        fds0, inflight0 = fd_count(), inflight()
        listening = Listening(family, tmp_path)
        listener = await anyio.abc.SocketListener.from_socket(listening.sock)
        accepted: list[Any] = []
        stats = {"accepted": 0, "cancelled": 0, "won": 0}
        stop = threading.Event()
        # Clients from another thread too: connections then arrive while a cancel is on its
        # way (true concurrency), so accepts complete after their cancel was requested.
        thread = threading.Thread(target=_connect_from_a_thread, args=(listening, stop), daemon=True)
        thread.start()
        async with anyio.create_task_group() as tg:
            for _ in range(iterations):
                r = rng.random()
                if r < 0.15:
                    listening.connect()
                elif r < 0.3:
                    tg.start_soon(_connect_later, listening, rng, 1)
                elif r < 0.31:
                    tg.start_soon(_connect_later, listening, rng, 80)
                if rng.random() < 0.5:
                    scope = anyio.move_on_after(rng.choice([0, 1e-6, rng.uniform(0, 500e-6)]))
                else:
                    scope = anyio.CancelScope()
                    tg.start_soon(_cancel_later, scope, rng)
                stream = None
                with scope:
                    stream = await listener.accept()
                    if scope.cancel_called:
                        stats["won"] += 1
                if scope.cancelled_caught:
                    stats["cancelled"] += 1
                if stream is not None:
                    stats["accepted"] += 1
                    accepted.append(_peer_key(stream))
                    await stream.aclose()
        stop.set()
        thread.join()
        raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        with Unwedger(raw, 3.0) as watchdog:
            await listener.aclose()
        assert not watchdog.fired, "listener.aclose() hung: its accept ignored the cancel"
        assert raw.fileno() == -1
        assert len(set(accepted)) == len(accepted), "a connection was accepted twice"
        assert set(accepted) <= set(listening.clients)
        await anyio.sleep(0.01)
        still_open = [key for key, client in listening.clients.items() if not _server_side_closed(client)]
        assert not still_open, f"{len(still_open)} of {len(listening.clients)} connections leaked"
        listening.close_clients()
        assert inflight() == inflight0, current_runner().ring.ledger()
        assert fd_count() == fds0
        stats["clients"] = len(listening.clients)
        return stats

    stats = run(main, **options)
    # The test exercised what it is about:
    assert stats["cancelled"] > 100, stats
    assert 100 < stats["accepted"] < stats["clients"], stats  # some were left for aclose()


@pytest.mark.parametrize("options", ACCEPT_MODES)
def test_connections_queued_past_the_feed_limit_are_all_accepted(options: dict[str, str]) -> None:
    """200 connections wait before the first accept() (more than the multishot feed queues
    before it pauses its operation): every one is accepted exactly once, in arrival order for
    the ones the kernel queued."""
    n = 200

    async def main() -> None:
        listening = Listening("tcp", Path())
        listener = await anyio.abc.SocketListener.from_socket(listening.sock)
        for _ in range(n):
            listening.connect()
        keys = []
        with anyio.fail_after(5):
            async with listener:
                for i in range(n):
                    stream = await listener.accept()
                    keys.append(_peer_key(stream))
                    await stream.aclose()
                    if i == 10:
                        await anyio.sleep(0.01)  # let the feed fill up meanwhile
        assert sorted(keys) == sorted(listening.clients)
        assert keys == list(listening.clients)  # FIFO
        listening.close_clients()

    run(main, **options)


# ------------------------------------------------------------------------------------------
# 4. close while another task accepts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settle", [True, False], ids=["in_kernel", "at_once"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("options", ACCEPT_MODES)
def test_close_wakes_a_waiting_accept(
    options: dict[str, str], family: str, settle: bool, tmp_path: Path
) -> None:
    """aclose() of a listener another task accepts on: the accept raises ClosedResourceError,
    the fd is closed, nothing stays in flight, and later accepts raise ClosedResourceError."""

    async def main() -> None:
        inflight0 = inflight()
        listening = Listening(family, tmp_path)
        listener = await anyio.abc.SocketListener.from_socket(listening.sock)
        raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        outcome: list[BaseException] = []
        started = anyio.Event()

        async def accept() -> None:
            started.set()
            try:
                await listener.accept()
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        with Unwedger(raw, 3.0) as watchdog, anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(accept)
                await started.wait()
                if settle:
                    await anyio.sleep(0.02)
                    assert inflight() > inflight0
                await listener.aclose()
        assert not watchdog.fired
        assert len(outcome) == 1
        assert raw.fileno() == -1
        assert inflight() == inflight0, current_runner().ring.ledger()
        with pytest.raises(anyio.ClosedResourceError):
            await listener.accept()

    run(main, **options)


# ------------------------------------------------------------------------------------------
# 5. fallback
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_single_accept_fallback_serves_several_connections(family: str, tmp_path: Path) -> None:
    """With multishot accept masked, the listener takes one ACCEPT per connection (no feed)
    and serves several connections, each a working stream of the right class."""

    async def main() -> None:
        listening = Listening(family, tmp_path)
        listener = await anyio.abc.SocketListener.from_socket(listening.sock)
        assert listener._feed is None  # white box: the fallback path is the one running
        async with listener:
            for i in range(5):
                if family == "tcp":
                    client: anyio.abc.SocketStream = await anyio.connect_tcp(*listening.address)
                else:
                    client = await anyio.connect_unix(listening.address)
                async with client, await listener.accept() as server:
                    assert isinstance(server, anyio.abc.UNIXSocketStream) == (family == "unix")
                    await client.send(b"hello %d" % i)
                    assert await server.receive() == b"hello %d" % i
                    await server.send(b"back")
                    assert await client.receive() == b"back"

    run(main, disable="multishot_accept")
    assert "multishot_accept" in run(_disabled, disable="multishot_accept")


async def _disabled() -> frozenset[str]:
    return frozenset(current_runner().ring.support.disabled)
