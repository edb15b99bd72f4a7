"""Socket streams on the ring (``_net/_stream.py``, ``_net/_pool.py``), over real loopback TCP and
AF_UNIX connections: no byte lost under cancellation (DESIGN.md section 2, invariant 3), many
idle connections pinning nothing (section 6), close-while-waiting, the receive strategies and
their fallbacks, the mapping of errors to anyio's exceptions, and the adaptive size classes."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import ssl
import struct
import threading
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.tls import TLSStream

from anyio_uring._core import current_runner
from anyio_uring._net._pool import SIZE_CLASSES
from net_support import (
    RING_MODES,
    STRATEGIES,
    STRATEGY_MODES,
    Unwedger,
    fd_count,
    inflight,
    pool,
    run,
    strategy,
    stream_pair,
    tcp_listener,
    tcp_pair,
    unix_pair,
)


def counter_pattern(nbytes: int) -> bytes:
    """``nbytes`` of consecutive big-endian 32-bit counters: any lost, repeated or reordered
    piece of it changes the concatenation."""
    words = (nbytes + 3) // 4
    return struct.pack(f">{words}I", *range(words))[:nbytes]


def first_difference(got: bytes, want: bytes) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"first difference at byte {i} of {len(want)}"
    return f"got {len(got)} bytes, want {len(want)}"


# ------------------------------------------------------------------------------------------
# 1. no byte lost under cancellation
# ------------------------------------------------------------------------------------------


async def _random_pause(rng: random.Random) -> None:
    r = rng.random()
    if r < 0.3:
        return
    if r < 0.6:
        await anyio.lowlevel.checkpoint()
    elif r < 0.8:
        await anyio.sleep(0)
    else:
        await anyio.sleep(rng.uniform(0, 200e-6))


async def _send_in_chunks(stream: anyio.abc.SocketStream, data: bytes, rng: random.Random) -> None:
    """Send ``data`` in random-sized chunks with random small pauses, then close (EOF)."""
    async with stream:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 3, 64, rng.randint(1, 500), rng.randint(1, 5000)])
            await stream.send(view[pos : pos + n])
            pos += n
            await _random_pause(rng)


async def _cancel_later(scope: anyio.CancelScope, rng: random.Random) -> None:
    for _ in range(rng.randint(0, 4)):
        await anyio.lowlevel.checkpoint()
    if rng.random() < 0.3:
        await anyio.sleep(rng.uniform(0, 100e-6))
    scope.cancel()


async def _receive_under_cancellation(
    stream: anyio.abc.SocketStream,
    rng: random.Random,
    stats: dict[str, int],
    tg: anyio.abc.TaskGroup,
    sizes: list[int] | None = None,
    cancel_share: float = 1.0,
) -> bytes:
    """``receive()`` until EndOfStream, each call (or a ``cancel_share`` of them) under a random
    deadline or a scope another task cancels at a random moment; returns the concatenation of
    what the calls returned."""
    got = bytearray()
    while True:
        max_bytes = rng.choice(sizes or [1, 5, 100, 4096, 65536, rng.randint(1, 70000)])
        stats["attempts"] += 1
        if rng.random() >= cancel_share:
            scope = anyio.CancelScope()
        elif rng.random() < 0.5:
            scope = anyio.move_on_after(rng.choice([0, 1e-6, rng.uniform(0, 300e-6), 1.0]))
        else:
            scope = anyio.CancelScope()
            tg.start_soon(_cancel_later, scope, rng)
        with scope:
            try:
                data = await stream.receive(max_bytes)
            except anyio.EndOfStream:
                return bytes(got)
            got += data  # no checkpoint between receive() returning and this: nothing can be lost here
            if scope.cancel_called:
                stats["won"] += 1  # the data came although the scope was cancelled meanwhile
        if scope.cancelled_caught:
            stats["cancelled"] += 1


def _check_buffers_returned() -> None:
    """Every provided buffer went back to its ring: a cancelled receive that completed with a
    buffer anyway must recycle it (DESIGN.md section 6), or the pool would slowly drain."""
    for group in pool()._groups:
        if group is not None:
            assert group.lent == group.count, f"{group!r}: {group.count - group.lent} buffers never returned"


def _send_from_a_thread(sock: socket.socket, data: bytes, rng: random.Random, large: bool = False) -> None:
    """The peer in another thread (true concurrency with the loop: data arrives while a
    cancel is on its way, so the kernel completes receives whose cancel was requested).
    ``large``: chunks of 4-30 KB instead of mostly small ones, each followed by a pause."""
    with sock:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            if large:
                n = rng.randint(4096, 30000)
            else:
                n = rng.choice([1, 3, 64, rng.randint(1, 500), rng.randint(1, 5000)])
            sock.sendall(view[pos : pos + n])
            pos += n
            if large or rng.random() < 0.5:
                time.sleep(rng.uniform(0, 100e-6))


def _raw_pair(kind: str) -> tuple[socket.socket, socket.socket]:
    if kind == "unix":
        return socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        return client, listener.accept()[0]


async def _race_receivers(
    connections: list[tuple[str, str, int]],
    seed: int,
    stats: dict[str, int],
    *,
    large: bool = False,
    sizes: list[int] | None = None,
) -> list[str]:
    """One connection per ``(kind, peer, nbytes)`` -- ``kind`` "tcp" or "unix", the ``peer`` a
    task of this loop ("loop") or another thread ("thread", writing ``large`` chunks if asked) --
    each read by :func:`_receive_under_cancellation`; returns what differed from what was sent."""
    failures: list[str] = []
    threads = []
    async with anyio.create_task_group() as tg:
        for c, (kind, peer, nbytes) in enumerate(connections):
            data = counter_pattern(nbytes)
            if peer == "loop":
                sender, receiver = await stream_pair(kind)
                tg.start_soon(_send_in_chunks, sender, data, random.Random(seed - c))
            else:
                raw_sender, raw_receiver = _raw_pair(kind)
                receiver = await anyio.abc.SocketStream.from_socket(raw_receiver)
                thread = threading.Thread(
                    target=_send_from_a_thread,
                    args=(raw_sender, data, random.Random(seed - c), large),
                    daemon=True,
                )
                threads.append(thread)

            async def one(receiver: Any = receiver, data: bytes = data, c: int = c) -> None:
                async with receiver:
                    got = await _receive_under_cancellation(
                        receiver, random.Random(seed + c), stats, tg, sizes=sizes
                    )
                if got != data:
                    failures.append(f"connection {c}: {first_difference(got, data)}")

            tg.start_soon(one)
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join()
    return failures


@pytest.mark.parametrize("options", STRATEGY_MODES)
def test_no_byte_lost_under_random_cancellation(options: dict[str, Any]) -> None:
    """Guards invariant 3 (no data loss) and 2 (the target's CQE decides): ~2,500 receives per
    strategy and ring mode over 4 long-lived connections (TCP and UNIX; the peer a task of the
    loop or another thread), each receive cancelled by a random deadline or by another task at
    a random moment while the peer writes a counter pattern in random chunks with random pauses.
    A receive whose kernel op completed with data after its cancel was requested must still
    return that data; the concatenation must equal exactly what was sent (no loss, duplicate or
    reordering, no early EOF).  (Checked: making a cancelled wait drop its real result fails
    this test in the no_defer modes, where the thread peers make that race happen.)"""
    seed = 20260
    connections = [
        ("tcp", "loop", 350_000),
        ("unix", "loop", 350_000),
        ("tcp", "thread", 600_000),
        ("unix", "thread", 600_000),
    ]

    async def main() -> dict[str, int]:
        stats = {"attempts": 0, "cancelled": 0, "won": 0}
        counters0 = current_runner().ring.counters()
        failures = await _race_receivers(connections, seed, stats)
        assert strategy() == options["socket_receive"]
        assert not failures, f"seed {seed}: {failures}"
        if strategy() == "hybrid":  # both of its ways of receiving were raced against cancels
            stats["hybrid_polls"] = pool().hybrid_polls
            stats["selected"] = sum(g.recycled for g in pool()._groups if g is not None)
        stats["multishot_streams"] = pool().multishot_streams
        stats["multishot_pauses"] = pool().multishot_pauses
        counters = current_runner().ring.counters()
        stats["kernel_cancels"] = counters["cancel_cqes"] - counters0["cancel_cqes"]
        stats["withdrawn"] = counters["withdrawn"] - counters0["withdrawn"]
        _check_buffers_returned()
        return stats

    stats = run(main, **options)
    # The races this test is about did happen (or it would pass vacuously):
    assert stats["attempts"] >= 2000, stats
    assert stats["cancelled"] > 100, stats
    assert stats["won"] > 10, stats
    if options["socket_receive"] == "multishot":
        # A cancelled receive only stops waiting (the multishot stays armed, its bytes queue up);
        # the kernel cancels are the feed pausing (its queue limit, or reads grown large: the
        # stream polls then), re-armed by later receives.
        assert stats["kernel_cancels"] > 0, stats
        assert stats["multishot_streams"] > 0, stats
        assert stats["multishot_pauses"] > 0, stats
    else:
        assert stats["kernel_cancels"] > 10, stats
        assert stats["withdrawn"] > 10, stats
    if options["socket_receive"] == "hybrid":  # its poll path: the next test races it harder
        assert stats["hybrid_polls"] > 0, stats
        assert stats["selected"] > 100, stats


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_no_byte_lost_when_hybrid_polls_under_random_cancellation(mode: dict[str, str]) -> None:
    """Invariant 3 for the "hybrid" strategy's poll-then-recv path: peers in threads write 4-30 KB
    chunks (the streams' classes reach 16 and 64 KiB, so most receives wait in a POLL_ADD) while
    every receive is cancelled at a random moment; the bytes must arrive exactly as sent.
    (Checked: a cancel point after the poll path's recv, which drops what it took, fails this.)"""
    seed = 4099

    async def main() -> dict[str, int]:
        stats = {"attempts": 0, "cancelled": 0, "won": 0}
        connections = [(kind, "thread", 2_000_000) for kind in ("tcp", "unix", "tcp", "unix")]
        failures = await _race_receivers(connections, seed, stats, large=True, sizes=[65536])
        assert not failures, f"seed {seed}: {failures}"
        stats["hybrid_polls"] = pool().hybrid_polls
        _check_buffers_returned()
        return stats

    # The races must have happened: a quiet machine gets there in one round (~300 polls, ~200
    # cancels); a loaded one, where data piles up and receives find it at once, may need more.
    totals: dict[str, int] = {}
    for _ in range(6):
        for key, value in run(main, socket_receive="hybrid", **mode).items():
            totals[key] = totals.get(key, 0) + value
        if totals["hybrid_polls"] > 150 and totals["cancelled"] > 100 and totals["won"] > 10:
            break
    assert totals["hybrid_polls"] > 150, totals
    assert totals["cancelled"] > 100, totals
    assert totals["won"] > 10, totals


@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_no_byte_lost_when_the_receive_pool_runs_dry(mode: dict[str, str]) -> None:
    """Guards "-ENOBUFS is back-pressure, never the end of a stream": 96 connections on a pool
    of the minimum size (512 KiB), half reading 64 KiB at a time (their class cannot even be
    registered within the limit: they must fall back), half 4 KiB, all fed at once so that more
    receives complete together than the 4 KiB group has buffers.  The pool must report running
    dry (or growing), every stream must get exactly the bytes sent, and none an early EOF."""
    nconn = 96
    nbytes = 400_000

    async def main() -> tuple[int, int]:
        rng = random.Random(7)
        data = counter_pattern(nbytes)
        stats = {"attempts": 0, "cancelled": 0, "won": 0}
        failures: list[str] = []
        raw_listener = socket.create_server(("127.0.0.1", 0), backlog=nconn)
        peers: list[socket.socket] = []
        async with anyio.create_task_group() as tg:
            for c in range(nconn):
                peer = socket.create_connection(raw_listener.getsockname())
                peer.setblocking(False)
                peers.append(peer)
                stream = await anyio.abc.SocketStream.from_socket(raw_listener.accept()[0])

                async def one(stream: Any = stream, c: int = c) -> None:
                    sizes = [4096] if c % 2 else [65536]
                    async with stream:
                        got = await _receive_under_cancellation(
                            stream, random.Random(c), stats, tg, sizes=sizes, cancel_share=0.3
                        )
                    if got != data:
                        failures.append(f"connection {c}: {first_difference(got, data)}")

                tg.start_soon(one)
            await anyio.sleep(0.01)  # every receive is waiting
            pos = 0
            while pos < nbytes:  # one chunk to every connection, without a pause in between
                n = rng.randint(1, 20000)
                for peer in peers:
                    view = memoryview(data)[pos : pos + n]
                    while view:
                        try:
                            view = view[peer.send(view) :]
                        except BlockingIOError:
                            await anyio.wait_writable(peer)
                pos += n
                await anyio.sleep(rng.choice([0, 0, 1e-4]))
            for peer in peers:
                peer.close()
        raw_listener.close()
        assert not failures, failures
        assert pool().nbytes <= 524288
        _check_buffers_returned()
        return pool().exhausted, pool().grows

    exhausted, grows = run(main, socket_receive="select", receive_pool_limit=524288, **mode)
    assert exhausted + grows > 0, "the pool never ran dry: the test did not exercise -ENOBUFS"


def test_no_byte_lost_when_multishot_receives_run_the_pool_dry() -> None:
    """ "-ENOBUFS is back-pressure" for multishot receives: 64 streams switched to their
    multishot receive (two small messages each), then every peer writes 32 KiB pieces (8 CQEs of
    4 KiB) on a pool of the minimum size (512 KiB: at most 128 buffers of 4 KiB), so more CQEs
    land between two harvests than the group has buffers and multishots end with -ENOBUFS: the
    group grows, or that receive polls, and the multishot re-arms.  Receives are cancelled at
    random; every stream must get exactly the bytes sent.  (Checked: taking a multishot's
    -ENOBUFS for the end of the stream fails this.)"""
    nconn = 64
    nbytes = 200_000

    async def main() -> tuple[int, int]:
        stats = {"attempts": 0, "cancelled": 0, "won": 0}
        failures: list[str] = []
        data = counter_pattern(nbytes)
        pairs = [await stream_pair("tcp") for _ in range(nconn)]
        for client, server in pairs:
            for text in (b"switch", b"arm"):
                await client.send(text)
                assert await server.receive() == text
        assert pool().multishot_streams == nconn
        async with anyio.create_task_group() as tg:
            for c, (client, server) in enumerate(pairs):

                async def one(server: Any = server, c: int = c) -> None:
                    async with server:
                        got = await _receive_under_cancellation(
                            server, random.Random(c), stats, tg, sizes=[4096, 65536], cancel_share=0.3
                        )
                    if got != data:
                        failures.append(f"connection {c}: {first_difference(got, data)}")

                async def feed(client: Any = client) -> None:
                    async with client:
                        for pos in range(0, nbytes, 32768):
                            await client.send(data[pos : pos + 32768])
                        await client.send_eof()

                tg.start_soon(one)
                tg.start_soon(feed)
        assert not failures, failures
        assert pool().nbytes <= 524288
        _check_buffers_returned()
        return pool().exhausted, pool().grows

    exhausted, grows = run(main, socket_receive="multishot", receive_pool_limit=524288)
    assert exhausted + grows > 0, "the pool never ran dry: the test did not exercise -ENOBUFS"


def _bytes_likes(data: bytes) -> dict[str, Any]:
    import array

    words = array.array("I")
    words.frombytes(data)  # len(data) % 4 == 0
    return {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "slice": memoryview(b"x" + data + b"y")[1:-1],
        "uint32 array": words,  # itemsize 4: sent as its bytes, len() counts items
        "2-d": memoryview(data).cast("B", (2, len(data) // 2)),
    }


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "slice", "uint32 array", "2-d"])
@pytest.mark.parametrize("nbytes", [4096, 4 << 20], ids=["inline", "short-sends"])
def test_send_takes_any_bytes_like(kind: str, nbytes: int) -> None:
    """``send()`` sends every byte of any C-contiguous bytes-like object: at once when the socket
    buffer takes it (the inline path, which skips the view for ``bytes``), and through ring SENDs
    after a short inline send (4 MiB outgrows the loopback socket buffers)."""
    data = counter_pattern(nbytes)
    item = _bytes_likes(data)[kind]

    async def main() -> bytes:
        a, b = await tcp_pair()
        got = bytearray()

        async def reader() -> None:
            async with b:
                while True:
                    try:
                        got.extend(await b.receive())
                    except anyio.EndOfStream:
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            async with a:
                await a.send(item)
        return bytes(got)

    got = run(main)
    assert got == data, first_difference(got, data)


# ------------------------------------------------------------------------------------------
# 3. thousands of idle connections
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"socket_receive": "select"}, id="select"),
        pytest.param({"socket_receive": "poll"}, id="poll"),
        pytest.param({"socket_receive": "select", "disable": "defer_taskrun"}, id="select-no_defer"),
    ],
)
def test_five_thousand_waiting_receives(options: dict[str, Any]) -> None:
    """5,000 TCP connections (both ends here), each with a task parked in receive(): idle
    connections pin no buffer memory (DESIGN.md section 6: the pool stays at its initial size,
    no caller memory is lent to the kernel), one message on every connection reaches its
    receiver, and closing everything brings the fds and in-flight operations back to where they
    were.  ("owned" is left out on purpose: it pins 64 KiB per waiting receive, 320 MB here.)"""
    n = 5000

    async def main() -> None:
        fds0, inflight0 = fd_count(), inflight()
        listener = await tcp_listener()
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        clients: list[anyio.abc.SocketStream] = []
        servers: list[anyio.abc.SocketStream] = []

        async def acceptor() -> None:
            for _ in range(n):
                servers.append(await listener.accept())

        async with anyio.create_task_group() as tg:
            tg.start_soon(acceptor)
            for _ in range(n):
                clients.append(await anyio.connect_tcp("127.0.0.1", port))
        await listener.aclose()
        got: list[bytes | None] = [None] * n

        async def receive(i: int) -> None:
            got[i] = await servers[i].receive()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(receive, i)
                await anyio.sleep(0.05)
                assert inflight() - inflight0 >= n  # every receive is parked on the ring
                assert current_runner().ring.bytes_pinned == 0
                assert pool().nbytes <= 1 << 20  # idle receives pinned no buffers
                for i, client in enumerate(clients):
                    await client.send(b"message %d" % i)
        assert got == [b"message %d" % i for i in range(n)]
        for stream in clients + servers:
            await stream.aclose()
        assert fd_count() == fds0
        assert inflight() == inflight0

    run(main, **options)


