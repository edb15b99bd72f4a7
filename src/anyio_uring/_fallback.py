"""Running where io_uring is blocked: on trio's loop, after one warning.

Docker's default seccomp profile, several managed Kubernetes and sandboxed platforms, and
``sysctl kernel.io_uring_disabled`` make ``io_uring_setup`` fail with ``EPERM`` (or ``ENOSYS``
for a filter that pretends the call does not exist, and on kernels without io_uring).  That is
where most Python services are deployed, so by default a run that cannot create its ring does not
fail: ``anyio.run(..., backend="uring")``, ``anyio_uring.run()``, anyio's pytest plugin and
blocking portals (``anyio.from_thread.start_blocking_portal(backend="uring")``) run the program on
**trio**'s epoll-based loop instead, after one :class:`IoUringFallbackWarning` per process that
names the cause and the remedy.

Why trio and not a readiness-based driver inside our own runtime: trio *is* the semantics this
runtime reproduces (its scheduler, cancel scopes and task groups are checked differentially
against trio's in ``tests/test_differential.py``), it is mature exactly on the path the fallback
needs (epoll, non-blocking sockets, worker threads for files), and anyio's trio backend is tested
by anyio's own suite.  A second driver of ours would re-implement some twenty ring operations over
readiness and threads -- a second I/O stack with its own bugs, serving only the deployments that
cannot use the first.  The cost of the choice: inside a fallback run sniffio says ``"trio"`` and
anyio dispatches to its trio backend, so code written against anyio (or trio) runs unchanged,
while the runtime's own low-level API (``anyio_uring.sleep``, ``anyio_uring.CancelScope``,
``wait_operation`` ...), which drives the ring, raises a ``RuntimeError`` naming the fallback.
``anyio_uring.open_file`` and ``anyio_uring.Path`` keep working: outside a uring loop they do
anyio's worker-thread I/O.

Which failures fall back: ``EPERM``, ``EACCES`` (policy: seccomp, LSM, the sysctl) and ``ENOSYS``
(no io_uring).  Exhausted resources (``EMFILE``, ``ENOMEM``) stay errors: they are not a property
of the deployment, and trio's loop would need the same descriptors and memory.

Making the fallback an error: the backend option ``fallback=False``
(``backend_options={"fallback": False}``; ``anyio_uring.run(..., fallback=False)``) or the
environment variable ``ANYIO_URING_FALLBACK=0``.  An explicit option wins over the variable.
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import Clock, MockClock, SystemClock
from ._core._context import GLOBAL
from ._errors import IoUringUnavailableError

if TYPE_CHECKING:
    import anyio.abc

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "FALLBACK_ERRNOS",
    "IoUringFallbackWarning",
    "blocked",
    "fallback_allowed",
    "falls_back",
    "run_on_trio",
    "trio_clock",
    "trio_test_runner",
]

T = TypeVar("T")

#: ``io_uring_setup`` errors that mean "this deployment does not allow io_uring".
FALLBACK_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOSYS})

#: ``0`` (or ``false``/``no``/``off``/``error``) makes a blocked io_uring an error.
ENVIRONMENT_VARIABLE = "ANYIO_URING_FALLBACK"

_OFF = frozenset({"0", "false", "no", "off", "error"})
_ON = frozenset({"", "1", "true", "yes", "on", "trio"})


class IoUringFallbackWarning(RuntimeWarning):
    """io_uring is blocked here; the run continues on trio's loop (slower, same semantics)."""


def fallback_allowed(option: bool | None) -> bool:
    """Whether a blocked io_uring falls back: the option if given, else the environment."""
    if option is not None:
        return option
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(
        f"{ENVIRONMENT_VARIABLE}={value!r} is not understood: use 0 to make a blocked io_uring an "
        "error, or 1 (the default) to fall back to trio's loop"
    )


def falls_back(exc: IoUringUnavailableError, option: bool | None) -> bool:
    """Whether the run that got ``exc`` creating its ring should continue on trio."""
    return exc.errno in FALLBACK_ERRNOS and fallback_allowed(option)


_lock = threading.Lock()
_warned = False
_probed = False
_blocked: IoUringUnavailableError | None = None


def _warn_once(exc: IoUringUnavailableError) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"{exc} -- running on trio's loop instead: the same semantics, but slower (readiness-based "
        f"sockets, files in worker threads). Set {ENVIRONMENT_VARIABLE}=0 or the backend option "
        "fallback=False to make this an error.",
        IoUringFallbackWarning,
        stacklevel=4,
    )


def blocked() -> IoUringUnavailableError | None:
    """The error that keeps this process from using io_uring at all, if any (probed once).

    Asked by the pytest plugin's runner, which must choose before it creates a loop.  The answer
    is remembered once a ring was set up or a policy error (:data:`FALLBACK_ERRNOS`) seen: a
    seccomp filter cannot be lifted from a running process.  Resource errors are transient and
    answer ``None`` without being remembered (the run that needs the ring then reports them).
    """
    global _probed, _blocked
    if _probed:
        return _blocked
    from ._ring import Ring, RingOptions

    try:
        Ring(RingOptions(entries=2)).close()
    except IoUringUnavailableError as exc:
        if exc.errno not in FALLBACK_ERRNOS:
            return None
        _blocked = exc
    _probed = True
    return _blocked


def trio_clock(clock: Clock | None) -> object | None:
    """The ``clock`` for ``trio.run`` standing for one of ours.

    A :class:`MockClock` becomes a ``trio.testing.MockClock`` at the same time with the same
    autojump threshold (trio autojumps only its own class); another clock is passed as it is
    (trio's clock protocol is the same three methods).
    """
    if clock is None or type(clock) is SystemClock:
        return None
    if isinstance(clock, MockClock):
        import trio.testing

        twin = trio.testing.MockClock(autojump_threshold=clock.autojump_threshold)
        twin.jump(clock.current_time())
        return twin
    return clock


def _trio_options(clock: Clock | None) -> dict[str, Any]:
    twin = trio_clock(clock)
    return {} if twin is None else {"clock": twin}


def run_on_trio(
    func: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    exc: IoUringUnavailableError,
    clock: Clock | None = None,
) -> T:
    """Run ``func(*args)`` with anyio's trio backend, after the one warning."""
    from anyio._backends._trio import backend_class

    _warn_once(exc)
    old, GLOBAL.fallback = GLOBAL.fallback, str(exc)
    try:
        result: T = backend_class.run(func, args, {}, _trio_options(clock))
        return result
    finally:
        GLOBAL.fallback = old


def trio_test_runner(exc: IoUringUnavailableError, clock: Clock | None) -> anyio.abc.TestRunner:
    """anyio's trio test runner, for the pytest plugin when io_uring is blocked."""
    from anyio._backends._trio import backend_class

    _warn_once(exc)
    return backend_class.create_test_runner(_trio_options(clock))
