"""Other anyio-based libraries on "uring", unmodified (no compatibility entry needed):
asyncer (which subclasses ``anyio._backends._<name>.TaskGroup``) and the MCP SDK's stdio
transport (a client and a server, each on uring, talking over a real subprocess's pipes)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.filterwarnings("error")


def test_asyncer_on_uring() -> None:
    import asyncer

    async def add_one(x: int) -> int:
        await anyio.sleep(0.001)
        return x + 1

    def in_worker(x: int) -> int:
        return asyncer.syncify(add_one)(x) * 2  # back into the loop from a worker thread

    async def main() -> tuple[int, int, list[int]]:
        from_thread = await asyncer.asyncify(in_worker)(20)
        async with asyncer.create_task_group() as tg:
            values = [tg.soonify(add_one)(i) for i in range(5)]
        return from_thread, await add_one(0), [v.value for v in values]

    assert anyio.run(main, backend="uring") == (42, 1, [1, 2, 3, 4, 5])
    assert asyncer.runnify(add_one, backend="uring")(41) == 42


SERVER = textwrap.dedent(
    """
    import sys, anyio, sniffio
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("anyio_uring-test")

    @server.tool()
    def add(a: int, b: int) -> int:
        \"\"\"Add two numbers.\"\"\"
        return a + b

    @server.tool()
    async def library() -> str:
        \"\"\"The async library the server runs on.\"\"\"
        await anyio.sleep(0.001)
        return sniffio.current_async_library()

    anyio.run(server.run_stdio_async, backend=sys.argv[1])
    """
)


@pytest.mark.parametrize("server_backend", ["uring", "asyncio"])
def test_mcp_stdio_client_and_server_on_uring(tmp_path: Path, server_backend: str) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    script = tmp_path / "server.py"
    script.write_text(SERVER)

    async def main() -> list[Any]:
        params = StdioServerParameters(command=sys.executable, args=[str(script), server_backend])
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                tools = sorted(tool.name for tool in (await session.list_tools()).tools)
                added = await session.call_tool("add", {"a": 2, "b": 3})
                library = await session.call_tool("library", {})
                return [tools, added.content[0].text, library.content[0].text]  # type: ignore[union-attr]

    assert anyio.run(main, backend="uring") == [["add", "library"], "5", server_backend]