# ------------------------------------------------------------------------------------------
# 4. close while another task waits
# ------------------------------------------------------------------------------------------


async def _record_outcome(call: Any, outcomes: list[BaseException | None]) -> None:
    """Await ``call()``; append its exception (None if it returned) to ``outcomes``, and re-raise
    anything but ClosedResourceError."""
    try:
        await call()
    except BaseException as exc:
        outcomes.append(exc)
        if not isinstance(exc, anyio.ClosedResourceError):
            raise
    else:
        outcomes.append(None)


async def _close_under_waiter(resource: Any, wait: Any, settle: bool, armed: int = 0) -> None:
    """Start ``wait()`` in a task, then ``aclose()`` ``resource`` from here: the waiter must
    raise ClosedResourceError, the raw socket be closed and no operation stay in flight.
    ``settle``: let the operation reach the kernel first (ASYNC_CANCEL path) or close at once
    (the SQE may still be withdrawn).  ``armed``: operations of ``resource`` in flight before
    the waiter starts (a stream's multishot receive), which the close must end too."""
    inflight0 = inflight() - armed
    outcome: list[BaseException | None] = []
    started = anyio.Event()

    async def waiter() -> None:
        started.set()
        await _record_outcome(wait, outcome)

    raw = resource.extra(anyio.abc.SocketAttribute.raw_socket)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await started.wait()
            if settle:
                await anyio.sleep(0.02)
                assert inflight() > inflight0, "the waiter has no operation in flight"
            await resource.aclose()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError), outcome
    assert raw.fileno() == -1
    assert inflight() == inflight0, current_runner().ring.ledger()
    assert len(resource._inflight) == 0


