"""Socket objects dropped without ``aclose()``: nothing stays armed in the kernel."""

from __future__ import annotations

import gc
import socket
import warnings

import anyio
import anyio.abc
import pytest

from anyio_uring._core import current_runner

pytestmark = pytest.mark.anyio

#: Where the garbage collector finalizes the dropped object: the loop's thread (refcounting,
#: or ``gc.collect()`` in a task), or a worker thread (a reference cycle collected there while
#: the loop waits in the kernel: the finalizer must not touch the ring, it asks the loop).
COLLECTED_IN = ["loop_thread", "worker_thread"]


@pytest.fixture
def anyio_backend() -> str:
    return "uring"


async def collect(box: list[object], where: str) -> None:
    """Drop the last reference to the object in ``box`` (the caller holds no other) and have it
    finalized ``where``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the point: it was never closed
        if where == "loop_thread":
            box.clear()
            gc.collect()
            return
        gc.disable()  # nothing may collect the cycle on the loop's thread meanwhile
        try:
            obj = box.pop()
            obj.__dict__["_cycle"] = obj
            del obj
            await anyio.to_thread.run_sync(gc.collect)
        finally:
            gc.enable()


@pytest.mark.parametrize("where", COLLECTED_IN)
async def test_dropped_listener_ends_its_multishot_accept(where: str) -> None:
    """A listener garbage-collected with its multishot ACCEPT armed cancels it: otherwise the
    orphaned accept would keep the port open and keep accepting connections nobody serves."""
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = multi.listeners[0]
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.accept)  # arms the multishot accept
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    ring = current_runner().ring
    armed = ring.inflight
    box: list[object] = [listener]
    del multi, listener
    await collect(box, where)
    with anyio.fail_after(5):
        while ring.inflight >= armed:
            await anyio.sleep(0.01)
    with socket.socket() as client:
        client.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))


@pytest.mark.parametrize("anyio_backend", [("uring", {"socket_receive": "multishot"})], ids=["multishot"])
@pytest.mark.parametrize("where", COLLECTED_IN)
async def test_dropped_stream_ends_its_multishot_receive(where: str) -> None:
    """A stream garbage-collected with its multishot RECV armed cancels it: otherwise the orphaned
    receive would hold the socket open in the kernel and keep eating what the peer sends."""
    from anyio_uring._net._pool import net_state

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener:
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.listeners[0].accept()
        for text in (b"switch", b"arm"):  # the first switches it, the second arms its multishot
            await client.send(text)
            assert await server.receive() == text
        feed = server._feed  # type: ignore[attr-defined]
        assert feed is not None
        assert feed.armed
        assert net_state(current_runner()).pool.multishot_streams == 1
        ring = current_runner().ring
        armed = ring.inflight
        box: list[object] = [server]
        del server
        await collect(box, where)
        with anyio.fail_after(5):
            while ring.inflight >= armed or feed.armed:
                await anyio.sleep(0.01)
            # the kernel let go of the socket: the peer sees it closed
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()
        await client.aclose()
