"""Libraries written against anyio, unmodified, on "uring" (with the compatibility layer).

* httpx's and httpx2's ``AsyncClient`` doing real requests over loopback against
  ``examples/http_server.py`` (h11 over anyio streams) running on the same uring loop: keep-alive,
  large bodies both ways, streaming responses, timeouts and cancel scopes that end a response
  midway -- after which the client keeps working;
* a Starlette and a FastAPI app through ``TestClient(app, backend="uring")`` (blocking portal)
  and through ``AsyncClient(transport=ASGITransport(app))`` on uring;
* a plain asyncio loop with httpx in another thread at the same time as a uring loop with httpx,
  both against the same server.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import sniffio
from fastapi import BackgroundTasks, Depends, FastAPI
from pydantic import BaseModel

pytestmark = pytest.mark.filterwarnings("error")


def _load_example() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "examples" / "http_server.py"
    spec = importlib.util.spec_from_file_location("anyio_uring_example_http_server", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


http_server = _load_example()


@pytest.fixture(params=["httpx", "httpx2"])
def httpx_module(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def test_async_client_against_a_uring_server(httpx_module: Any) -> None:
    httpx = httpx_module

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {"sniffio": sniffio.current_async_library()}
        async with http_server.running_server() as (port, stats):
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                r = await client.get("/")
                seen["hello"] = (r.status_code, r.text, r.http_version)
                big = await client.get("/bytes/3000000")
                seen["big"] = len(big.content)
                body = bytes(range(256)) * 20000  # 5 MB up, and back
                echo = await client.post("/echo", content=body, headers={"content-type": "x/y"})
                seen["echo"] = (echo.content == body, echo.headers["content-type"])
                chunked = await client.get("/bytes/200000?chunked=1&chunk=7000")
                seen["chunked"] = (len(chunked.content), chunked.headers.get("transfer-encoding"))

                # streaming: chunks arrive as the server sends them
                lines = []
                async with client.stream("GET", "/stream/50") as response:
                    async for line in response.aiter_lines():
                        lines.append(line)
                seen["stream"] = lines == [f"chunk {i}" for i in range(50)]

                # a read timeout while the server sleeps between chunks ends the response
                async def read_slowly() -> None:
                    async with client.stream("GET", "/stream/5?delay=2", timeout=0.2) as response:
                        async for _ in response.aiter_bytes():
                            pass

                with pytest.raises(httpx.ReadTimeout):
                    await read_slowly()
                # a cancel scope that fires mid-response (anyio's cancellation through httpcore)
                got = 0
                with anyio.move_on_after(0.3) as scope:
                    async with client.stream("GET", "/stream/1000?delay=0.05") as response:
                        async for _ in response.aiter_raw():
                            got += 1
                seen["cancelled mid-response"] = scope.cancelled_caught and 0 < got < 1000
                # the pool recovers: new requests on new connections work
                results = []

                async def get(i: int) -> None:
                    response = await client.get(f"/bytes/{1000 + i}")
                    results.append(len(response.content))

                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(get, i)
                seen["concurrent"] = sorted(results) == [1000 + i for i in range(20)]
            with anyio.fail_after(5):
                while stats.disconnects < 2:  # the timed-out and the cancelled response
                    await anyio.sleep(0.01)
            seen["requests"] = stats.requests >= 27
        return seen

    seen = anyio.run(main, backend="uring")
    assert seen == {
        "sniffio": "uring",
        "hello": (200, "Hello, world!\n", "HTTP/1.1"),
        "big": 3000000,
        "echo": (True, "x/y"),
        "chunked": (200000, "chunked"),
        "stream": True,
        "cancelled mid-response": True,
        "concurrent": True,
        "requests": True,
    }


def test_asyncio_thread_and_uring_thread_at_once(httpx_module: Any) -> None:
    """httpx on asyncio in one thread and on uring in another, interleaved in time, against one
    server (on uring, in a third thread): both work, and each sees its own sniffio name."""
    httpx = httpx_module
    port_ready = threading.Event()
    stop_server = threading.Event()
    port: list[int] = []
    results: dict[str, Any] = {}

    async def server() -> None:
        async with http_server.running_server() as (bound, _stats):
            port.append(bound)
            port_ready.set()
            await anyio.to_thread.run_sync(stop_server.wait)

    async def client(name: str) -> None:
        port_ready.wait(10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port[0]}") as c:
            sizes = []
            for i in range(60):
                r = await c.get(f"/bytes/{i * 100}")
                sizes.append(len(r.content))
                await anyio.sleep(0.002)  # let the other thread's loop interleave
            results[name] = (sniffio.current_async_library(), sizes == [i * 100 for i in range(60)])

    server_thread = threading.Thread(target=anyio.run, args=(server,), kwargs={"backend": "uring"})
    asyncio_thread = threading.Thread(target=asyncio.run, args=(client("asyncio"),))
    server_thread.start()
    asyncio_thread.start()
    try:
        anyio.run(client, "uring", backend="uring")
        asyncio_thread.join(30)
    finally:
        stop_server.set()
        server_thread.join(30)
    assert results == {"asyncio": ("asyncio", True), "uring": ("uring", True)}


# -- ASGI apps ------------------------------------------------------------------------------------


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": request.path_params["name"], "lib": sniffio.current_async_library()})

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"length": len(body)})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(10):
                await anyio.sleep(0)
                yield f"{i},".encode()

        return StreamingResponse(chunks())

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close()
                return
            await websocket.send_text(text.upper())

    return Starlette(
        routes=[
            Route("/hello/{name}", hello),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            WebSocketRoute("/ws", ws),
        ]
    )


def _fastapi_app() -> Any:
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    done: list[str] = []
    app.state.done = done

    async def settings() -> dict[str, str]:
        return {"lib": sniffio.current_async_library()}

    @app.get("/hello/{name}")
    async def hello(name: str, s: dict[str, str] = Depends(settings)) -> dict[str, str]:  # noqa: B008
        return {"hello": name, "lib": s["lib"]}

    @app.post("/items")
    async def create(item: Item, background: BackgroundTasks) -> dict[str, Any]:
        background.add_task(done.append, item.name)
        return {"name": item.name, "double": item.price * 2}

    @app.get("/sync")
    def blocking() -> dict[str, str]:  # FastAPI runs it in a worker thread
        return {"thread": "main" if threading.current_thread() is threading.main_thread() else "worker"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(10):
                await anyio.sleep(0)
                yield f"{i},".encode()

        return StreamingResponse(chunks())

    return app


class Item(BaseModel):
    """FastAPI's request body model (at module level: annotations are strings here)."""

    name: str
    price: float