@pytest.mark.parametrize("warm", [False, True], ids=["new", "warm"])
@pytest.mark.parametrize("settle", [True, False], ids=["in_kernel", "at_once"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("options", STRATEGY_MODES)
def test_close_wakes_a_waiting_receive(options: dict[str, Any], kind: str, settle: bool, warm: bool) -> None:
    """DESIGN.md section 6: aclose() of a stream another task receives on ends that receive
    with ClosedResourceError (for every strategy), then closes the fd; nothing stays in flight.
    ``warm``: the stream received twice first (a TCP stream under "multishot" then waits on its
    armed multishot receive)."""

    async def main() -> None:
        a, b = await stream_pair(kind)
        multishot = warm and options["socket_receive"] == "multishot" and kind == "tcp"
        async with a:
            if warm:
                for text in (b"one", b"two"):
                    await a.send(text)
                    assert await b.receive() == text
                feed = b._feed  # type: ignore[attr-defined]
                assert (feed is not None and feed.armed) == multishot, feed
            await _close_under_waiter(b, b.receive, settle, armed=int(multishot))
            with pytest.raises(anyio.ClosedResourceError):
                await b.receive()

    run(main, **options)


@pytest.mark.parametrize("settle", [True, False], ids=["in_kernel", "at_once"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_close_wakes_a_blocked_send(mode: dict[str, str], kind: str, settle: bool) -> None:
    """A send blocked because the peer does not read (64 MiB: more than both socket buffers
    hold, autotuned as they are) ends with ClosedResourceError when another task closes the
    stream."""
    _blocked_send_closed(mode, kind, settle, sndbuf=None)


@pytest.mark.parametrize(
    ("mode", "kind", "settle"),
    [
        pytest.param(RING_MODES["default"], "tcp", False, id="default-tcp-at_once"),
        pytest.param(RING_MODES["default"], "tcp", True, id="default-tcp-in_kernel"),
        pytest.param(RING_MODES["default"], "unix", False, id="default-unix-at_once"),
        pytest.param(RING_MODES["no_defer"], "tcp", False, id="no_defer-tcp-at_once"),
    ],
)
def test_close_wakes_a_blocked_send_small_sndbuf(mode: dict[str, str], kind: str, settle: bool) -> None:
    """The same with SO_SNDBUF 4096 on the sender: the SEND sends a little at a time, so its
    poll fires and re-arms over and over; a cancel arriving in between must still end it."""
    _blocked_send_closed(mode, kind, settle, sndbuf=4096)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("mode", RING_MODES.values(), ids=RING_MODES.keys())
def test_close_wakes_a_receive_and_a_send_waiting_at_once(mode: dict[str, str], kind: str) -> None:
    """Two tasks parked on one stream (a receive with nothing to read, a send the peer does not
    read): aclose() ends both with ClosedResourceError and waits for both final CQEs (the
    second waiter is the resource's overflow record, not its single slot)."""

    async def main() -> None:
        a, b = await stream_pair(kind)
        inflight0 = inflight()
        outcomes: list[BaseException | None] = []

        async with b:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_record_outcome, a.receive, outcomes)
                    tg.start_soon(_record_outcome, lambda: a.send(bytes(64 << 20)), outcomes)
                    while len(a._inflight) < 2:  # type: ignore[attr-defined]
                        await anyio.sleep(0.005)
                    await a.aclose()
        assert len(outcomes) == 2
        assert all(isinstance(exc, anyio.ClosedResourceError) for exc in outcomes), outcomes
        assert len(a._inflight) == 0  # type: ignore[attr-defined]
        assert inflight() == inflight0, current_runner().ring.ledger()

    run(main, **mode)


def test_inflight_wait_records_only_while_parked() -> None:
    """``InFlight.wait`` records its operation only while the task is parked on it, with the
    waiter as both the operation's callback and the task's abort callback, and lets go when the
    coroutine awaiting it is closed while parked (a task that is torn down)."""
    from anyio_uring._core._cancel import InFlight, end_and_reap

    async def main() -> None:
        ring = current_runner().ring
        left, right = socket.socketpair()
        with left, right:
            record = InFlight()
            op = ring.poll_add(left.fileno(), 1)  # POLLIN: nothing will arrive

            async def await_it() -> int:
                return int(await record.wait(op))

            coro = await_it()
            assert len(record) == 0, "recorded before it was awaited"
            assert op.callback is None
            trap = coro.send(None)  # parks: yields the waiter, the runner's abort callback
            assert len(record) == 1
            assert op.callback is trap
            coro.close()  # GeneratorExit at the park: the wait lets go
            assert len(record) == 0
            op.callback = None  # nobody waits any more: reap it the way a closer would
            assert await end_and_reap(op) < 0

            # and the normal path, with a result
            op = ring.poll_add(left.fileno(), 1)
            right.send(b"x")
            assert await record.wait(op) & 1
            assert len(record) == 0

    run(main)


@pytest.mark.parametrize(
    ("mode", "sndbuf"),
    [
        pytest.param(RING_MODES["default"], 4096, id="default-small_sndbuf"),
        pytest.param(RING_MODES["default"], None, id="default"),
        pytest.param(RING_MODES["no_defer"], 4096, id="no_defer-small_sndbuf"),
    ],
)
def test_cancelled_blocked_send_ends_promptly(mode: dict[str, str], sndbuf: int | None) -> None:
    """The root of the close hang above, without a close: another task cancels the scope of a
    send right after it started (TCP, the peer not reading); the send must end at once (the
    scope catches the cancellation), not when the peer eventually reads."""

    async def main() -> tuple[bool, bool]:
        a, b = await tcp_pair()
        raw = a.extra(anyio.abc.SocketAttribute.raw_socket)
        if sndbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        scope = anyio.CancelScope()
        started = anyio.Event()

        async def sender() -> None:
            with scope:
                started.set()
                await a.send(bytes(64 << 20))

        async with a, b:
            with Unwedger(raw, 3.0) as watchdog:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    await started.wait()
                    scope.cancel()
        return watchdog.fired, scope.cancelled_caught

    fired, caught = run(main, **mode)
    assert not fired, "the cancelled send went on until the socket was shut down"
    assert caught


def _blocked_send_closed(mode: dict[str, str], kind: str, settle: bool, sndbuf: int | None) -> None:
    async def main() -> bool:
        a, b = await stream_pair(kind)
        raw = a.extra(anyio.abc.SocketAttribute.raw_socket)
        if sndbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        payload = bytes(64 << 20)
        async with b:
            # If the SEND ignores its cancel, aclose() waits (shielded) for it forever: the
            # watchdog then shuts the socket down so that the test fails instead of hanging.
            with Unwedger(raw, 3.0) as watchdog:
                await _close_under_waiter(a, lambda: a.send(payload), settle)
        return watchdog.fired

    assert not run(main, **mode), "aclose() hung until the socket was shut down: the SEND ignored its cancel"


# ------------------------------------------------------------------------------------------
# 5. fallbacks by feature mask, and option validation
# ------------------------------------------------------------------------------------------


async def _round_trip() -> str:
    a, b = await tcp_pair()
    async with a, b:
        await a.send(b"ping")
        assert await b.receive() == b"ping"
        payload = os.urandom(300_000)
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.send, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await b.receive()
        assert got == payload
        await b.send(b"pong")
        assert await a.receive() == b"pong"
    return strategy()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "hybrid"),
        ({"socket_receive": "select"}, "select"),
        ({"disable": "buffer_rings"}, "poll"),
        ({"disable": "buffer_rings", "socket_receive": "select"}, "poll"),
        ({"disable": "buffer_rings", "socket_receive": "hybrid"}, "poll"),
        ({"socket_receive": "poll"}, "poll"),
        ({"socket_receive": "owned"}, "owned"),
        ({"socket_receive": "owned", "disable": "buffer_rings"}, "owned"),
        ({"socket_receive": "multishot"}, "multishot"),
        ({"socket_receive": "multishot", "disable": "multishot_recv"}, "hybrid"),
        ({"socket_receive": "multishot", "disable": "buffer_rings"}, "poll"),
    ],
)
def test_receive_strategy_and_fallbacks(options: dict[str, Any], expected: str) -> None:
    """The strategy each option/mask combination resolves to, and a round trip on it (a
    masked buffer-ring feature must fall back to poll-then-recv, not fail)."""
    assert run(_round_trip, **options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"socket_receive": "bogus"}, "socket_receive must be one of"),
        ({"receive_pool_limit": 10}, "receive_pool_limit must be an int of at least"),
        ({"receive_pool_limit": 524287}, "receive_pool_limit must be an int of at least"),
        ({"receive_pool_limit": "1M"}, "receive_pool_limit must be an int"),
        ({"receive_pool_limit": True}, "receive_pool_limit must be an int"),
    ],
)
def test_invalid_socket_options_are_rejected(options: dict[str, Any], message: str) -> None:
    """Bad socket options fail anyio.run up front with a message naming the option."""
    started = False

    async def main() -> None:
        nonlocal started
        started = True

    with pytest.raises(ValueError, match=message):
        run(main, **options)
    assert not started


