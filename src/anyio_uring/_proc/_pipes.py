"""Async byte streams over pipe file descriptors, on the ring.

Theory of operation
-------------------
A :class:`PipeReceiveStream` / :class:`PipeSendStream` owns one end of a pipe (any fd that
``read``/``write`` work on, really) and moves bytes with ``IORING_OP_READ`` / ``IORING_OP_WRITE``
at offset -1 (the fd's position: pipes have none), each awaited with
:func:`~anyio_uring.cancel.wait_operation` -- the streams hold no cancellation logic of their own.

No byte is lost to a cancellation (DESIGN.md invariant 3).  A cancelled read either never
happened (its final CQE is ``-ECANCELED``: the bytes are still in the pipe) or it completed with
data: the data is then pushed into the stream's own buffer, and the cancellation is raised by the
checkpoint that follows -- the next ``receive()`` returns those bytes first.

``aclose()`` while another task is inside ``receive()``/``send()``: the close asks the ring to
cancel every operation on the fd (``ASYNC_CANCEL`` by fd, *before* closing it: afterwards the
kernel could not resolve the number), waits -- shielded -- until the other task's operation has
reaped its final CQE, and only then closes the fd.  The other task gets ``ClosedResourceError``
(or, if its read won the race with data, those bytes; the next call raises).

The fds may be blocking (the usual case: pipes made for a child process) or ``O_NONBLOCK``: when a
non-blocking fd answers ``-EAGAIN`` the stream waits for readiness with ``POLL_ADD`` and retries.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Any, Final

from anyio import BrokenResourceError, BusyResourceError, ClosedResourceError, EndOfStream
from anyio.abc import ByteReceiveStream, ByteSendStream

from .._core._cancel import InFlight
from .._core._run import checkpoint, checkpoint_if_cancelled, current_runner
from .._ring import Operation

__all__ = ["PipeReceiveStream", "PipeSendStream"]

#: Upper bound of one read's buffer: the largest pipe the kernel allows by default
#: (/proc/sys/fs/pipe-max-size); a pipe never returns more than it holds.
MAX_READ: Final = 1 << 20
DEFAULT_RECEIVE_SIZE: Final = 65536

# Results that mean "the fd went away under us" when the stream is being closed.
_CLOSED_ERRNOS: Final = frozenset({errno.ECANCELED, errno.EBADF})


class _PipeEnd:
    """What both directions share: the fd, the operation in flight, and closing."""

    _fd: int
    _inflight: InFlight

    def _init_end(self, fd: int) -> None:
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"file descriptor must be a non-negative int, got {fd!r}")
        self._fd = fd
        #: The operation a task is waiting on right now (at most one per stream); closing ends it.
        self._inflight = InFlight()

    @property
    def _closing(self) -> bool:
        return self._inflight.closing

    def fileno(self) -> int:
        """The underlying file descriptor (``-1`` once closed)."""
        return self._fd

    async def _run(self, op: Operation) -> int:
        """Wait for ``op``, recorded as the stream's operation in flight."""
        return await self._inflight.wait(op)

    async def _wait_ready(self, events: int) -> None:
        """For an ``O_NONBLOCK`` fd that answered ``-EAGAIN``: wait until it is ready."""
        res = await self._run(current_runner().ring.poll_add(self._fd, events))
        if res < 0:
            self._raise_for(res)

    def _raise_for(self, res: int) -> None:
        """Translate a negative result into the anyio exception for it."""
        if self._closing and -res in _CLOSED_ERRNOS:
            raise ClosedResourceError
        raise BrokenResourceError from OSError(-res, os.strerror(-res))

    async def _close(self) -> None:
        if self._fd < 0 or self._closing:
            await checkpoint()
            return
        await self._inflight.end_all()  # the waiting task lets go before the fd is closed
        fd, self._fd = self._fd, -1
        os.close(fd)
        await checkpoint()

    def __del__(self) -> None:
        # A stream dropped without aclose(): no operation can be in flight (a waiting task
        # keeps the stream alive), so closing the fd is safe.
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            self._fd = -1
            try:
                os.close(fd)
            except OSError:
                pass


