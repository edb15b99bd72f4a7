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


@pytest.fixture
def anyio_backend() -> str:
    return "uring"


async def test_dropped_listener_ends_its_multishot_accept() -> None:
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
    del multi, listener
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the point: it was never closed
        gc.collect()
    with anyio.fail_after(5):
        while ring.inflight >= armed:
            await anyio.sleep(0.01)
    with socket.socket() as client:
        client.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
