"""Datagram sockets on the ring (``_net/_datagram.py``), UDP and AF_UNIX, connected and not:
close while another task receives or sends, no datagram lost or duplicated under cancellation,
a cancelled send never reaching the wire, and anyio's error contract.  (The stream receive
strategies do not apply: a datagram receive is always one RECVMSG/RECV into the socket's own
buffer.)"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from anyio_uring._core import current_runner
from net_support import RING_MODES, Unwedger, fd_count, inflight, run

MODES = pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())


async def _make(kind: str, tmp_path: Path) -> tuple[Any, Callable[[], Awaitable[Any]], list[Any]]:
    """A datagram socket of ``kind`` with nothing to receive, a coroutine function that waits
    on it, and the other resources to close afterwards."""
    others: list[Any] = []
    if kind == "udp":
        sock = await anyio.create_udp_socket(local_host="127.0.0.1")
        return sock, sock.receive, others
    if kind == "connected_udp":
        peer = await anyio.create_udp_socket(local_host="127.0.0.1")
        others.append(peer)
        port = peer.extra(anyio.abc.SocketAttribute.local_port)
        sock = await anyio.create_connected_udp_socket("127.0.0.1", port, local_host="127.0.0.1")
        return sock, sock.receive, others
    if kind == "unix":
        sock = await anyio.create_unix_datagram_socket(local_path=tmp_path / "dgram.sock")
        return sock, sock.receive, others
    if kind == "connected_unix":
        peer = await anyio.create_unix_datagram_socket(local_path=tmp_path / "peer.sock")
        others.append(peer)
        sock = await anyio.create_connected_unix_datagram_socket(
            tmp_path / "peer.sock", local_path=tmp_path / "dgram.sock"
        )
        return sock, sock.receive, others
    assert kind == "blocked_send"
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    try:
        while True:  # fill the send buffer: the peer never reads
            a.send(b"x" * 512)
    except BlockingIOError:
        pass
    others.append(b)
    sock = await anyio.abc.ConnectedUNIXDatagramSocket.from_socket(a)
    return sock, lambda: sock.send(b"y" * 512), others


# ------------------------------------------------------------------------------------------
# 4. close while another task waits
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settle", [True, False], ids=["in_kernel", "at_once"])
@pytest.mark.parametrize("kind", ["udp", "connected_udp", "unix", "connected_unix", "blocked_send"])
@MODES
def test_close_wakes_a_waiting_datagram_operation(
    mode: dict[str, str], kind: str, settle: bool, tmp_path: Path
) -> None:
    """aclose() of a datagram socket another task waits on (a receive with nothing to receive,
    or a send blocked on a full AF_UNIX send buffer): the waiter raises ClosedResourceError, the
    fd is closed, nothing stays in flight, and the fd count returns to its baseline."""

    async def main() -> None:
        fds0, inflight0 = fd_count(), inflight()
        sock, wait, others = await _make(kind, tmp_path)
        raw = sock.extra(anyio.abc.SocketAttribute.raw_socket)
        outcome: list[BaseException] = []
        started = anyio.Event()

        async def waiter() -> None:
            started.set()
            try:
                await wait()
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        with Unwedger(raw, 3.0) as watchdog, anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await started.wait()
                if settle:
                    await anyio.sleep(0.02)
                    assert inflight() > inflight0, "the waiter has no operation in flight"
                await sock.aclose()
        assert not watchdog.fired, "aclose() hung: the operation ignored its cancel"
        assert len(outcome) == 1, "the waiter did not raise ClosedResourceError"
        assert raw.fileno() == -1
        assert inflight() == inflight0, current_runner().ring.ledger()
        with pytest.raises(anyio.ClosedResourceError):
            await wait()
        for other in others:
            if isinstance(other, socket.socket):
                other.close()
            else:
                await other.aclose()
        assert fd_count() == fds0

    run(main, **mode)


# ------------------------------------------------------------------------------------------
# no datagram lost, duplicated or invented under cancellation
# ------------------------------------------------------------------------------------------


def _send_numbered(sock: socket.socket, n: int, rng: random.Random, address: Any = None) -> None:
    with sock:
        for i in range(n):
            payload = struct.pack(">I", i) * rng.randint(1, 64)
            if address is None:
                sock.send(payload)
            else:
                sock.sendto(payload, address)
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 100e-6))


async def _cancel_later(scope: anyio.CancelScope, rng: random.Random) -> None:
    for _ in range(rng.randint(0, 3)):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


@pytest.mark.parametrize("connected", [True, False], ids=["connected", "unconnected"])
@MODES
def test_no_datagram_lost_under_random_cancellation(
    mode: dict[str, str], connected: bool, tmp_path: Path
) -> None:
    """Guards invariant 3 for datagrams: a thread sends 1,500 numbered datagrams over AF_UNIX
    (reliable, flow-controlled) while every receive() runs under a random deadline or a scope
    another task cancels; the datagrams received are exactly 0..n-1 in order, each whole."""
    n = 1500

    async def main() -> dict[str, int]:
        rng = random.Random(99)
        if connected:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock: Any = await anyio.abc.ConnectedUNIXDatagramSocket.from_socket(b)
            address = None
        else:
            a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock = await anyio.create_unix_datagram_socket(local_path=tmp_path / "rx.sock")
            address = str(tmp_path / "rx.sock")
        thread = threading.Thread(target=_send_numbered, args=(a, n, random.Random(5), address), daemon=True)
        got: list[int] = []
        stats = {"cancelled": 0, "attempts": 0}
        async with sock, anyio.create_task_group() as tg:
            thread.start()
            # A lost datagram would leave this loop waiting: fail instead (bounded).
            with anyio.move_on_after(10):
                await _receive_numbered(sock, connected, n, got, stats, rng, tg)
        thread.join()
        assert got == list(range(n)), "datagrams lost, duplicated or reordered"
        return stats

    stats = run(main, **mode)
    assert stats["cancelled"] > 100, stats


async def _receive_numbered(
    sock: Any,
    connected: bool,
    n: int,
    got: list[int],
    stats: dict[str, int],
    rng: random.Random,
    tg: anyio.abc.TaskGroup,
) -> None:
    while len(got) < n:
        stats["attempts"] += 1
        if rng.random() < 0.5:
            scope = anyio.move_on_after(rng.choice([0, 1e-6, rng.uniform(0, 200e-6)]))
        else:
            scope = anyio.CancelScope()
            tg.start_soon(_cancel_later, scope, rng)
        with scope:
            item = await sock.receive()
            data = item if connected else item[0]
            assert len(data) % 4 == 0
            assert len({data[i : i + 4] for i in range(0, len(data), 4)}) == 1  # arrived whole
            got.append(struct.unpack_from(">I", data)[0])
        if scope.cancelled_caught:
            stats["cancelled"] += 1


@MODES
def test_cancelled_datagram_send_is_sent_iff_send_returned(mode: dict[str, str]) -> None:
    """A datagram send that raises the cancellation must never reach the peer later, and one
    that returned must arrive ("the target's CQE decides"): 600 sends of numbered datagrams on
    an AF_UNIX socket whose peer (a thread) reads slowly, so sends block and get cancelled at
    random moments.  The peer receives exactly the ones whose send() returned, in order."""
    n = 600

    async def main() -> tuple[list[int], list[int], int]:
        rng = random.Random(3)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        received: list[int] = []
        stop = threading.Event()

        def reader() -> None:
            b.settimeout(0.2)
            r = random.Random(4)
            while True:
                try:
                    data = b.recv(65536)
                except TimeoutError:
                    if stop.is_set():
                        return
                    continue
                received.append(struct.unpack_from(">I", data)[0])
                if r.random() < 0.2:
                    time.sleep(r.uniform(0, 200e-6))

        thread = threading.Thread(target=reader, daemon=True)
        sent: list[int] = []
        cancelled = 0
        sock = await anyio.abc.ConnectedUNIXDatagramSocket.from_socket(a)
        thread.start()
        async with sock, anyio.create_task_group() as tg:
            for i in range(n):
                if rng.random() < 0.5:
                    scope = anyio.move_on_after(rng.choice([0, 1e-6, rng.uniform(0, 200e-6)]))
                else:
                    scope = anyio.CancelScope()
                    tg.start_soon(_cancel_later, scope, rng)
                with scope:
                    await sock.send(struct.pack(">I", i) * 256)
                    sent.append(i)
                if scope.cancelled_caught:
                    cancelled += 1
            await anyio.sleep(0.05)
        stop.set()
        thread.join()
        b.close()
        return sent, received, cancelled

    sent, received, cancelled = run(main, **mode)
    assert cancelled > 50
    assert received == sent


# ------------------------------------------------------------------------------------------
# errors and round trips
# ------------------------------------------------------------------------------------------


@MODES
def test_datagram_round_trips_and_errors(mode: dict[str, str], tmp_path: Path) -> None:
    """UDP and UNIX datagrams, connected and not: a round trip each way with the sender's
    address; two receives at once -> BusyResourceError; use after close -> ClosedResourceError;
    a whole 65,000-byte datagram arrives whole."""

    async def main() -> None:
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as a:
            port = a.extra(anyio.abc.SocketAttribute.local_port)
            async with await anyio.create_connected_udp_socket(
                "127.0.0.1", port, local_host="127.0.0.1"
            ) as b:
                b_port = b.extra(anyio.abc.SocketAttribute.local_port)
                await b.send(b"to a")
                assert await a.receive() == (b"to a", ("127.0.0.1", b_port))
                await a.send((b"to b", ("127.0.0.1", b_port)))
                assert await b.receive() == b"to b"
                big = bytes(range(256)) * 253 + b"tail"  # 64,772 bytes
                await b.send(big)
                assert (await a.receive())[0] == big
                async with anyio.create_task_group() as tg:
                    tg.start_soon(a.receive)
                    await anyio.sleep(0.01)
                    with pytest.raises(anyio.BusyResourceError):
                        await a.receive()
                    await b.send(b"end the first receive")
        with pytest.raises(anyio.ClosedResourceError):
            await a.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await a.send((b"x", ("127.0.0.1", port)))

        path_a, path_b = tmp_path / "a.sock", tmp_path / "b.sock"
        async with await anyio.create_unix_datagram_socket(local_path=path_a) as ua:
            async with await anyio.create_connected_unix_datagram_socket(path_a, local_path=path_b) as ub:
                await ub.send(b"to a")
                assert await ua.receive() == (b"to a", str(path_b))
                await ua.send((b"to b", str(path_b)))
                assert await ub.receive() == b"to b"
            with pytest.raises(anyio.ClosedResourceError):
                await ub.send(b"closed")

    run(main, **mode)
