"""anyio_uring: an io_uring-native async runtime with trio's semantics.

``anyio_uring.run(main)`` runs a program on the runtime directly; the anyio backend ``"uring"``
(``anyio.run(main, backend="uring")``) is built on the same runtime.
"""

from typing import TYPE_CHECKING, Any

from ._compat import CompatWarning
from ._core import (
    Abort,
    Cancelled,
    MockClock,
    Runner,
    Task,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    current_time,
    sleep,
    sleep_forever,
    sleep_until,
    wait_all_tasks_blocked,
    wait_task_rescheduled,
)
from ._core._cancel import (
    CancelScope,
    current_effective_deadline,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
    wait_operation,
)
from ._core._taskgroup import Nursery, TaskStatus, open_nursery
from ._entry import run
from ._errors import ForkedRingError, IoUringUnavailableError, RingClosedError, UringInternalError
from ._fallback import IoUringFallbackWarning
from ._registration import register
from ._ring import RingOptions
from ._version import __version__

__all__ = [
    "Abort",
    "CancelScope",
    "Cancelled",
    "CompatWarning",
    "ForkedRingError",
    "IoUringFallbackWarning",
    "IoUringUnavailableError",
    "MockClock",
    "Nursery",
    "Path",
    "RingClosedError",
    "RingOptions",
    "Runner",
    "Task",
    "TaskStatus",
    "UringInternalError",
    "__version__",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "checkpoint_if_cancelled",
    "current_effective_deadline",
    "current_task",
    "current_time",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "open_file",
    "open_nursery",
    "register",
    "run",
    "sleep",
    "sleep_forever",
    "sleep_until",
    "wait_all_tasks_blocked",
    "wait_operation",
    "wait_task_rescheduled",
]

if TYPE_CHECKING:
    from ._fs import Path, open_file


def __getattr__(name: str) -> Any:
    # Files and paths subclass anyio's classes: import them (and anyio) on first use only.
    if name not in ("open_file", "Path"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"{__name__}._fs")
    value = getattr(module, name)
    globals()[name] = value  # later look-ups do not come here
    return value


# Make the anyio backend "uring" known (see _registration.py); does not import anyio.
register(import_anyio=False)
