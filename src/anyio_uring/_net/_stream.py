"""Socket streams (TCP and UNIX): ``receive`` by the loop's receive strategy (see ``_pool``),
``send`` of everything, ``send_eof``, and SCM_RIGHTS on UNIX streams."""

from __future__ import annotations

import array
import errno
import os
import select
import socket
import struct
from collections.abc import Collection
from io import IOBase
from typing import Final

import anyio
import anyio.abc

from .._core import (
    cancel_pending,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    current_runner,
)
from .._core._cancel import MultishotFeed
from .._native import lib
from .._ring import MsgHdr, Operation, ProvidedBufferRing
from ._pool import (
    HYBRID_POLL_FROM,
    PICK_ANY_ABOVE,
    SIZER_SMALL,
    SIZER_START,
    net_state,
    size_pick,
    size_record,
)
from ._socket import RingSocket, broken

__all__ = ["SocketStream", "UNIXSocketStream"]

_F_BUFFER: Final[int] = lib.AUR_CQE_F_BUFFER
_F_SOCK_NONEMPTY: Final[int] = lib.AUR_CQE_F_SOCK_NONEMPTY
_BUFFER_SHIFT: Final[int] = lib.AUR_CQE_BUFFER_SHIFT
_ENOBUFS: Final = -errno.ENOBUFS
_NOSIGNAL: Final = socket.MSG_NOSIGNAL
_SEND_FLAGS: Final = socket.MSG_NOSIGNAL | socket.MSG_WAITALL
_POLLIN: Final = select.POLLIN
_AF_UNIX: Final = socket.AF_UNIX
_OWNED_SIZE: Final = 65536
_POLL: Final = "poll"
_OWNED: Final = "owned"
_HYBRID: Final = "hybrid"
_SELECT: Final = "select"
#: The "multishot" strategy: its size class (4 KiB), and how many untaken results (of at most
#: 4 KiB each) a stream holds before its multishot pauses and the socket buffer holds the rest.
_MULTISHOT_CLASS: Final = 1
_MULTISHOT_QUEUE: Final = 16
_CMSG_HDR: Final = struct.Struct("=Qii")  # struct cmsghdr on LP64 Linux: len, level, type
_CMSG_ALIGN: Final = 8


def _cmsg_space(n: int) -> int:
    return _CMSG_HDR.size + (n + _CMSG_ALIGN - 1) // _CMSG_ALIGN * _CMSG_ALIGN


def _ignore(item: object) -> None:
    """Untaken bytes of a closed feed: nothing to release."""


def _copy_out(op: Operation, res: int, flags: int) -> bytes:
    """A multishot receive's CQE as bytes, its provided buffer given back at once."""
    if flags & _F_BUFFER:
        buffers = op.buffers
        assert buffers is not None
        data: bytes = buffers.take(res, flags)
        return data
    return b""  # res == 0: the end of the stream


def _byte_view(item: object) -> memoryview:
    view = memoryview(item)  # type: ignore[arg-type]  # raises TypeError for non-buffers
    if view.itemsize != 1 or view.ndim != 1:
        view = view.cast("B")
    return view


