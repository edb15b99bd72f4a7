"""Where runs start: the compatibility layer goes on, and a blocked io_uring falls back.

Every way into a run -- :func:`run` (``anyio_uring.run``), the backend's ``run`` (``anyio.run(...,
backend="uring")``, blocking portals) and its pytest-plugin test runner -- goes through
:func:`new_runner`: it activates the library adaptations (``_compat``) and creates the runner, or
reports the io_uring error that the caller then either raises or answers by running on trio
(``_fallback``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._compat import activate as _activate_compat
from ._compat import compat_disabled
from ._core import Clock, Runner
from ._errors import IoUringUnavailableError
from ._fallback import falls_back, run_on_trio
from ._ring import RingOptions

__all__ = ["new_runner", "run"]

T = TypeVar("T")


def new_runner(
    clock: Clock | None, ring_options: RingOptions | None, install_signal_handlers: bool
) -> Runner | IoUringUnavailableError:
    """A new runner, or the error that kept io_uring from being set up; activates ``_compat``."""
    _activate_compat()
    try:
        return Runner(clock=clock, ring_options=ring_options, install_signal_handlers=install_signal_handlers)
    except IoUringUnavailableError as exc:
        return exc


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    clock: Clock | None = None,
    ring_options: RingOptions | None = None,
    install_signal_handlers: bool = True,
    compat: bool = True,
    fallback: bool | None = None,
) -> T:
    """Run ``async_fn(*args)`` on a new io_uring loop and return its result.

    Returns only once every task, operation and worker thread the run started has finished --
    except a worker thread whose task abandoned it (``abandon_on_cancel=True``), as in trio.

    ``compat=False`` switches off the adaptations for libraries that accept only the sniffio
    names "asyncio" and "trio" (``anyio_uring._compat``).  Where io_uring is blocked (seccomp,
    ``kernel.io_uring_disabled``, no io_uring in the kernel) the run goes on on trio's loop after
    one :class:`~anyio_uring.IoUringFallbackWarning`, unless ``fallback=False`` or the environment
    variable ``ANYIO_URING_FALLBACK=0`` make it an :class:`~anyio_uring.IoUringUnavailableError`;
    there, ``async_fn`` should use anyio's (or trio's) API (see ``anyio_uring._fallback``).
    """
    runner = new_runner(clock, ring_options, install_signal_handlers)
    if isinstance(runner, IoUringUnavailableError):
        if not falls_back(runner, fallback):
            raise runner
        return run_on_trio(async_fn, args, runner, clock)
    with compat_disabled(not compat):
        return runner.run_and_close(async_fn, *args)
