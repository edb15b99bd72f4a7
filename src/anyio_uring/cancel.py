"""Cancel scopes and the bridge from cancellation to ``IORING_OP_ASYNC_CANCEL`` (public facade).

The implementation lives in the runtime core, ``anyio_uring._core._cancel`` (the cancel tree is
part of the core, as in trio); its module docstring explains the theory of operation.
"""

from ._core._cancel import (
    Cancelled,
    CancelScope,
    CancelStatus,
    InFlight,
    current_effective_deadline,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
    wait_operation,
    wait_owned_fd,
)

__all__ = [
    "CancelScope",
    "CancelStatus",
    "InFlight",
    "Cancelled",
    "current_effective_deadline",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "wait_operation",
    "wait_owned_fd",
]
