"""A small HTTP/1.1 server on anyio streams (h11 over ``create_tcp_listener``/``SocketStream``).

It uses nothing but anyio, so it runs unchanged on every anyio backend::

    python examples/http_server.py --backend uring --port 8080
    python examples/http_server.py --backend asyncio --uvloop --port 0   # any free port

The bound port is printed alone on the first line of stdout (what the benchmarks read); a
human-readable line goes to stderr.  SIGTERM and Ctrl+C (``anyio.open_signal_receiver``) stop the
server cleanly, so ``python -m cProfile -o out.prof examples/http_server.py ...`` writes its
profile when terminated.

Endpoints (``GET`` ones also answer ``HEAD``):

* ``GET /``: ``Hello, world!\\n`` (Content-Length);
* ``GET /bytes/{n}``: ``n`` bytes of ``x`` (Content-Length); ``?chunked=1`` sends them chunked
  instead, in chunks of ``?chunk=65536`` bytes;
* ``GET /stream/{n}``: a chunked response of ``n`` chunks, chunk ``i`` being ``chunk {i}\\n``, or
  ``?size=S`` bytes of ``x`` each; ``?delay=D`` sleeps ``D`` seconds before every chunk after the
  first (for tests that cancel, or disconnect, mid-response);
* ``POST /echo`` (or ``PUT``): the request body back, with the request's Content-Type
  (Content-Length; ``?chunked=1``: chunked);
* anything else: ``404``; a known path with the wrong method: ``405``.

Connections are kept alive (HTTP/1.1 keep-alive, pipelining included) until the client closes
or asks for ``Connection: close``.  A client that disconnects (``EndOfStream``,
``BrokenResourceError``, ``ClosedResourceError``) ends its own connection only; a malformed
request gets a ``400`` and the connection is closed; an unexpected error in a handler is logged,
answered with ``500`` where a response has not started, and ends that connection only.

Importable (tests load it by path)::

    async with anyio.create_task_group() as tg:
        port = await start_server(tg)            # serve() in tg; returns the bound port
        ...
        tg.cancel_scope.cancel()

or ``async with running_server() as (port, stats): ...``.  :class:`ServerStats` counts
connections, requests and client disconnects.
"""

from __future__ import annotations

import argparse
import http
import logging
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream, TaskGroup, TaskStatus

__all__ = ["ServerStats", "handle_connection", "main", "running_server", "serve", "start_server"]

logger = logging.getLogger("http_server")

#: The bytes ``receive()`` asks for at once.
RECEIVE_SIZE = 65536
#: The largest request body ``/echo`` accepts (``413`` beyond it).
MAX_BODY = 64 * 1024 * 1024
#: ``/bytes/{n}`` serves slices of this block (and repeats it past its end).
_BLOCK = b"x" * (1024 * 1024)
HELLO = b"Hello, world!\n"
_REASONS = {int(s): s.phrase.encode() for s in http.HTTPStatus}
SERVER_NAME = b"anyio-h11-example"

#: The exceptions that mean "the client went away": they end that connection only.
DISCONNECTED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


@dataclass
class ServerStats:
    """What a running server has seen (all counters only grow)."""

    connections_opened: int = 0
    connections_closed: int = 0
    requests: int = 0
    #: Connections that ended because the client went away mid-request or mid-response.
    disconnects: int = 0
    #: Requests answered with 400 (malformed) or 500 (a bug in a handler).
    errors: int = 0
    #: Responses whose last byte was handed to the socket.
    responses_completed: int = 0
    paths: dict[str, int] = field(default_factory=dict)

    @property
    def connections_open(self) -> int:
        """Connections accepted and not yet finished."""
        return self.connections_opened - self.connections_closed


class _ClientGone(Exception):
    """Raised inside a connection when its client disconnected."""


