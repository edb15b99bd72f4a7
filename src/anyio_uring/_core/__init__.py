"""The runtime core: tasks, the run loop, traps, timers, clocks, the entry queue."""

from ._clock import Clock, MockClock, SystemClock
from ._run import (
    Cancelled,
    Runner,
    Task,
    cancel_pending,
    checkpoint,
    checkpoint_if_cancelled,
    current_runner,
    current_task,
    current_time,
    reschedule,
    run,
    sleep,
    sleep_forever,
    sleep_until,
    wait_all_tasks_blocked,
)
from ._traps import Abort, cancel_shielded_checkpoint, wait_task_rescheduled

__all__ = [
    "Abort",
    "Cancelled",
    "Clock",
    "MockClock",
    "Runner",
    "SystemClock",
    "Task",
    "cancel_pending",
    "cancel_shielded_checkpoint",
    "checkpoint",
    "checkpoint_if_cancelled",
    "current_runner",
    "current_task",
    "current_time",
    "reschedule",
    "run",
    "sleep",
    "sleep_forever",
    "sleep_until",
    "wait_all_tasks_blocked",
    "wait_task_rescheduled",
]
