"""Exceptions of the ring layer and runtime.

Every error the package raises on purpose is one of these or a standard ``OSError`` built from a
completion's ``-errno``.
"""

from __future__ import annotations

__all__ = [
    "ForkedRingError",
    "IoUringUnavailableError",
    "RingClosedError",
    "UringInternalError",
]


class UringInternalError(Exception):
    """A bug in anyio_uring itself (an impossible state transition, a broken invariant).

    Never raised for misuse: please report it with the traceback.
    """


class IoUringUnavailableError(OSError):
    """io_uring cannot be used in this process.

    The message names the cause (old kernel, seccomp profile, ``kernel.io_uring_disabled``,
    resource limits) and the remedy; ``errno`` is the error ``io_uring_setup`` returned.
    """


class RingClosedError(RuntimeError):
    """An operation was queued on a ring that has been closed."""


class ForkedRingError(RingClosedError):
    """A ring was used in a child process after ``fork()``.

    The ring's memory is shared with the parent; the child must create its own event loop.
    """