class _Exchange:
    """One request/response on a connection: the writer side of h11, bound to the stream."""

    __slots__ = ("conn", "head_only", "started", "stream")

    def __init__(self, conn: h11.Connection, stream: SocketStream, head_only: bool) -> None:
        self.conn = conn
        self.stream = stream
        self.head_only = head_only
        self.started = False

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send(data)
        except DISCONNECTED as exc:
            raise _ClientGone from exc

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        self.started = True
        headers = [(b"server", SERVER_NAME), *headers]
        response = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
        data = self.conn.send(response)
        assert data is not None
        return data

    async def respond(self, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
        """A whole response with Content-Length, in one ``send()``."""
        head = self._head(
            status, [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        )
        if self.head_only or not body:
            tail = self.conn.send(h11.EndOfMessage())
            assert tail is not None
            await self._send(head + tail)
            return
        parts = self.conn.send_with_data_passthrough(h11.Data(data=body))
        assert parts is not None
        tail = self.conn.send(h11.EndOfMessage())
        assert tail is not None
        await self._send(b"".join([head, *parts, tail]))

    async def respond_sized(
        self, status: int, length: int, pieces: Iterable[bytes], content_type: bytes
    ) -> None:
        """A Content-Length response whose body is ``pieces`` (large bodies: no joining copy)."""
        head = self._head(
            status, [(b"content-type", content_type), (b"content-length", str(length).encode())]
        )
        if self.head_only:
            tail = self.conn.send(h11.EndOfMessage())
            assert tail is not None
            await self._send(head + tail)
            return
        first = True
        for piece in pieces:
            parts = self.conn.send_with_data_passthrough(h11.Data(data=piece))
            assert parts is not None
            if first:  # the head rides with the first piece
                parts = [head, *parts]
                first = False
            await self._send(b"".join(parts) if len(parts) > 1 else parts[0])
        tail = self.conn.send(h11.EndOfMessage())
        assert tail is not None
        if first or tail:
            await self._send(head + tail if first else tail)

    async def start_chunked(self, status: int, content_type: bytes = b"text/plain") -> None:
        """Send the head of a chunked response (HTTP/1.1 clients; h11 falls back to close-delimited)."""
        head = self._head(status, [(b"content-type", content_type), (b"transfer-encoding", b"chunked")])
        await self._send(head)

    async def chunk(self, data: bytes) -> None:
        """One chunk of a response started with :meth:`start_chunked`."""
        if self.head_only or not data:
            return
        parts = self.conn.send_with_data_passthrough(h11.Data(data=data))
        assert parts is not None
        await self._send(b"".join(parts))

    async def finish(self) -> None:
        """End a response started with :meth:`start_chunked`."""
        tail = self.conn.send(h11.EndOfMessage())
        assert tail is not None
        if tail:
            await self._send(tail)


def _pieces(n: int, size: int) -> Iterable[bytes]:
    """``n`` bytes of ``x`` in pieces of at most ``size`` bytes (slices of one block)."""
    block = _BLOCK
    size = max(1, min(size, len(_BLOCK)))
    while n > 0:
        step = min(n, size)
        yield block if step == len(block) else block[:step]
        n -= step


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    return int(values[-1]) if values else default


def _float_param(query: dict[str, list[str]], name: str, default: float) -> float:
    values = query.get(name)
    return float(values[-1]) if values else default


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name)
    return values is not None and values[-1] not in ("", "0", "false", "no")


async def _handle_request(
    ex: _Exchange, method: bytes, path: str, query: dict[str, list[str]], body: bytes, content_type: bytes
) -> None:
    """Route one request (its body already read) and send the whole response."""
    get = method in (b"GET", b"HEAD")
    if path == "/":
        if not get:
            await ex.respond(405, b"method not allowed\n")
            return
        await ex.respond(200, HELLO)
    elif path.startswith("/bytes/"):
        if not get:
            await ex.respond(405, b"method not allowed\n")
            return
        n = int(path[len("/bytes/") :])
        if n < 0:
            raise ValueError("negative size")
        if _flag(query, "chunked"):
            await ex.start_chunked(200, b"application/octet-stream")
            for piece in _pieces(n, _int_param(query, "chunk", 65536)):
                await ex.chunk(piece)
            await ex.finish()
        elif n <= len(_BLOCK):
            await ex.respond(200, _BLOCK[:n], b"application/octet-stream")
        else:
            await ex.respond_sized(200, n, _pieces(n, len(_BLOCK)), b"application/octet-stream")
    elif path.startswith("/stream/"):
        if not get:
            await ex.respond(405, b"method not allowed\n")
            return
        n = int(path[len("/stream/") :])
        size = _int_param(query, "size", -1)
        delay = _float_param(query, "delay", 0.0)
        await ex.start_chunked(200)
        for i in range(n):
            if i and delay > 0:
                await anyio.sleep(delay)
            await ex.chunk(f"chunk {i}\n".encode() if size < 0 else _BLOCK[:size])
        await ex.finish()
    elif path == "/echo":
        if method not in (b"POST", b"PUT"):
            await ex.respond(405, b"method not allowed\n")
            return
        content_type = content_type or b"application/octet-stream"
        if _flag(query, "chunked"):
            await ex.start_chunked(200, content_type)
            await ex.chunk(body)
            await ex.finish()
        else:
            await ex.respond(200, body, content_type)
    else:
        await ex.respond(404, b"not found\n")


async def handle_connection(stream: SocketStream, stats: ServerStats | None = None) -> None:
    """Serve HTTP/1.1 on one connection until the client closes it (or asks for ``close``).

    The client going away ends this connection only: nothing propagates to the listener.
    """
    stats = stats if stats is not None else ServerStats()
    stats.connections_opened += 1
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            await _serve_requests(conn, stream, stats)
        except (_ClientGone, *DISCONNECTED):
            stats.disconnects += 1
        except h11.RemoteProtocolError as exc:  # a malformed request: 400 where we still may, then close
            stats.errors += 1
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send_error(stream, exc.error_status_hint, f"bad request: {exc}\n".encode())
        except Exception:  # a bug in a handler: log it, end this connection only
            stats.errors += 1
            logger.exception("error while serving a connection")
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send_error(stream, 500, b"internal server error\n")
        finally:
            stats.connections_closed += 1


async def _serve_requests(conn: h11.Connection, stream: SocketStream, stats: ServerStats) -> None:
    """The request loop of :func:`handle_connection`: returns when the connection should close."""
    receive = stream.receive
    while True:
        # ---- read one request head
        event = conn.next_event()
        while event is h11.NEED_DATA:
            try:
                data = await receive(RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            conn.receive_data(data)
            event = conn.next_event()
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return  # a clean close between requests
        assert isinstance(event, h11.Request), event
        request = event
        stats.requests += 1
        # ---- read its body
        chunks: list[bytes] = []
        size = 0
        too_big = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await receive(RECEIVE_SIZE)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    too_big = True
                elif not too_big:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _ClientGone  # closed in the middle of a body
            else:  # pragma: no cover - h11 yields nothing else here
                raise RuntimeError(f"unexpected h11 event {event!r}")
        # ---- respond
        ex = _Exchange(conn, stream, head_only=request.method == b"HEAD")
        target = request.target.decode("ascii", "replace")
        path, _, raw_query = target.partition("?")
        stats.paths[path] = stats.paths.get(path, 0) + 1
        content_type = b""
        for name, value in request.headers:
            if name == b"content-type":
                content_type = value
        try:
            if too_big:
                await ex.respond(413, b"request body too large\n")
            else:
                query = urllib.parse.parse_qs(raw_query) if raw_query else {}
                await _handle_request(ex, request.method, path, query, b"".join(chunks), content_type)
        except (ValueError, h11.LocalProtocolError) as exc:
            if ex.started:
                raise
            stats.errors += 1
            await ex.respond(400, f"bad request: {exc}\n".encode())
        stats.responses_completed += 1
        # ---- next request on this connection, or close
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _send_error(stream: SocketStream, status: int, body: bytes) -> None:
    """A last response outside h11's state machine (which is in an error state), then close."""
    reason = _REASONS.get(status, b"Error").decode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send(head + body)
    except DISCONNECTED:
        pass
    finally:
        await stream.aclose()


async def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    stats: ServerStats | None = None,
    backlog: int = 1024,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0: any free port) and serve HTTP/1.1 until cancelled.

    Reports the bound port through ``task_status`` (``await task_group.start(serve)`` returns
    it).  ``stats``, if given, is updated as connections come and go.
    """
    stats = stats if stats is not None else ServerStats()
    async with await anyio.create_tcp_listener(local_host=host, local_port=port, backlog=backlog) as listener:
        bound = int(listener.extra(SocketAttribute.local_port))
        task_status.started(bound)

        async def handler(stream: SocketStream) -> None:
            await handle_connection(stream, stats)

        await listener.serve(handler)


async def start_server(
    tg: TaskGroup,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    stats: ServerStats | None = None,
    backlog: int = 1024,
) -> int:
    """Start :func:`serve` in ``tg``; return the bound port once it is listening."""

    async def run(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        await serve(port, host, stats=stats, backlog=backlog, task_status=task_status)

    bound: int = await tg.start(run)
    return bound


@asynccontextmanager
async def running_server(port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[tuple[int, ServerStats]]:
    """``async with running_server() as (port, stats):`` a server for the block, then stopped."""
    stats = ServerStats()
    async with anyio.create_task_group() as tg:
        bound = await start_server(tg, port, host, stats=stats)
        try:
            yield bound, stats
        finally:
            tg.cancel_scope.cancel()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` at the first SIGTERM or SIGINT (a clean exit: profilers write their data)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


def main(argv: list[str] | None = None) -> None:
    """The command line: ``--backend``, ``--uvloop``, ``--host``, ``--port``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="asyncio", help="the anyio backend: asyncio, trio, uring")
    parser.add_argument("--uvloop", action="store_true", help="asyncio backend: run on uvloop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.uvloop:
        if args.backend != "asyncio":
            parser.error("--uvloop needs --backend asyncio")
        options["use_uvloop"] = True
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")

    def announce(port: int) -> None:
        print(port, flush=True)
        print(f"serving on http://{args.host}:{port}/ ({args.backend})", file=sys.stderr, flush=True)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            announce(await start_server(tg, args.port, args.host, backlog=args.backlog))

    anyio.run(run, backend=args.backend, backend_options=options)


if __name__ == "__main__":
    main()
