"""pytest plugin (the outer pytest process of a conformance run, via ``-p``).

* Checks, before any test runs, that anyio really runs the chosen backend: inside
  ``anyio.run(..., backend=NAME)`` sniffio must report ``NAME`` and anyio must resolve it to the
  expected backend class.  Otherwise the whole run stops (a "passing" suite that silently ran
  another backend is worthless).
* Keeps only the tests parametrized with the chosen backend as ``anyio_backend`` (plus the tests
  that do not use that fixture at all) and deselects the rest.
* Writes every test's outcome to the JSON file named by ``$ANYIO_CONFORMANCE_REPORT``, for
  ``run.py`` to compare with the reference backend and the expected-failures list.
* Makes sure the run ends.  Some anyio tests start a server thread that blocks in ``accept()``
  and join it in a finalizer; when the backend under test cannot connect (no sockets yet), the
  join would wait forever -- and pytest-timeout stops timing a test once its call has failed.  So
  a teardown after a failure gets its own time limit (``TEARDOWN_TIMEOUT``), and if threads are
  still alive when the session ends the process exits without waiting for them.
* Contains the collateral damage of a failed test: what its frames held is released in its own
  teardown (see ``_release_failed_test``), not at a random later test.

Configured through the environment: ``ANYIO_CONFORMANCE_BACKEND`` (``uring`` or ``trio``),
``ANYIO_CONFORMANCE_REPORT`` and ``ANYIO_CONFORMANCE_LABEL`` (the prefix of its messages).
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Generator
from typing import Any

import pytest

BACKEND = os.environ.get("ANYIO_CONFORMANCE_BACKEND", "uring")
REPORT = os.environ.get("ANYIO_CONFORMANCE_REPORT")
LABEL = os.environ.get("ANYIO_CONFORMANCE_LABEL", "anyio-conformance")
SOCKETS_MESSAGE = "sockets are not yet supported on the anyio 'uring' backend"
TEARDOWN_TIMEOUT = 10.0
_SOCKETS_FEATURE = re.compile(re.escape(SOCKETS_MESSAGE) + r" \([^)]*\); (.*?) will be available")

_EXPECTED_CLASSES = {
    "uring": ("anyio_uring.backend", "UringBackend"),
    "trio": ("anyio._backends._trio", "TrioBackend"),
}


def _backend_param(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "anyio_backend" not in callspec.params:
        return None
    value = callspec.params["anyio_backend"]
    if isinstance(value, tuple):
        value = value[0]
    return str(value)


def _key(item: pytest.Item) -> str:
    """The test's identity across backends: its node id without the parameter id, plus every
    parameter but ``anyio_backend``."""
    base = item.nodeid.split("[", 1)[0]
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return base
    params = ",".join(
        f"{name}={_param_repr(value)}"
        for name, value in sorted(callspec.params.items())
        if name != "anyio_backend"
    )
    return f"{base}[{params}]"


def _param_repr(value: object) -> str:
    if isinstance(value, str | int | float | bool | bytes) or value is None:
        return repr(value)
    return getattr(value, "__qualname__", None) or type(value).__qualname__


def _check_backend() -> str | None:
    """None if anyio runs the expected backend, else what is wrong."""
    import importlib

    import anyio
    import sniffio
    from anyio._core._eventloop import get_async_backend

    module_name, class_name = _EXPECTED_CLASSES[BACKEND]
    try:
        expected = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:
        return f"cannot import {module_name}.{class_name}: {exc!r}"

    async def probe() -> tuple[str, type[Any]]:
        return sniffio.current_async_library(), get_async_backend()

    try:
        library, backend_class = anyio.run(probe, backend=BACKEND)
    except Exception as exc:
        return f"anyio.run(..., backend={BACKEND!r}) failed: {exc!r}"
    if library != BACKEND:
        return f"inside anyio.run(..., backend={BACKEND!r}) sniffio reports {library!r}"
    if backend_class is not expected:
        return f"inside anyio.run(..., backend={BACKEND!r}) anyio uses {backend_class!r}, not {expected!r}"
    return None


class _Recorder:
    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.on_backend: set[str] = set()
        self.selected = 0

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            backend = _backend_param(item)
            (keep if backend is None or backend == BACKEND else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        self.selected = len([item for item in keep if _backend_param(item) == BACKEND])
        self.keys = {item.nodeid: _key(item) for item in keep}
        self.on_backend = {item.nodeid for item in keep if _backend_param(item) == BACKEND}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items and not self.selected and not os.environ.get("ANYIO_CONFORMANCE_RERUN"):
            pytest.exit(f"{LABEL}: no test is parametrized with anyio_backend={BACKEND!r}", 3)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.setdefault(
            report.nodeid,
            {
                "key": self.keys.get(report.nodeid, report.nodeid),
                "outcome": "passed",
                "on_backend": report.nodeid in self.on_backend,
            },
        )
        if report.failed:
            if entry["outcome"] != "failed":
                entry["outcome"] = "failed"
                entry["when"] = report.when
                entry["message"] = _message(report)
                match = _SOCKETS_FEATURE.search(report.longreprtext)
                entry["sockets"] = match[1] if match else None
        elif report.skipped and entry["outcome"] == "passed":
            if hasattr(report, "wasxfail"):
                # An xfailed test's report still holds its error: the runner shows it when the
                # reference backend passes the test.
                entry["outcome"] = "xfailed"
                entry["when"] = report.when
                entry["message"] = _message(report)
            else:
                entry["outcome"] = "skipped"

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # A plain implementation, called before pytest's own (which tears the fixtures down)
        # and before the unraisable-exception check that ends the phase.
        if self.results.get(item.nodeid, {}).get("outcome") == "failed":
            _release_failed_test()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.exitstatus = int(exitstatus)
        if REPORT:
            with open(REPORT, "w", encoding="utf-8") as f:
                json.dump({"backend": BACKEND, "results": self.results}, f, indent=1, sort_keys=True)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        if stuck:
            sys.stdout.write(
                f"{LABEL}: exiting without joining {len(stuck)} thread(s) left blocked by failed "
                f"tests: {', '.join(t.name for t in stuck)}\n"
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(getattr(self, "exitstatus", 1))


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)[-500:]


class _TeardownTimer:
    """Times a teardown that pytest-timeout stopped timing (it does once a test's call failed)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        if signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL:
            return (yield)  # pytest-timeout is still timing this test

        def expired(signum: int, frame: object) -> None:
            pytest.fail(f"teardown took over {TEARDOWN_TIMEOUT} s (conformance harness)", pytrace=False)

        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, TEARDOWN_TIMEOUT)
        try:
            return (yield)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _release_failed_test() -> None:
    """Free what a failed test left behind, now, so that it is reported against that test.

    pytest keeps the last failure's traceback (``sys.last_traceback``, for post-mortem
    debugging), and with it the failed test's frames: resources they hold (e.g. a listening
    socket of a test that could not connect) would otherwise be finalized -- with a
    ResourceWarning, an error under ``-W error`` -- during some later, unrelated test.
    """
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """A fixture that *raised* keeps its exception -- and through its traceback whatever its
    frame held, e.g. a socket it could not bind -- until it is finalized, often in the set-up of
    the next test (parametrization switch).  Free it here, where its ResourceWarnings belong to
    nobody: the fixture's own failure has been reported already."""
    cached = fixturedef.cached_result
    if cached is None or cached[2] is None:
        return
    fixturedef.cached_result = None
    del cached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def pytest_configure(config: pytest.Config) -> None:
    if BACKEND not in _EXPECTED_CLASSES:
        raise pytest.UsageError(f"ANYIO_CONFORMANCE_BACKEND must be one of {sorted(_EXPECTED_CLASSES)}")
    problem = _check_backend()
    if problem is not None:
        pytest.exit(f"{LABEL}: the {BACKEND!r} backend is not what anyio runs: {problem}", 3)
    config.pluginmanager.register(_Recorder(), "anyio_uring_conformance_recorder")
    config.pluginmanager.register(_TeardownTimer(), "anyio_uring_conformance_teardown_timer")