def test_minimum_pool_limit_is_accepted() -> None:
    assert run(_round_trip, receive_pool_limit=524288) == "hybrid"


def test_a_strategy_name_built_at_run_time_is_honoured() -> None:
    """Streams compare the strategy by identity: a name that is equal but another object (built
    at run time, or a str subclass) must still select that strategy, not another one."""

    class Name(str):
        pass

    async def path_taken() -> str:
        a, b = await tcp_pair()
        async with a, b:
            await a.send(b"ping")
            assert await b.receive() == b"ping"
            if any(g is not None and g.recycled for g in pool()._groups):
                return "select"
            return "owned" if getattr(b, "_owned", None) is not None else "poll"

    built = "".join(["po", "ll"])
    assert run(path_taken, socket_receive=built) == "poll"
    assert run(path_taken, socket_receive=Name("owned")) == "owned"
    assert run(path_taken, socket_receive=Name("select")) == "select"
    assert run(path_taken, socket_receive="".join(["hyb", "rid"])) == "select"  # a new stream: 4 KiB


def test_hybrid_polls_for_large_classes_and_selects_for_small_ones() -> None:
    """The "hybrid" strategy: a stream whose reads fill 4 KiB buffers moves to the 16 KiB class
    and from then on waits in a POLL_ADD and receives into fresh memory (the 16 and 64 KiB
    groups are never registered); once its reads are small again it shrinks back and waits in
    a provided-buffer RECV.  Every byte arrives in order either way."""
    from anyio_uring._ring._ops import OP_POLL_ADD, OP_RECV

    async def main() -> list[str]:
        a, b = await tcp_pair()
        seen: list[str] = []
        ring = current_runner().ring
        async with a, b:

            async def pending() -> str:
                # what the stream's next receive waits in, while the peer sends nothing
                async with anyio.create_task_group() as tg:
                    got: list[bytes] = []

                    async def receive() -> None:
                        got.append(await b.receive())

                    before = set(ring._ops)
                    tg.start_soon(receive)
                    await anyio.wait_all_tasks_blocked()
                    kinds = {op.opcode for ud, op in ring._ops.items() if ud not in before}
                    await a.send(b"x")
                assert got == [b"x"]
                return "poll" if kinds == {OP_POLL_ADD} else "recv" if kinds == {OP_RECV} else str(kinds)

            seen.append(await pending())
            blob = os.urandom(64 * 1024)
            for _ in range(8):  # large reads: the class grows past 4 KiB
                await a.send(blob)
                got = bytearray()
                while len(got) < len(blob):
                    got += await b.receive()
                assert got == blob
            seen.append(await pending())
            assert pool().hybrid_polls > 0
            assert pool()._groups[2] is None  # the large classes' groups were never needed
            assert pool()._groups[3] is None
            for i in range(8):  # small reads: back to provided buffers
                await a.send(b"%d" % i)
                assert await b.receive() == b"%d" % i
            seen.append(await pending())
        return seen

    assert run(main, socket_receive="hybrid") == ["recv", "poll", "recv"]


