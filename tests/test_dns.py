"""getaddrinfo / getnameinfo: worker threads for real lookups, inline for numeric ones, IDNA
2008 for internationalized names, and prompt cancellation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import anyio_uring as au
from anyio_uring._core import current_runner
from anyio_uring._proc._dns import encode_hostname, getaddrinfo, getnameinfo


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return au.run(fn)


def used_a_thread() -> bool:
    return current_runner()._worker_pool is not None


def test_localhost_resolves_in_a_thread() -> None:
    async def main() -> None:
        result = await getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        assert used_a_thread()
        addresses = {(family, sockaddr[0]) for family, _, _, _, sockaddr in result}
        assert addresses & {(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")}
        for family, kind, proto, canonname, sockaddr in result:
            assert isinstance(family, socket.AddressFamily)
            assert kind == socket.SOCK_STREAM
            assert isinstance(proto, int)
            assert isinstance(canonname, str)
            assert sockaddr[1] == 80

    run(main)


def test_bytes_host_and_service_name() -> None:
    async def main() -> None:
        result = await getaddrinfo(b"localhost", "http", socket.AF_INET, socket.SOCK_STREAM)
        assert result[0][4] == ("127.0.0.1", 80)

    run(main)


def test_numeric_lookups_need_no_thread() -> None:
    async def main() -> None:
        assert await getaddrinfo("127.0.0.1", 8080, type=socket.SOCK_STREAM) == [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 8080))
        ]
        v6 = await getaddrinfo(b"::1", "443", socket.AF_INET6, socket.SOCK_DGRAM)
        assert v6[0][4][:2] == ("::1", 443)
        passive = await getaddrinfo(None, 0, socket.AF_INET, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        assert passive[0][4] == ("0.0.0.0", 0)
        assert await getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV) == (
            "127.0.0.1",
            "80",
        )
        assert not used_a_thread()

    run(main)


def test_numeric_address_of_the_wrong_family_fails_inline() -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror):
            await getaddrinfo("::1", 80, family=socket.AF_INET)
        assert not used_a_thread()

    run(main)


def test_unresolvable_name() -> None:
    async def main() -> None:
        with pytest.raises(socket.gaierror):
            await getaddrinfo("does-not-exist.invalid", 80)

    run(main)


def test_getnameinfo_in_a_thread() -> None:
    async def main() -> None:
        host, service = await getnameinfo(("127.0.0.1", 80))
        assert used_a_thread()
        assert isinstance(host, str)
        assert host
        assert service == "http"

    run(main)


def test_idna_2008_encoding() -> None:
    # IDNA 2003 (Python's "idna" codec) maps "ß" to "ss"; IDNA 2008 keeps it.
    assert encode_hostname("straße.de") == b"xn--strae-oqa.de"
    assert "straße.de".encode("idna") == b"strasse.de"
    assert encode_hostname("Bücher.example") == b"xn--bcher-kva.example"  # UTS 46 lowercases
    assert encode_hostname("::1") == b"::1"  # ASCII passes through untouched


def test_str_hosts_reach_the_resolver_idna_2008_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        calls.append((host, flags))
        if flags & socket.AI_NUMERICHOST:
            return real(host, port, family, type, proto, flags)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)

    async def main() -> None:
        result = await getaddrinfo("straße.de", 443, flags=socket.AI_CANONNAME)
        assert result[0][4] == ("192.0.2.1", 443)

    run(main)
    numeric = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    assert calls == [
        (b"xn--strae-oqa.de", socket.AI_CANONNAME | numeric),  # inline attempt
        (b"xn--strae-oqa.de", socket.AI_CANONNAME),  # the thread
    ]


def test_cancelled_lookup_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup stuck in the resolver does not hold up a cancellation (the thread is
    abandoned; run() still waits for it before returning)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def slow(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        if flags & socket.AI_NUMERICHOST:
            return real(host, port, family, type, proto, flags)
        release.wait(10)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def main() -> float:
        start = time.monotonic()
        with au.move_on_after(0.05) as scope:
            await getaddrinfo("slow.example", 80)
        assert scope.cancelled_caught
        elapsed = time.monotonic() - start
        release.set()
        return elapsed

    assert run(main) < 2.0


def test_cancelled_before_the_lookup() -> None:
    async def main() -> None:
        with au.CancelScope() as scope:
            scope.cancel()
            await getaddrinfo("127.0.0.1", 80)
        assert scope.cancelled_caught
        with au.CancelScope() as scope:
            scope.cancel()
            await getnameinfo(("127.0.0.1", 80))
        assert scope.cancelled_caught

    run(main)
