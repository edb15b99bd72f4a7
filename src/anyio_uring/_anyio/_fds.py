"""``wait_readable`` / ``wait_writable`` / ``notify_closing`` for raw file descriptors."""

from __future__ import annotations

import os
import select
import weakref
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._core import Runner, current_runner
from .._core._cancel import InFlight

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike


#: Per runner: (fd, poll events) -> the in-flight record of the one task allowed to wait for it.
_fd_waits: weakref.WeakKeyDictionary[Runner, dict[tuple[int, int], InFlight]] = weakref.WeakKeyDictionary()


def _fileno(obj: FileDescriptorLike) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


async def wait_fd(obj: FileDescriptorLike, events: int, what: str) -> None:
    """Wait (``POLL_ADD``) until ``obj`` is ready for ``events``; ``ClosedResourceError`` if
    :func:`notify_closing` is called meanwhile."""
    fd = _fileno(obj)
    runner = current_runner()
    waits = _fd_waits.setdefault(runner, {})
    key = (fd, events)
    if key in waits:
        raise anyio.BusyResourceError(what)
    inflight = waits[key] = InFlight()
    try:
        result = await inflight.wait(runner.ring.poll_add(fd, events))
    finally:
        del waits[key]
    if inflight.closing:
        raise anyio.ClosedResourceError
    if result < 0:
        raise OSError(-result, os.strerror(-result))


def notify_closing(obj: FileDescriptorLike) -> None:
    """End the waits on ``obj`` (their tasks raise ``ClosedResourceError``)."""
    fd = _fileno(obj)
    waits = _fd_waits.get(current_runner())
    if not waits:
        return
    for events in (select.POLLIN, select.POLLOUT):
        inflight = waits.get((fd, events))
        if inflight is not None:
            inflight.end()