# ------------------------------------------------------------------------------------------
# 6. errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", STRATEGY_MODES)
def test_error_mapping(options: dict[str, Any]) -> None:
    """anyio's error contract of SocketStream, for every strategy and ring mode."""

    async def main() -> None:
        a, b = await tcp_pair()
        # bad sizes
        for bad in (0, -1):
            with pytest.raises(ValueError):
                await b.receive(bad)
        # two receives at once
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.receive)
            await anyio.sleep(0.01)
            with pytest.raises(anyio.BusyResourceError):
                await b.receive()
            await a.send(b"x")  # ends the first receive
        # send after send_eof; the peer sees EOF, repeatedly
        await a.send_eof()
        with pytest.raises(anyio.BrokenResourceError):
            await a.send(b"after eof")
        for _ in range(3):
            with pytest.raises(anyio.EndOfStream):
                await b.receive()
        # use after close
        await a.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await a.send(b"closed")
        with pytest.raises(anyio.ClosedResourceError):
            await a.receive()
        await a.aclose()  # closing twice is fine
        for _ in range(2):
            with pytest.raises(anyio.EndOfStream):
                await b.receive()
        await b.aclose()

    run(main, **options)


@pytest.mark.parametrize("waiting", [False, True], ids=["after", "while_waiting"])
@pytest.mark.parametrize("options", STRATEGY_MODES)
def test_receive_after_peer_reset_is_broken(options: dict[str, Any], waiting: bool) -> None:
    """A reset connection (peer closed with SO_LINGER 0) is BrokenResourceError caused by the
    OSError (ECONNRESET) -- not EndOfStream, not a bare OSError -- whether the receive was
    waiting when the RST came or starts afterwards."""

    async def main() -> None:
        a, b = await tcp_pair()
        raw = a.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        errors: list[BaseException] = []

        async def receive() -> None:
            try:
                await b.receive()
            except anyio.BrokenResourceError as exc:
                errors.append(exc)

        async with b, anyio.create_task_group() as tg:
            if waiting:
                tg.start_soon(receive)
                await anyio.sleep(0.01)
            await a.aclose()
            if not waiting:
                await anyio.sleep(0.01)
                tg.start_soon(receive)
        assert len(errors) == 1
        assert isinstance(errors[0].__cause__, OSError)
        assert errors[0].__cause__.errno == 104  # ECONNRESET

    run(main, **options)