STREAM = "".join(f"{i}," for i in range(10))


def test_starlette_test_client_on_uring() -> None:
    from starlette.testclient import TestClient

    with TestClient(_starlette_app(), backend="uring") as client:
        assert client.get("/hello/world").json() == {"hello": "world", "lib": "uring"}
        assert client.post("/echo", content=b"x" * 100000).json() == {"length": 100000}
        assert client.get("/stream").text == STREAM
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("abc")
            assert websocket.receive_text() == "ABC"
            websocket.send_text("bye")


def test_fastapi_test_client_on_uring() -> None:
    from fastapi.testclient import TestClient

    app = _fastapi_app()
    with TestClient(app, backend="uring") as client:
        assert client.get("/hello/x").json() == {"hello": "x", "lib": "uring"}
        assert client.post("/items", json={"name": "pen", "price": 1.5}).json() == {
            "name": "pen",
            "double": 3.0,
        }
        assert client.post("/items", json={"name": "pen"}).status_code == 422
        assert client.get("/sync").json() == {"thread": "worker"}
        assert client.get("/stream").text == STREAM
    assert app.state.done == ["pen"]


@pytest.mark.parametrize("make_app", [_starlette_app, _fastapi_app], ids=["starlette", "fastapi"])
def test_asgi_transport_on_uring(httpx_module: Any, make_app: Any) -> None:
    httpx = httpx_module
    app = make_app()

    async def main() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            hello = (await client.get("/hello/asgi")).json()
            stream = (await client.get("/stream")).text
            responses = []

            async def get(i: int) -> None:
                responses.append((await client.get(f"/hello/{i}")).json()["hello"])

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(get, i)
        return [hello, stream, sorted(responses, key=int)]

    assert anyio.run(main, backend="uring") == [
        {"hello": "asgi", "lib": "uring"},
        STREAM,
        [str(i) for i in range(10)],
    ]
