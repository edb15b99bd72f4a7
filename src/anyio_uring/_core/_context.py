"""Which loop and which task run in this thread, and the cancellation exception.

The leaf of ``_core``: the run loop (``_run.py``) and the cancel tree (``_cancel.py``) both import
it, and it imports neither, so the two do not import each other in a cycle (the loop imports
the cancel tree; the cancel tree names ``Runner``/``Task`` only for type checking).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._run import Runner, Task

__all__ = ["GLOBAL", "Cancelled", "current_runner", "current_task", "current_time"]


class Cancelled(BaseException):
    """Raised inside a task whose enclosing cancel scope was cancelled.

    Like ``trio.Cancelled`` it derives from ``BaseException`` and must not be swallowed: the cancel
    scope that caused it catches it on exit.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Cancelled"


class _RunContext(threading.local):
    runner: Runner | None = None
    task: Task | None = None
    #: Set while this thread runs trio's loop because io_uring is blocked (``_fallback.py``):
    #: the cause, for the error the runtime's own API raises there.
    fallback: str | None = None


def _no_loop(what: str) -> RuntimeError:
    if GLOBAL.fallback is not None:
        return RuntimeError(
            f"{what}: this thread runs trio's loop, the fallback for a blocked io_uring "
            f"({GLOBAL.fallback}); the runtime's own API drives the ring -- use anyio's API (or "
            "trio's), which works on the fallback too"
        )
    return RuntimeError(what)


GLOBAL = _RunContext()


def current_runner() -> Runner:
    runner = GLOBAL.runner
    if runner is None:
        raise _no_loop("must be called from inside anyio_uring.run() (no loop runs in this thread)")
    return runner


def current_task() -> Task:
    task = GLOBAL.task
    if task is None:
        raise _no_loop("must be called from async context inside anyio_uring.run()")
    return task


def current_time() -> float:
    """The current time on the running loop's clock."""
    return current_runner().clock.current_time()