@pytest.mark.parametrize("receive", STRATEGIES)
def test_unix_fd_passing(receive: str) -> None:
    """send_fds/receive_fds with 3 descriptors: they arrive, refer to the same open files and
    are close-on-exec (MSG_CMSG_CLOEXEC); data sent after them still arrives in order."""

    async def main() -> None:
        a, b = await unix_pair()
        pipes = [os.pipe() for _ in range(3)]
        async with a, b:
            await a.send_fds(b"fds!", [w for _, w in pipes])
            message, fds = await b.receive_fds(4, 3)
            await a.send(b"after")
            assert await b.receive() == b"after"
        assert message == b"fds!"
        assert len(fds) == 3
        try:
            for fd, (r, w) in zip(fds, pipes, strict=True):
                assert fd not in (r, w)
                assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
                assert os.fstat(fd).st_ino == os.fstat(w).st_ino
                os.write(fd, b"via passed fd")
                assert os.read(r, 100) == b"via passed fd"
        finally:
            for fd in fds:
                os.close(fd)
            for r, w in pipes:
                os.close(r)
                os.close(w)

    run(main, socket_receive=receive)


@pytest.mark.parametrize("receive", STRATEGIES)
def test_unix_receive_then_receive_fds(receive: str) -> None:
    """Plain receives, then a message with descriptors, in turn: every message and every
    descriptor arrives.  (Checked: letting UNIX streams switch to a multishot receive, which
    stays armed between calls, fails this under "multishot": it takes the descriptors' message
    and the kernel drops them.)"""

    async def main() -> None:
        a, b = await unix_pair()
        r, w = os.pipe()
        try:
            with anyio.fail_after(10):  # a lost message is a hang: fail instead
                async with a, b:
                    for i in range(3):
                        for text in (b"header %d" % i, b"body %d" % i):
                            await a.send(text)
                            assert await b.receive() == text
                        await a.send_fds(b"fd %d" % i, [w])
                        message, fds = await b.receive_fds(4, 1)
                        assert message == b"fd %d" % i
                        assert len(fds) == 1
                        assert os.fstat(fds[0]).st_ino == os.fstat(w).st_ino
                        os.close(fds[0])
        finally:
            os.close(r)
            os.close(w)

    run(main, socket_receive=receive)


