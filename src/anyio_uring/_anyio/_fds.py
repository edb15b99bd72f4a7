"""``wait_readable`` / ``wait_writable`` / ``notify_closing`` for raw file descriptors."""

from __future__ import annotations

import os
import select
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._core import Runner, current_runner
from .._core._cancel import wait_operation

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike


class _FdWait:
    """One task waiting (``POLL_ADD``) for one fd and direction; ``closed`` is set by
    ``notify_closing``."""

    __slots__ = ("closed", "op")

    def __init__(self, op: Any) -> None:
        self.op = op
        self.closed = False


#: Per runner: (fd, poll events) -> the one task allowed to wait for it.
_fd_waits: weakref.WeakKeyDictionary[Runner, dict[tuple[int, int], _FdWait]] = weakref.WeakKeyDictionary()


def _fileno(obj: FileDescriptorLike) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


async def wait_fd(obj: FileDescriptorLike, events: int, what: str) -> None:
    fd = _fileno(obj)
    runner = current_runner()
    waits = _fd_waits.setdefault(runner, {})
    key = (fd, events)
    if key in waits:
        raise anyio.BusyResourceError(what)
    op = runner.ring.poll_add(fd, events)
    wait = waits[key] = _FdWait(op)
    try:
        result = await wait_operation(op)
    finally:
        del waits[key]
    if wait.closed:
        raise anyio.ClosedResourceError
    if result < 0:
        raise OSError(-result, os.strerror(-result))


def notify_closing(obj: FileDescriptorLike) -> None:
    fd = _fileno(obj)
    waits = _fd_waits.get(current_runner())
    if not waits:
        return
    for events in (select.POLLIN, select.POLLOUT):
        wait = waits.get((fd, events))
        if wait is None or wait.closed:
            continue
        wait.closed = True
        op = wait.op
        callback = op.callback
        if op.ring.cancel(op) and callback is not None:
            # Withdrawn before the kernel saw it: the ring will not call back, so we do (the
            # operation is done with -ECANCELED); otherwise its final CQE wakes the waiter.
            callback(op)