class SocketStream(RingSocket, anyio.abc.SocketStream):
    """A connected stream socket (TCP, or the base of :class:`UNIXSocketStream`)."""

    #: Whether the stream may switch to a multishot receive (see ``_pool``), which keeps reading
    #: the socket between ``receive()`` calls.  Never for an AF_UNIX socket, whatever its class
    #: (``SocketStream.from_socket`` wraps one in this class): a multishot kept armed between a
    #: ``receive()`` and a ``receive_fds()`` would take the message the latter waits for, and
    #: drop its descriptors.  Decided once, in ``__init__`` (an instance attribute only there).
    _multishot_ok: bool = True

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        state = net_state(current_runner())
        self._strategy = state.strategy
        self._pool = state.pool
        self._size = SIZER_START  # see _pool.size_pick
        self._receiving = False
        self._sending = False
        self._owned: bytearray | None = None
        #: The last receive left data in the socket: try a non-blocking recv first.
        self._more = False
        #: The stream's multishot receive, made when it switches to one (see ``_pool``).
        self._feed: MultishotFeed | None = None
        if sock.family == _AF_UNIX:
            self._multishot_ok = False

    # -- receiving ------------------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Receive up to ``max_bytes`` (by the loop's strategy; see ``_pool``).

        The ``"select"`` strategy (and the select half of ``"hybrid"`` and ``"multishot"``) is
        inlined here rather than a coroutine of its own: a receive waiting on an idle connection
        holds every frame of its call chain, and each one is memory per connection.  A stream
        that switched to a multishot receive (``_receive_multishot``) reads nothing else while
        its feed holds bytes or an operation, so no byte is reordered.
        """
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._closed or self._sock.fileno() < 0:  # self._check(), its test inlined
            self._check()
        self._receiving = True
        try:
            if self._more:
                inline = await self._receive_inline(max_bytes)
                if inline is not None:
                    return inline
            strategy = self._strategy
            if strategy is _POLL:
                data = await self._receive_poll(max_bytes)
            elif strategy is _OWNED:
                data = await self._receive_owned(max_bytes)
            else:
                data = None
                if self._feed is not None:
                    data = await self._receive_multishot(max_bytes)
                if data is None:
                    state = self._size
                    index = state % SIZER_SMALL if max_bytes > PICK_ANY_ABOVE else size_pick(state, max_bytes)
                    if index >= HYBRID_POLL_FROM and strategy is not _SELECT:
                        # A large class: poll-then-recv copies once (socket -> bytes) where a provided
                        # buffer copies twice (socket -> buffer -> bytes); see _pool, "hybrid".
                        data = await self._receive_poll(max_bytes)
                        if data:
                            self._size = size_record(self._size, index, len(data))
                            self._pool.hybrid_polls += 1
                    else:
                        # RECV with IOSQE_BUFFER_SELECT: the kernel picks a buffer only once data arrives.
                        groups = self._pool._groups
                        while True:
                            group = groups[index] or self._pool.group(index)
                            if group is None:
                                data = await self._receive_poll(max_bytes)
                                break
                            op = self._ring.recv_select(
                                self._fd, group, max_bytes if max_bytes < group.size else 0
                            )
                            try:
                                res = await self._inflight.wait(op)
                            except BaseException:
                                if op.cqe_flags is not None and op.cqe_flags & _F_BUFFER:
                                    group.recycle(op.cqe_flags >> _BUFFER_SHIFT)  # cancelled, with a buffer
                                raise
                            flags = op.cqe_flags or 0
                            data = b""
                            if flags & _F_BUFFER:
                                if res >= 0:
                                    data = group.take(res, flags)
                                else:
                                    group.recycle(flags >> _BUFFER_SHIFT)
                            if self._inflight.closing:
                                raise anyio.ClosedResourceError
                            if res > 0:
                                self._size = size_record(self._size, index, res)
                                if flags & _F_SOCK_NONEMPTY:
                                    self._more = True
                                elif (
                                    self._ring.reaped >= self._pool.multishot_from
                                    and self._feed is None
                                    and self._multishot_ok
                                ):
                                    # Data on a busy loop: from the next receive on, one multishot
                                    # RECV serves this stream (no SQE, no operation per message).
                                    self._feed = MultishotFeed(_ignore, _MULTISHOT_QUEUE, _copy_out)
                                    self._pool.multishot_streams += 1
                                break
                            if res == 0:
                                break
                            if res != _ENOBUFS:
                                broken(res)
                            # Back-pressure, not the end: the data waits in the socket.  Grow the
                            # group, or receive this once another way.
                            if not self._pool.grow(group):
                                data = await self._receive_poll(max_bytes)
                                break
                            self._check()
        finally:
            self._receiving = False
        if not data:
            raise anyio.EndOfStream
        return data

    async def _receive_multishot(self, max_bytes: int) -> bytes | None:
        """One multishot ``RECV`` (buffer select, 4 KiB class) per stream, armed by a receive and
        kept armed: each CQE is copied out at once and its buffer given back (the pool is never
        held by a stream that stops reading), the bytes wait in the stream's feed until a receive
        takes them.  After :data:`_MULTISHOT_QUEUE` untaken results the operation is cancelled
        (the socket buffer holds the rest) and re-armed by the next receive that empties the
        feed.  Once the stream's size class is large (its receives fill 16 KiB) the operation
        is ended too, and when the feed is empty this returns ``None``: the caller receives by
        ``_receive_select`` (poll-then-recv) until the class is small again.  Nothing else reads
        the socket while the feed holds bytes or an operation (no reordering)."""
        feed = self._feed
        assert feed is not None
        while True:
            item = await feed.get(self._arm_multishot)
            if item is None:
                return None  # declined: a large class, or no group
            if self._inflight.closing or feed.closing:
                raise anyio.ClosedResourceError
            if type(item) is bytes:
                if item and len(item) < max_bytes and feed.queued_items():
                    # coalesce what else waits (up to max_bytes): one receive, not one per CQE
                    parts = [item]
                    size = len(item)
                    while size < max_bytes and feed.queued_items():
                        more = feed.take_queued()
                        if not more:  # the end of the stream: after these bytes
                            feed.unget(more)
                            break
                        parts.append(more)
                        size += len(more)
                    item = b"".join(parts)
                if len(item) > max_bytes:
                    feed.unget(item[max_bytes:])
                    item = item[:max_bytes]
                if item:
                    state = self._size = size_record(self._size, _MULTISHOT_CLASS, len(item))
                    if state % SIZER_SMALL >= HYBRID_POLL_FROM and feed.armed:
                        feed.pause()  # large reads: poll-then-recv from here (one copy)
                        self._pool.multishot_pauses += 1
                return item
            if item == _ENOBUFS:
                group = self._multishot_group()
                if group is None or not self._pool.grow(group):
                    return await self._receive_poll(max_bytes)
                continue
            broken(item)

    def _multishot_group(self) -> ProvidedBufferRing | None:
        return self._pool._groups[_MULTISHOT_CLASS] or self._pool.group(_MULTISHOT_CLASS)

    def _arm_multishot(self) -> Operation | None:
        """The feed's operation, or ``None`` (a large size class, or no group: read otherwise)."""
        if self._size % SIZER_SMALL >= HYBRID_POLL_FROM:
            return None
        group = self._multishot_group()
        if group is None:
            return None
        return self._ring.recv_select(self._fd, group, 0, multishot=True)

    async def _end_all(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        await self._inflight.end_all()

    def __del__(self) -> None:
        # Dropped without aclose(): an armed multishot receive would outlive the stream; end it.
        feed = self.__dict__.get("_feed")
        if feed is not None:
            feed.abandon()

    async def _receive_inline(self, max_bytes: int) -> bytes | None:
        """The kernel said more data waits in the socket (``IORING_CQE_F_SOCK_NONEMPTY``, or a
        receive filled its ``max_bytes``): take it with a non-blocking ``recv`` -- one copy, no
        ring round trip -- as trio does: a cancel point before anything is taken, a schedule
        point (never a cancel point) after.  ``None``: nothing there after all."""
        if cancel_pending():
            await checkpoint_if_cancelled()
        try:
            data = self._sock.recv(max_bytes)
        except BlockingIOError:
            self._more = False
            return None
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        self._more = len(data) == max_bytes
        await cancel_shielded_checkpoint()
        if not data:
            raise anyio.EndOfStream
        return data

    async def _receive_poll(self, max_bytes: int) -> bytes:
        """Netty's poll-then-recv: POLL_ADD, then a non-blocking recv into fresh memory."""
        while True:
            res = await self._inflight.wait(self._ring.poll_add(self._fd, _POLLIN))
            if self._inflight.closing:
                raise anyio.ClosedResourceError
            if res < 0:
                broken(res)
            try:
                data = self._sock.recv(max_bytes)
                self._more = len(data) == max_bytes
                return data
            except BlockingIOError:
                continue  # woken without data (another reader of the fd took it)
            except OSError as exc:
                raise anyio.BrokenResourceError from exc

    async def _receive_owned(self, max_bytes: int) -> bytes:
        """RECV into this stream's own buffer (pinned while the receive waits)."""
        buf = self._owned
        if buf is None:
            buf = self._owned = bytearray(_OWNED_SIZE)
        view = memoryview(buf)
        try:
            op = self._ring.recv(self._fd, view[: min(max_bytes, _OWNED_SIZE)])
            res = await self._inflight.wait(op)
            if self._inflight.closing:
                raise anyio.ClosedResourceError
            if res < 0:
                broken(res)
            if op.cqe_flags and op.cqe_flags & _F_SOCK_NONEMPTY:
                self._more = True
            return bytes(view[:res])
        finally:
            view.release()

    # -- sending --------------------------------------------------------------------------

    async def send(self, item: bytes) -> None:
        """Send all of ``item``.  As trio does: a cancel point before anything is sent, then a
        non-blocking send of what the socket buffer takes at once, then ring ``SEND`` operations for the
        rest (the bytes stay pinned until each one's final CQE)."""
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        if self._closed or self._sock.fileno() < 0:  # self._check(), its test inlined
            self._check()
        # bytes (what receive() returns, and most callers send) need no view until a short send
        view = item if type(item) is bytes else _byte_view(item)
        self._sending = True
        try:
            if cancel_pending():
                await checkpoint_if_cancelled()
            try:
                sent = self._sock.send(view, _NOSIGNAL)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if sent >= len(view):
                await cancel_shielded_checkpoint()
                return
            view = memoryview(view)[sent:]
            while True:
                res = await self._inflight.wait(self._ring.send(self._fd, view, _SEND_FLAGS))
                if self._inflight.closing:
                    raise anyio.ClosedResourceError
                if res < 0:
                    broken(res)
                if res >= len(view):
                    return
                view = view[res:]  # a short send (interrupted): send the rest
                self._check()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._check()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # the peer is gone already: nothing to end
                raise anyio.BrokenResourceError from exc
        await checkpoint()


class UNIXSocketStream(SocketStream, anyio.abc.UNIXSocketStream):
    """A connected UNIX stream (or seqpacket) socket, with file descriptor passing."""

    async def send_fds(self, message: bytes, fds: Collection[int | IOBase]) -> None:
        if not message:
            raise ValueError("message must not be empty")
        if not fds:
            raise ValueError("fds must not be empty")
        filenos = array.array("i", (fd if isinstance(fd, int) else fd.fileno() for fd in fds))
        data = filenos.tobytes()
        control = _CMSG_HDR.pack(_CMSG_HDR.size + len(data), socket.SOL_SOCKET, socket.SCM_RIGHTS) + data
        control += bytes(_cmsg_space(len(data)) - len(control))
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        self._check()
        view = _byte_view(message)
        self._sending = True
        try:
            while view:
                msg = MsgHdr([view], control=control) if control else MsgHdr([view])
                res = await self._inflight.wait(self._ring.sendmsg(self._fd, msg, socket.MSG_NOSIGNAL))
                if self._inflight.closing:
                    raise anyio.ClosedResourceError
                if res < 0:
                    broken(res)
                view = view[res:]
                control = b""  # the descriptors went with the first bytes
        finally:
            self._sending = False

    async def receive_fds(self, msglen: int, maxfds: int) -> tuple[bytes, list[int]]:
        if not isinstance(msglen, int) or msglen < 0:
            raise ValueError("msglen must be a non-negative integer")
        if not isinstance(maxfds, int) or maxfds < 1:
            raise ValueError("maxfds must be a positive integer")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._check()
        buf = bytearray(msglen)
        msg = MsgHdr([buf], writable=True, control_capacity=_cmsg_space(maxfds * 4))
        self._receiving = True
        try:
            res = await self._inflight.wait(self._ring.recvmsg(self._fd, msg, socket.MSG_CMSG_CLOEXEC))
        finally:
            self._receiving = False
        fds, unexpected = _parse_rights(msg.control()) if res >= 0 else ([], None)
        if self._inflight.closing:
            _close_all(fds)
            raise anyio.ClosedResourceError
        if res < 0:
            broken(res)
        if unexpected is not None:
            _close_all(fds)
            raise RuntimeError(
                f"Received unexpected ancillary data; message = {bytes(buf[:res])!r}, {unexpected}"
            )
        if res == 0 and not fds:
            raise anyio.EndOfStream
        return bytes(buf[:res]), fds


def _parse_rights(control: bytes) -> tuple[list[int], str | None]:
    """The fds of the SCM_RIGHTS messages in ``control``, and a description of anything else."""
    fds = array.array("i")
    unexpected = None
    offset = 0
    while offset + _CMSG_HDR.size <= len(control):
        length, level, kind = _CMSG_HDR.unpack_from(control, offset)
        if length < _CMSG_HDR.size:
            break
        data = control[offset + _CMSG_HDR.size : offset + length]
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        else:
            unexpected = f"cmsg_level = {level}, cmsg_type = {kind}"
        offset += _cmsg_space(length - _CMSG_HDR.size)
    return list(fds), unexpected


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
