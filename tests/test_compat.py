"""The compatibility layer (``anyio_uring._compat``): libraries that whitelist sniffio's names.

Every listed library is installed by the test extras and imported here: an adapter that no
longer fits its library (new major version, changed shape) emits a CompatWarning, which the
suite's ``filterwarnings = error`` turns into a failure -- in CI, not in production.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import types
import warnings
from typing import Any

import anyio
import pytest
import sniffio
import trio

import anyio_uring
from anyio_uring import _compat
from anyio_uring._compat import Adapter, CompatWarning
from anyio_uring._compat._libraries import ADAPTERS

pytestmark = pytest.mark.filterwarnings("error")


def _import_all() -> None:
    import httpcore  # noqa: F401
    import httpcore2  # noqa: F401
    import httpx
    import httpx._transports.asgi  # noqa: F401
    import httpx2
    import httpx2._transports.asgi  # noqa: F401


def test_every_adapter_applies_to_the_installed_release() -> None:
    _import_all()
    _compat.activate()
    applied = _compat.applied()
    for adapter in ADAPTERS:
        for module, names in adapter.patches.items():
            assert applied.get(module) == list(names), (adapter.distribution, module, applied)


def test_httpcore_takes_its_anyio_branch_only_under_uring() -> None:
    _import_all()
    import httpcore._synchronization as sync

    async def under(backend: str) -> str:
        return sync.current_async_library()

    assert anyio.run(under, "uring", backend="uring") == "asyncio"
    assert anyio.run(under, "trio", backend="trio") == "trio"
    assert anyio.run(under, "asyncio", backend="asyncio") == "asyncio"
    with pytest.raises(RuntimeError, match="unsupported async environment"):
        anyio.run(under, "off", backend="uring", backend_options={"compat": False})


def test_native_run_adapts_too_and_can_switch_it_off() -> None:
    _import_all()
    import httpcore2._synchronization as sync

    async def ask() -> str:
        return sync.current_async_library()

    assert anyio_uring.run(ask) == "asyncio"
    with pytest.raises(RuntimeError, match="unsupported async environment"):
        anyio_uring.run(ask, compat=False)


def test_asgi_transport_event_is_anyio_under_uring_and_asyncio_elsewhere() -> None:
    _import_all()
    import httpx._transports.asgi as asgi

    async def make() -> object:
        return asgi.create_event()

    assert isinstance(anyio.run(make, backend="uring"), anyio.Event)
    assert isinstance(anyio.run(make, backend="trio"), trio.Event)
    assert isinstance(anyio.run(make, backend="asyncio"), asyncio.Event)


def test_an_asyncio_loop_in_another_thread_is_unaffected() -> None:
    """While a uring loop runs in the main thread, a thread running asyncio sees httpcore's
    original function (and sniffio's "asyncio"); outside any loop the library's error stays."""
    _import_all()
    import httpcore._synchronization as sync

    seen: dict[str, Any] = {}
    uring_running = threading.Event()
    asyncio_done = threading.Event()

    def in_asyncio_thread() -> None:
        uring_running.wait(10)

        async def main() -> None:
            seen["asyncio"] = (sniffio.current_async_library(), sync.current_async_library())

        asyncio.run(main())
        try:
            sync.current_async_library()  # no loop in this thread: sniffio's own error
        except sniffio.AsyncLibraryNotFoundError as exc:
            seen["outside"] = type(exc)
        asyncio_done.set()

    async def uring_main() -> None:
        uring_running.set()
        await anyio.to_thread.run_sync(asyncio_done.wait, 10)
        seen["uring"] = (sniffio.current_async_library(), sync.current_async_library())

    thread = threading.Thread(target=in_asyncio_thread)
    thread.start()
    anyio.run(uring_main, backend="uring")
    thread.join(10)
    assert seen == {
        "asyncio": ("asyncio", "asyncio"),
        "outside": sniffio.AsyncLibraryNotFoundError,
        "uring": ("uring", "asyncio"),
    }


def _fake_adapter(module: str, distribution: str, versions: Any, check_result: str | None) -> Adapter:
    return Adapter(
        distribution=distribution,
        versions=versions,
        patches={module: ("current_async_library",)},
        make=lambda original: lambda: "patched",
        check=lambda original: check_result,
        reason="a test needs it",
    )


def _fake_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def current_async_library() -> str:
        return "original"

    module.current_async_library = current_async_library  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize(
    ("distribution", "versions", "check_result", "match"),
    [
        ("anyio_uring_no_such_dist", ((1,), (2,)), "the whitelist is gone", "its shape changed"),
        ("anyio", ((5,), (6,)), None, "outside the tested range >=5,<6"),
    ],
    ids=["shape", "version"],
)
def test_a_changed_library_is_left_alone_with_one_warning(
    distribution: str, versions: Any, check_result: str | None, match: str
) -> None:
    name = f"anyio_uring_test_fake_{distribution}"
    module = _fake_module(name)
    adapter = _fake_adapter(name, distribution, versions, check_result)
    try:
        with pytest.warns(CompatWarning, match=match):
            _compat._apply(adapter, name, module)
        assert module.current_async_library() == "original"  # type: ignore[attr-defined]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _compat._apply(adapter, name, module)  # warned once per distribution only
    finally:
        _compat._refused.discard(distribution)


def test_a_fitting_fake_library_is_adapted_once() -> None:
    name = "anyio_uring_test_fake_fit"
    module = _fake_module(name)
    adapter = _fake_adapter(name, "anyio_uring_no_such_dist_fit", ((1,), (2,)), None)
    _compat._apply(adapter, name, module)
    replacement = module.current_async_library  # type: ignore[attr-defined]
    assert replacement() == "patched"
    _compat._apply(adapter, name, module)
    assert module.current_async_library is replacement  # type: ignore[attr-defined]


# The adapters must apply whether the library is imported before the first run or during one.
LAZY = textwrap.dedent(
    """
    import sys, anyio
    if sys.argv[1] == "before":
        import httpx, httpcore._backends.auto
    async def main():
        import httpx, httpcore._backends.auto, httpcore._synchronization as s
        from anyio_uring._compat import applied
        lock = httpcore._synchronization.AsyncLock()
        async with lock:
            pass
        print(s.current_async_library(), httpcore._backends.auto.current_async_library(),
              sorted(applied()))
    anyio.run(main, backend="uring")
    """
)


@pytest.mark.parametrize("when", ["before", "during"])
def test_libraries_imported_before_or_during_the_run_are_adapted(when: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", LAZY, when],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "asyncio",
        "asyncio",
        "['httpcore._backends.auto',",
        "'httpcore._synchronization',",
        "'httpx._transports.asgi']",
    ], proc.stdout