@pytest.mark.parametrize("receive", STRATEGIES)
def test_tls_round_trip(receive: str) -> None:
    """anyio's TLSStream over the backend's streams: handshake, a large and a small message each
    way, and a TLS close (exercises receive/send in the pattern TLS uses: many receives that do
    not fill max_bytes, send of whole records)."""
    trustme = pytest.importorskip("trustme", reason="trustme is not installed")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def main() -> None:
        a, b = await tcp_pair()
        streams: dict[str, TLSStream] = {}

        async def wrap(name: str, stream: Any, **kwargs: Any) -> None:
            streams[name] = await TLSStream.wrap(stream, **kwargs)

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: wrap("client", a, hostname="localhost", ssl_context=client_context))
            tg.start_soon(lambda: wrap("server", b, server_side=True, ssl_context=server_context))
        client, server = streams["client"], streams["server"]
        big = os.urandom(1 << 20)

        async def receive_exactly(stream: TLSStream, n: int) -> bytes:
            got = bytearray()
            while len(got) < n:
                got += await stream.receive()
            return bytes(got)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, big)
            assert await receive_exactly(server, len(big)) == big
        await server.send(b"hello over tls")
        assert await client.receive() == b"hello over tls"
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.aclose)  # sends close_notify, waits for the client's
            with pytest.raises(anyio.EndOfStream):
                await client.receive()
            await client.aclose()

    async def bounded() -> None:
        with anyio.fail_after(10):  # a hang is a failure, not a stuck run
            await main()

    run(bounded, socket_receive=receive)


# ------------------------------------------------------------------------------------------
# 7. adaptive size classes
# ------------------------------------------------------------------------------------------


async def _round_trips(client: Any, server: Any, count: int) -> None:
    """``count`` 2,000-byte messages from ``client`` to ``server``, each checked whole."""
    for i in range(count):
        message = i.to_bytes(2, "big") * 1000
        await client.send(message)
        got = b""
        while len(got) < len(message):
            got += await server.receive()
        assert got == message


def test_multishot_reader_that_stops_reading_does_not_drain_the_pool() -> None:
    """The issue's multishot pitfall, measured: one stream's peer floods it while nobody reads
    it.  Its multishot must pause after a bounded number of untaken results (its data then waits in
    the socket), hold no provided buffer meanwhile, and leave the whole pool to another stream,
    which keeps receiving; once read, the flooded stream delivers every byte in order."""
    flood = bytes(range(256)) * 4096  # 1 MiB

    async def main() -> None:
        idle_client, idle_server = await tcp_pair()
        busy_client, busy_server = await tcp_pair()
        async with idle_client, idle_server, busy_client, busy_server:
            # a select receive switches idle_server to a multishot receive, the next one arms
            # it; then nobody reads it
            for byte in b"xy":
                await idle_client.send(bytes([byte]))
                assert await idle_server.receive() == bytes([byte])
            assert idle_server._feed is not None
            assert idle_server._feed.armed
            async with anyio.create_task_group() as tg:
                tg.start_soon(idle_client.send, flood)  # blocks: nobody reads the rest
                await anyio.sleep(0.2)
                feed = idle_server._feed  # type: ignore[attr-defined]
                assert feed is not None
                assert not feed.armed, "the multishot did not pause for a stream nobody reads"
                # 16 untaken results pause it; the CQEs the kernel posted before the cancel took
                # effect come on top (a multishot recv posts up to 32 per run; 33 in all, measured)
                assert 16 <= len(feed) <= 16 + 64, len(feed)
                _check_buffers_returned()  # the pool lends nothing to the stopped stream
                await _round_trips(busy_client, busy_server, 200)  # the other stream has the whole pool
                received = bytearray()
                while len(received) < len(flood):
                    received += await idle_server.receive()
                assert received == flood
            _check_buffers_returned()

    run(main, socket_receive="multishot", receive_pool_limit=524288)


