"""The libraries the compatibility layer adapts: one entry each, with the reason.

Every replacement behaves exactly like the library's function unless a uring loop runs in the
calling thread (:func:`uring_here`); see the package docstring for how entries are applied and
checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import Adapter, uring_here

__all__ = ["ADAPTERS"]

#: The message httpcore's and httpcore2's whitelist raises (their shape check looks for it).
_UNSUPPORTED = "Running under an unsupported async environment."


def _consts(func: Callable[..., Any]) -> tuple[object, ...]:
    code = getattr(func, "__code__", None)
    return tuple(code.co_consts) if code is not None else ()


# -- httpcore / httpcore2: current_async_library() ---------------------------------------------


def _anyio_branch(original: Callable[[], str]) -> Callable[[], str]:
    """``current_async_library`` answering ``"asyncio"`` -- httpcore's anyio code path -- under
    uring."""

    def current_async_library() -> str:
        if uring_here():
            return "asyncio"
        return original()

    current_async_library.__doc__ = original.__doc__
    current_async_library.__wrapped__ = original  # type: ignore[attr-defined]
    return current_async_library


def _check_whitelist(original: Callable[..., Any]) -> str | None:
    if _UNSUPPORTED not in _consts(original):
        return f"current_async_library() no longer raises {_UNSUPPORTED!r}"
    return None


_HTTPCORE_REASON = (
    "its current_async_library() raises RuntimeError('Running under an unsupported async "
    "environment.') for any sniffio name but 'asyncio' and 'trio', from every lock, event, "
    "semaphore and shield it creates and from its network backend; its 'asyncio' branch is its "
    "anyio code (anyio.Lock, anyio.Event, anyio.CancelScope, anyio.connect_tcp), which runs on "
    "'uring' unchanged"
)

HTTPCORE = Adapter(
    distribution="httpcore",
    versions=((1,), (2,)),
    patches={
        "httpcore._synchronization": ("current_async_library",),
        "httpcore._backends.auto": ("current_async_library",),
    },
    make=_anyio_branch,
    check=_check_whitelist,
    reason=_HTTPCORE_REASON,
)

HTTPCORE2 = Adapter(
    distribution="httpcore2",
    versions=((2,), (3,)),
    patches={
        "httpcore2._synchronization": ("current_async_library",),
        "httpcore2._backends.auto": ("current_async_library",),
    },
    make=_anyio_branch,
    check=_check_whitelist,
    reason="httpcore2 (pydantic's fork of httpcore) has httpcore's check: " + _HTTPCORE_REASON,
)


# -- httpx / httpx2: ASGITransport's create_event() --------------------------------------------


def _anyio_event(original: Callable[[], Any]) -> Callable[[], Any]:
    """``create_event`` making an ``anyio.Event`` under uring (asyncio's needs an asyncio loop)."""

    def create_event() -> Any:
        if uring_here():
            import anyio

            return anyio.Event()
        return original()

    create_event.__doc__ = original.__doc__
    create_event.__wrapped__ = original  # type: ignore[attr-defined]
    return create_event


def _check_create_event(original: Callable[..., Any]) -> str | None:
    names = getattr(getattr(original, "__code__", None), "co_names", ())
    if "is_running_trio" not in names or "asyncio" not in names:
        return "create_event() no longer chooses between trio.Event and asyncio.Event"
    return None


_ASGI_REASON = (
    "ASGITransport's create_event() returns an asyncio.Event for every sniffio name but 'trio': "
    "under 'uring' there is no asyncio loop, so `AsyncClient(transport=ASGITransport(app))` "
    "fails ('NoneType' object has no attribute 'create_future'); an anyio.Event does the same job "
    "on any anyio backend"
)

HTTPX = Adapter(
    distribution="httpx",
    versions=((0, 28), (1,)),
    patches={"httpx._transports.asgi": ("create_event",)},
    make=_anyio_event,
    check=_check_create_event,
    reason=_ASGI_REASON,
)

HTTPX2 = Adapter(
    distribution="httpx2",
    versions=((2,), (3,)),
    patches={"httpx2._transports.asgi": ("create_event",)},
    make=_anyio_event,
    check=_check_create_event,
    reason=_ASGI_REASON,
)

#: Every adapted library.
ADAPTERS: tuple[Adapter, ...] = (HTTPCORE, HTTPCORE2, HTTPX, HTTPX2)
