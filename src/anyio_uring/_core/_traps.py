"""The only functions that ever yield back to the run loop.

Everything that waits -- sleeping, an io_uring operation, a lock, a thread -- goes through
:func:`wait_task_rescheduled`: the task parks with an *abort callback* and stays parked until
somebody calls ``Runner.reschedule(task, ...)``.  When a cancellation reaches a parked task, the
runner calls ``abort_fn(raise_cancel)``:

* ``Abort.SUCCEEDED``: the wait is undone; the runner reschedules the task with the
  cancellation (``raise_cancel`` is called to produce it);
* ``Abort.FAILED``: the wait cannot be undone yet; the task stays parked and whoever owes the
  reschedule still delivers it (with a result, or by calling ``raise_cancel`` itself).

This is the same contract as trio's ``wait_task_rescheduled``, so code written against it can
run on either scheduler.

A schedule point yields :data:`CHECKPOINT_TRAP` instead: the loop puts the task straight back in
the run queue and resumes it with the task itself, which lets :func:`checkpoint` -- the schedule
point that is also a cancel point, the commonest await there is -- check the task's cancel
status after the schedule point (as trio does) in the same one generator frame, without looking
the task up.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, NoReturn

if TYPE_CHECKING:
    from ._run import Task

__all__ = [
    "CHECKPOINT_TRAP",
    "FAILED",
    "SUCCEEDED",
    "Abort",
    "RaiseCancel",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "wait_task_rescheduled",
]

RaiseCancel = Callable[[], NoReturn]


class Abort(enum.Enum):
    """What an abort callback reports."""

    SUCCEEDED = 1
    FAILED = 2


class _CheckpointTrap:
    """Yielded for a schedule point: reschedule me at once (and resume me with my task), no
    cancellation check."""

    __slots__ = ()


CHECKPOINT_TRAP = _CheckpointTrap()

#: The answers as module constants: on Python 3.11, ``Abort.SUCCEEDED`` is a descriptor lookup
#: through the enum's class (~60 ns); an abort callback runs on every cancellation of a wait.
SUCCEEDED: Final = Abort.SUCCEEDED
FAILED: Final = Abort.FAILED


@types.coroutine
def cancel_shielded_checkpoint() -> Generator[Any, Any, None]:
    """A schedule point that is never a cancel point."""
    yield CHECKPOINT_TRAP


@types.coroutine
def checkpoint() -> Generator[Any, Any, None]:
    """A schedule point and a cancel point: raises the cancellation of an effectively cancelled
    scope around the task, or a pending KeyboardInterrupt in the main task, after the schedule
    point."""
    task: Task = yield CHECKPOINT_TRAP
    status = task._cancel_status
    if status is not None and status.effectively_cancelled:
        raise status.cancelled()
    runner = task._runner
    if runner.ki_pending and task is runner.main_task:
        runner.ki_pending = False
        raise KeyboardInterrupt


@types.coroutine
def wait_task_rescheduled(abort_fn: Callable[[RaiseCancel], Abort]) -> Generator[Any, Any, Any]:
    """Park the current task until it is rescheduled; return the value it is rescheduled with
    (or raise the exception it is rescheduled with)."""
    return (yield abort_fn)
