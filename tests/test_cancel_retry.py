"""An ASYNC_CANCEL that finds no target while the target is still in flight is queued again.

Seen on Linux 6.18 with DEFER_TASKRUN: a SEND on a socket with a tiny SO_SNDBUF makes a little
progress, its poll fires at once and the retry waits in the deferred task_work; an ASYNC_CANCEL
submitted in that window answers -ENOENT, and the SEND then re-arms its poll and would wait
forever (the peer never reads) -- a close() waiting for it would hang.  The ring re-issues such
cancels until the target's final CQE arrives (``Ring.cancel_retries`` counts them).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from anyio_uring._ring import Ring


@pytest.mark.parametrize("disable", [(), ("defer_taskrun",)], ids=["defer_taskrun", "no_defer"])
def test_cancel_of_a_send_between_poll_retries_is_not_lost(
    make_ring: Callable[..., Ring], disable: tuple[str, ...]
) -> None:
    ring = make_ring(disable=frozenset(disable))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        for _ in range(20):
            with socket.create_connection(server.getsockname()) as a, server.accept()[0]:
                a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                a.setblocking(False)
                op = ring.send(a.fileno(), bytes(16 << 20), socket.MSG_NOSIGNAL | socket.MSG_WAITALL)
                ring.wait(timeout=0)  # issued: part sent, poll armed (and maybe fired already)
                ring.cancel(op)
                deadline = time.monotonic() + 5
                while not op.done and time.monotonic() < deadline:
                    ring.wait(timeout=0.05)
                assert op.done, f"the cancelled SEND never completed (cancel retries: {ring.cancel_retries})"
                assert op.result is not None
                assert op.result > 0 or op.result == -125, op.result  # bytes sent, or -ECANCELED
    assert ring.counters()["cancel_retries"] == ring.cancel_retries
