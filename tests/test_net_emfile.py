"""A listener keeps serving after EMFILE, once fds are free again (multishot accept and the
one-ACCEPT-per-connection fallback).

Runs in a child process: the test lowers RLIMIT_NOFILE so that exactly one more fd fits, which
must not affect the test process itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import os, resource, socket, sys
    import anyio
    import anyio_uring

    async def main() -> None:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener = multi.listeners[0]
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        clients = [socket.socket() for _ in range(3)]
        lowest_free = os.dup(0)
        os.close(lowest_free)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))  # one more fd fits
        for client in clients:
            client.connect(("127.0.0.1", port))  # completes through the backlog
        async with multi:
            first = await listener.accept()
            try:
                with anyio.fail_after(5):
                    await listener.accept()
            except OSError as exc:
                print("EMFILE" if exc.errno == 24 else f"errno {exc.errno}")
            else:
                print("no error")
            await first.aclose()  # frees the fd
            with anyio.fail_after(5):
                again = await listener.accept()  # the connection that met EMFILE
            await again.send(b"ok")
            clients[1].settimeout(5)
            print("served" if clients[1].recv(2) == b"ok" else "wrong connection")
            await again.aclose()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    disable = sys.argv[1]
    anyio.run(main, backend="uring", backend_options={"disable": disable} if disable else {})
    """
)


@pytest.mark.parametrize("disable", ["", "multishot_accept"], ids=["multishot", "single-shot"])
def test_listener_serves_again_after_emfile(disable: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, disable], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["EMFILE", "served"], proc.stdout + proc.stderr