class PipeReceiveStream(_PipeEnd, ByteReceiveStream):
    """The reading end of a pipe as an :class:`anyio.abc.ByteReceiveStream` (takes ownership
    of ``fd``)."""

    def __init__(self, fd: int) -> None:
        self._init_end(fd)
        #: Bytes a cancelled read delivered: returned by the next receive().
        self._pending = bytearray()
        self._buf: bytearray | None = None
        self._receiving = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd}>"

    def _take_pending(self, max_bytes: int) -> bytes:
        data = bytes(self._pending[:max_bytes])
        del self._pending[:max_bytes]
        return data

    async def receive(self, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes:
        """Receive up to ``max_bytes`` bytes (at least one).

        :raises ValueError: if ``max_bytes`` is less than 1
        :raises ~anyio.EndOfStream: if every writer closed the pipe
        :raises ~anyio.ClosedResourceError: if this stream was closed (also when it is closed by
            another task while this one waits)
        :raises ~anyio.BusyResourceError: if another task is already receiving
        :raises ~anyio.BrokenResourceError: if the read failed (the ``OSError`` is the cause)
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._closing or self._fd < 0:
            raise ClosedResourceError
        if self._receiving:
            raise BusyResourceError("reading from")
        self._receiving = True
        try:
            if self._pending:
                await checkpoint()
                return self._take_pending(max_bytes)
            await checkpoint_if_cancelled()
            n = min(max_bytes, MAX_READ)
            buf = self._buf
            if buf is None or len(buf) < n:
                buf = self._buf = bytearray(max(n, min(DEFAULT_RECEIVE_SIZE, MAX_READ)))
            view = memoryview(buf)[:n]
            while True:
                # A closing stream is checked before each new operation (after a wait too).
                if self._closing:
                    raise ClosedResourceError
                res = await self._run(current_runner().ring.read(self._fd, view, -1))
                if res == -errno.EAGAIN:
                    await self._wait_ready(select.POLLIN)
                    continue
                break
            if res < 0:
                self._raise_for(res)
            if res == 0:
                if self._closing:
                    raise ClosedResourceError
                raise EndOfStream
            data = bytes(view[:res])
            try:
                # Cancelled while the read completed with data: keep the bytes for the next
                # receive() and let the cancellation out here.
                await checkpoint_if_cancelled()
            except BaseException:
                self._pending[:0] = data
                raise
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close the fd; a task waiting in :meth:`receive` gets ``ClosedResourceError``."""
        await self._close()


class PipeSendStream(_PipeEnd, ByteSendStream):
    """The writing end of a pipe as an :class:`anyio.abc.ByteSendStream` (takes ownership of
    ``fd``)."""

    def __init__(self, fd: int) -> None:
        self._init_end(fd)
        self._sending = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd}>"

    async def send(self, item: bytes) -> None:
        """Write all of ``item``.  If cancelled part-way, a prefix of ``item`` may have been
        written (as with any stream).

        :raises ~anyio.BrokenResourceError: if the reading end is closed (``EPIPE``) or the
            write failed
        :raises ~anyio.ClosedResourceError: if this stream was closed
        :raises ~anyio.BusyResourceError: if another task is already sending
        """
        if self._closing or self._fd < 0:
            raise ClosedResourceError
        if self._sending:
            raise BusyResourceError("writing to")
        self._sending = True
        try:
            view: Any = memoryview(item).cast("B")
            if not view:
                await checkpoint()
                return
            total = 0
            while total < len(view):
                if self._closing:
                    raise ClosedResourceError
                res = await self._run(current_runner().ring.write(self._fd, view[total:], -1))
                if res == -errno.EAGAIN:
                    await self._wait_ready(select.POLLOUT)
                    continue
                if res < 0:
                    self._raise_for(res)
                total += res
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the fd (the reader then sees end-of-file); a task waiting in :meth:`send` gets
        ``ClosedResourceError``."""
        await self._close()