def test_multishot_needs_defer_taskrun() -> None:
    """Without DEFER_TASKRUN the kernel runs a multishot receive whenever data arrives, taking a
    buffer per message while the loop is busy elsewhere, so pausing after 16 untaken results
    could not keep a stream nobody reads from draining the pool (measured: all 64 buffers of a
    group taken before the loop's next harvest).  There, even ``"multishot"`` never switches: a
    stream flooded while nobody reads holds no buffer, and the pool serves another stream."""
    flood = bytes(range(256)) * 4096  # 1 MiB

    async def main() -> None:
        assert not current_runner().ring.support.defer_taskrun
        assert strategy() == "hybrid"
        idle_client, idle_server = await tcp_pair()
        busy_client, busy_server = await tcp_pair()
        async with idle_client, idle_server, busy_client, busy_server:
            for byte in b"xy":  # what switches and arms a multishot where it may
                await idle_client.send(bytes([byte]))
                assert await idle_server.receive() == bytes([byte])
            assert idle_server._feed is None  # type: ignore[attr-defined]
            assert pool().multishot_streams == 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(idle_client.send, flood)  # blocks: nobody reads the rest
                await _round_trips(busy_client, busy_server, 100)  # a busy loop, nothing drained
                _check_buffers_returned()
                received = bytearray()
                while len(received) < len(flood):
                    received += await idle_server.receive()
                assert received == flood
            _check_buffers_returned()

    run(main, socket_receive="multishot", receive_pool_limit=524288, disable="defer_taskrun")


def test_unix_socket_wrapped_as_a_plain_stream_never_switches() -> None:
    """``SocketStream.from_socket`` wraps an AF_UNIX socket in the plain stream class: it must not
    switch to a multishot receive either (see ``UNIXSocketStream``)."""

    async def main() -> None:
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a = await anyio.abc.SocketStream.from_socket(left)
        b = await anyio.abc.SocketStream.from_socket(right)
        async with a, b:
            for text in (b"switch", b"arm", b"again"):
                await a.send(text)
                assert await b.receive() == text
            assert b._feed is None  # type: ignore[attr-defined]
            assert pool().multishot_streams == 0

    run(main, socket_receive="multishot")


def test_size_class_grows_under_bulk_and_shrinks_for_small_messages() -> None:
    """The Netty-style sizer (white box: ``stream._size``): receiving 256 KiB of bulk data with
    65536-byte reads ends at the top class; then a ping-pong of 10-byte messages (each receive
    goes to the ring and returns 10 bytes) brings it back to the smallest class."""
    from anyio_uring._net._pool import size_pick

    top = len(SIZE_CLASSES) - 1

    async def main() -> None:
        a, b = await tcp_pair()
        async with a, b:
            assert size_pick(b._size, 1 << 30) == 1  # starts at 4 KiB
            bulk = os.urandom(256 * 1024)
            await a.send(bulk)
            await anyio.sleep(0.02)  # all of it waits in the socket: every read is full
            got = bytearray()
            while len(got) < len(bulk):
                got += await b.receive(65536)
            assert got == bulk
            assert size_pick(b._size, 1 << 30) == top
            for i in range(20):
                message = b"%010d" % i
                await a.send(message)
                assert await b.receive(65536) == message
            assert size_pick(b._size, 1 << 30) == 0

    run(main, socket_receive="select")


def test_size_pick_shortcut_agrees() -> None:
    """The receive path skips ``size_pick`` for ``max_bytes > PICK_ANY_ABOVE`` and takes
    ``state % SIZER_SMALL``: the two must agree for every reachable state."""
    from anyio_uring._net._pool import (
        PICK_ANY_ABOVE,
        SIZE_CLASSES,
        SIZER_SMALL,
        SIZER_START,
        size_pick,
        size_record,
    )

    states = {SIZER_START}
    frontier = [SIZER_START]
    while frontier:  # every state size_record can reach, by every class and size
        state = frontier.pop()
        for index in range(len(SIZE_CLASSES)):
            for nbytes in (1, 100, *SIZE_CLASSES, *(c - 1 for c in SIZE_CLASSES)):
                new = size_record(state, index, nbytes)
                if new not in states:
                    states.add(new)
                    frontier.append(new)
    assert len(states) > len(SIZE_CLASSES)
    for state in states:
        for max_bytes in (PICK_ANY_ABOVE + 1, 65536, 1 << 20):
            assert size_pick(state, max_bytes) == state % SIZER_SMALL, (state, max_bytes)


def test_receive_size_class_adapts_like_netty() -> None:
    """The per-stream size state (an int, not an object: memory per idle connection): starts at
    4 KiB, grows one class after a receive that filled its buffer, shrinks one class after two
    small receives in a row, and never picks a class larger than ``max_bytes`` needs."""
    from anyio_uring._net._pool import SIZE_CLASSES, SIZER_START, size_pick, size_record

    state = SIZER_START
    assert SIZE_CLASSES[size_pick(state, 65536)] == 4096
    assert SIZE_CLASSES[size_pick(state, 1000)] == 1024  # no larger than max_bytes needs
    state = size_record(state, 1, 4096)  # full: grow
    assert SIZE_CLASSES[size_pick(state, 65536)] == 16384
    state = size_record(state, 2, 16384)
    state = size_record(state, 3, 65536)  # at the top: stays
    assert SIZE_CLASSES[size_pick(state, 65536)] == 65536
    state = size_record(state, 3, 100)  # one small receive: no change yet
    assert SIZE_CLASSES[size_pick(state, 65536)] == 65536
    state = size_record(state, 3, 100)  # two in a row: shrink one class
    assert SIZE_CLASSES[size_pick(state, 65536)] == 16384
    state = size_record(state, 2, 100)
    state = size_record(state, 2, 10000)  # a medium receive in between resets the count
    state = size_record(state, 2, 100)
    assert SIZE_CLASSES[size_pick(state, 65536)] == 16384
    state = size_record(state, 2, 100)
    assert SIZE_CLASSES[size_pick(state, 65536)] == 4096
