"""Provided-buffer rings with incremental consumption (IOU_PBUF_RING_INC), the bookkeeping that
keeps one buffer from being handed out twice, and how Ring._dispatch reports callback errors.

Everything runs against the real kernel on socketpairs (KERNEL-FACTS.md section 3): the kernel
fills an incremental buffer piecewise, advancing its ring entry in place; a completion with
IORING_CQE_F_BUF_MORE leaves the buffer with the kernel, the first one without it uses it up.
Rings are made with use_environment=False where the incremental path is what is tested.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import time
from collections.abc import Callable

import pytest

from anyio_uring._errors import UringInternalError
from anyio_uring._native import ffi, lib
from anyio_uring._ring import Operation, Ring
from anyio_uring._ring._buffers import ProvidedBufferRing
from anyio_uring._ring._probe import FEATURES

Drive = Callable[..., None]
F_BUFFER = lib.AUR_CQE_F_BUFFER
F_MORE = lib.AUR_CQE_F_MORE
F_BUF_MORE = lib.AUR_CQE_F_BUF_MORE
SHIFT = lib.AUR_CQE_BUFFER_SHIFT
_CQE = struct.Struct("QiI")


def inc_ring(make_ring: Callable[..., Ring], disable: frozenset[str] = frozenset()) -> Ring:
    ring = make_ring(disable=disable, use_environment=False)
    if not ring.support.incremental_buffers:  # pragma: no cover - kernels before 6.12
        pytest.skip("the kernel has no incremental provided-buffer rings (IOU_PBUF_RING_INC, 6.12+)")
    return ring


def reap_raw(ring: Ring, n: int, timeout: float = 5.0) -> list[tuple[int, int, int]]:
    """Harvest ``n`` CQEs through the native wait without dispatching them."""
    out = ffi.new("aur_cqe[]", n)
    got: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {n} CQEs within {timeout}s"
        rc = lib.aur_wait(ring._c, 1, int(remaining * 1e9), out, n - len(got))
        assert rc >= 0 or rc == -errno.EINTR, rc
        got += list(_CQE.iter_unpack(bytes(ffi.buffer(out, 16 * max(rc, 0)))))
    return got


def pack(cqes: list[tuple[int, int, int]]) -> bytes:
    return b"".join(_CQE.pack(*cqe) for cqe in cqes)


def entry_len(group: ProvidedBufferRing, position: int) -> int:
    """The len field of the kernel-visible ring entry at ``position`` (what the kernel will use),
    read straight from the shared ring memory (struct io_uring_buf: u64 addr, u32 len, ...)."""
    words = ffi.cast("uint32_t *", group._pbuf.ring)
    return int(words[4 * (position & (group.count - 1)) + 2])


def recv_one(ring: Ring, drive: Drive, fd: int, group: ProvidedBufferRing) -> Operation:
    op = ring.recv_select(fd, group)
    drive(ring, op)
    assert op.result is not None, op
    assert op.result > 0, op
    assert op.cqe_flags is not None
    assert op.cqe_flags & F_BUFFER
    return op


# ============================================================== incremental consumption, single-shot


def test_incremental_pieces_follow_each_other_and_the_buffer_returns_only_when_used_up(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """One 16-byte buffer: 'AAAA' then 12 x 'B' fill it (BUF_MORE, then used up).  While the
    kernel fills it the buffer must not be published again; once used up it goes back with its
    entry reset to the whole buffer, and the next message starts at its beginning."""
    a, b = sockpair
    ring = inc_ring(make_ring)
    group = ProvidedBufferRing(ring, bgid=2, count=1, size=16, incremental=True)
    a.sendall(b"AAAA")
    first = recv_one(ring, drive, b.fileno(), group)
    assert first.result == 4
    assert first.cqe_flags is not None
    assert first.cqe_flags & F_BUF_MORE
    assert group.take(4, first.cqe_flags) == b"AAAA"
    assert entry_len(group, 0) == 12  # the kernel advanced the entry in place; nobody reset it
    assert (group.recycled, group.lent, group.kernel_head()) == (0, 1, 0)  # still the kernel's
    with pytest.raises(RuntimeError, match="no unconsumed completion"):
        group.recycle(0)  # it is being filled: handing it back now would hand it out twice

    a.sendall(b"B" * 12)
    second = recv_one(ring, drive, b.fileno(), group)
    assert second.result == 12
    assert second.cqe_flags is not None
    assert not second.cqe_flags & F_BUF_MORE
    assert second.cqe_flags >> SHIFT == 0
    assert group.take(12, second.cqe_flags) == b"B" * 12
    assert (group.recycled, group.lent, group.kernel_head()) == (1, 1, 1)
    assert entry_len(group, 1) == 16  # the fresh entry covers the whole buffer again

    a.sendall(b"CC")
    third = recv_one(ring, drive, b.fileno(), group)
    assert third.cqe_flags is not None
    assert third.cqe_flags & F_BUF_MORE
    assert group.take(2, third.cqe_flags) == b"CC"
    group.close()


def test_incremental_single_shot_many_small_messages_every_byte(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """300 messages of 1..40 random bytes through two 256-byte incremental buffers, one
    single-shot receive at a time: each buffer holds many messages, every byte arrives intact
    and in order, and buffers go back exactly as often as the kernel used one up."""
    a, b = sockpair
    ring = inc_ring(make_ring)
    group = ProvidedBufferRing(ring, bgid=3, count=2, size=256, incremental=True)
    rng = random.Random(1303)
    used_up = 0
    pieces_per_bid_fill: list[int] = []
    run = 0
    for i in range(300):
        msg = rng.randbytes(rng.randint(1, 40))
        a.sendall(msg)
        got = b""
        while len(got) < len(msg):  # a message can straddle the end of a buffer
            op = recv_one(ring, drive, b.fileno(), group)
            assert op.result is not None
            assert op.cqe_flags is not None
            got += group.take(op.result, op.cqe_flags)
            run += 1
            if not op.cqe_flags & F_BUF_MORE:
                used_up += 1
                pieces_per_bid_fill.append(run)
                run = 0
        assert got == msg, f"message {i}"
    assert group.recycled == used_up == group.kernel_head()
    assert used_up >= 20  # ~6 KiB through 256-byte buffers
    assert max(pieces_per_bid_fill) > 5  # buffers really were shared by many messages
    assert group.lent == 2
    group.close()


# ================================================================ incremental consumption, multishot


@pytest.mark.parametrize(
    "disable", [frozenset(), frozenset({"single_issuer"})], ids=["defer_taskrun", "plain_ring"]
)
def test_incremental_multishot_many_messages_every_byte(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket], disable: frozenset[str]
) -> None:
    """A multishot receive over four 1 KiB incremental buffers takes 24 KiB of small messages
    (every byte checked); a completion for a buffer the kernel does not hold would raise in
    dispatch.  Each used-up buffer goes back once, and only then.  (With and without
    DEFER_TASKRUN: without it the kernel fills buffers whenever this thread leaves a syscall.)"""
    a, b = sockpair
    ring = inc_ring(make_ring, disable)
    group = ProvidedBufferRing(ring, bgid=4, count=4, size=1024, incremental=True)
    received = bytearray()
    log: list[tuple[int, int]] = []

    def on_more(_op: Operation, res: int, flags: int) -> None:
        log.append((res, flags))
        received.extend(group.take(res, flags))

    op = ring.recv_select(b.fileno(), group, multishot=True)
    op.on_more = on_more
    ring.wait(timeout=0)
    rng = random.Random(404)
    sent = bytearray()
    while len(sent) < 24 * 1024:
        batch = b"".join(rng.randbytes(rng.randint(1, 48)) for _ in range(16))  # < one buffer
        a.sendall(batch)
        sent += batch
        deadline = time.monotonic() + 5
        while len(received) < len(sent) and not op.done and time.monotonic() < deadline:
            ring.wait(timeout=0.5)
        assert not op.done, op  # the multishot never ran dry: buffers came back in time
        assert bytes(received) == bytes(sent)
    used_up = sum(1 for _res, flags in log if not flags & F_BUF_MORE)
    assert used_up >= 20
    assert group.recycled == used_up == group.kernel_head()
    assert len(log) > 2 * used_up  # most completions only filled part of a buffer
    ring.cancel(op)
    while not op.done:
        ring.wait(timeout=1)
    assert op.result == -errno.ECANCELED
    group.close()


def test_incremental_multishot_pieces_kept_for_later_are_taken_in_order(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """An on_more that only records (res, flags): the pieces of one buffer are taken later, in
    order; taking them out of order is refused instead of returning another message's bytes."""
    a, b = sockpair
    ring = inc_ring(make_ring)
    group = ProvidedBufferRing(ring, bgid=5, count=2, size=64, incremental=True)
    log: list[tuple[int, int]] = []
    op = ring.recv_select(b.fileno(), group, multishot=True)
    op.on_more = lambda _op, res, flags: log.append((res, flags))
    ring.wait(timeout=0)
    for count, msg in enumerate((b"one", b"three", b"seven"), 1):
        a.sendall(msg)
        deadline = time.monotonic() + 5
        while len(log) < count and time.monotonic() < deadline:
            ring.wait(timeout=0.2)
    assert [res for res, _ in log] == [3, 5, 5]
    assert all(flags >> SHIFT == 0 and flags & F_BUF_MORE for _, flags in log)
    with pytest.raises(ValueError, match="order they were reaped"):
        group.take(*log[1])  # the oldest piece of buffer 0 is "one", not "three"
    assert [group.take(res, flags) for res, flags in log] == [b"one", b"three", b"seven"]
    with pytest.raises(RuntimeError, match="consumed twice"):
        group.take(*log[0])
    assert (group.recycled, group.lent) == (0, 2)
    ring.cancel(op)
    while not op.done:
        ring.wait(timeout=1)
    group.close()


def test_abandoned_incremental_receive_consumes_its_piece(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """A receive nobody waits for any more still moved the kernel's cursor: its piece is
    consumed (not the whole buffer recycled), and the next receive's bytes come from after it."""
    a, b = sockpair
    ring = inc_ring(make_ring)
    group = ProvidedBufferRing(ring, bgid=6, count=2, size=64, incremental=True)
    lost = ring.recv_select(b.fileno(), group)
    lost.abandon()
    a.sendall(b"lost")
    drive(ring, lost)
    assert lost.result == 4
    assert lost.cqe_flags is not None
    assert lost.cqe_flags & F_BUF_MORE
    a.sendall(b"kept")
    kept = recv_one(ring, drive, b.fileno(), group)
    assert kept.cqe_flags is not None
    assert kept.cqe_flags >> SHIFT == 0
    assert group.take(4, kept.cqe_flags) == b"kept"
    assert entry_len(group, 0) == 64 - 8  # both pieces came out of buffer 0, one after the other
    assert (group.recycled, group.lent, group.kernel_head()) == (0, 2, 0)
    group.close()


def test_missing_buf_more_does_not_recycle_a_buffer_the_kernel_still_fills(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Kernels before the 2026 fix left BUF_MORE off some completions that did not use their
    buffer up.  Replaying a real completion with the flag stripped: the kernel's ring entry
    still has room, so the buffer stays the kernel's and the next piece lands behind the first."""
    a, b = sockpair
    ring = inc_ring(make_ring)
    group = ProvidedBufferRing(ring, bgid=7, count=2, size=64, incremental=True)
    op = ring.recv_select(b.fileno(), group)
    ring.submit()
    a.sendall(b"first")
    ((ud, res, flags),) = reap_raw(ring, 1)
    assert (ud, res) == (op.user_data, 5)
    assert flags & F_BUF_MORE
    ring._dispatch(pack([(ud, res, flags & ~F_BUF_MORE)]))
    assert op.done
    assert op.cqe_flags is not None
    assert group.take(5, op.cqe_flags) == b"first"
    assert entry_len(group, 0) == 64 - 5  # not handed back: the kernel is still filling it
    a.sendall(b"second")
    nxt = recv_one(ring, drive, b.fileno(), group)
    assert nxt.cqe_flags is not None
    assert nxt.cqe_flags >> SHIFT == 0
    assert group.take(6, nxt.cqe_flags) == b"second"
    assert entry_len(group, 0) == 64 - 11  # the second piece landed right behind the first
    assert (group.recycled, group.lent, group.kernel_head()) == (0, 2, 0)
    group.close()


def test_incremental_unavailable_raises_a_clear_error(
    make_ring: Callable[..., Ring], drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """'incremental_buffers' is a maskable feature; where it is unavailable, asking for an
    incremental ring says so and why, and plain rings keep working on the same ring."""
    a, b = sockpair
    assert "incremental_buffers" in FEATURES
    on = make_ring(use_environment=False)
    off = make_ring(disable=frozenset({"incremental_buffers"}), use_environment=False)
    assert off.support.buffer_rings
    assert not off.support.incremental_buffers
    no_rings = make_ring(disable=frozenset({"buffer_rings"}), use_environment=False)
    assert not no_rings.support.incremental_buffers
    if on.support.incremental_buffers:
        ProvidedBufferRing(on, bgid=1, count=1, size=8, incremental=True).close()
    with pytest.raises(OSError, match="incremental_buffers' feature is masked") as info:
        ProvidedBufferRing(off, bgid=1, count=1, size=8, incremental=True)
    assert info.value.errno == errno.EOPNOTSUPP
    assert "Linux 6.12" in str(info.value)
    plain = ProvidedBufferRing(off, bgid=1, count=1, size=8)  # bgid 1 was never registered
    a.sendall(b"plain")
    op = recv_one(off, drive, b.fileno(), plain)
    assert op.cqe_flags is not None
    assert plain.take(5, op.cqe_flags) == b"plain"
    plain.close()


# ================================================================================= plain rings


def test_plain_ring_take_or_recycle_twice_is_refused(
    ring: Ring, drive: Drive, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """Giving one buffer back twice would put it in the ring twice: two receives could then
    fill it at once.  Both take() and recycle() refuse a buffer that is the kernel's."""
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=8, count=2, size=16)
    a.sendall(b"once")
    op = recv_one(ring, drive, b.fileno(), group)
    assert op.cqe_flags is not None
    assert group.take(4, op.cqe_flags) == b"once"
    with pytest.raises(RuntimeError, match="taken twice"):
        group.take(4, op.cqe_flags)
    with pytest.raises(RuntimeError, match="recycled twice"):
        group.recycle(op.cqe_flags >> SHIFT)
    with pytest.raises(RuntimeError, match="recycled twice"):
        group.recycle(1)  # never handed out at all
    assert group.recycled == 1
    assert group.lent == 2
    group.close()


def test_plain_ring_multishot_keeps_working(
    ring: Ring, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """The non-incremental ring: one completion per buffer, from its start, every byte intact
    over many more messages than buffers; each buffer goes back once per completion."""
    a, b = sockpair
    group = ProvidedBufferRing(ring, bgid=9, count=2, size=64)
    got: list[tuple[int, bytes]] = []
    op = ring.recv_select(b.fileno(), group, multishot=True)
    op.on_more = lambda _op, res, flags: got.append((flags, group.take(res, flags)))
    ring.wait(timeout=0)
    rng = random.Random(9)
    sent = [rng.randbytes(rng.randint(1, 64)) for _ in range(60)]
    for i, msg in enumerate(sent):
        a.sendall(msg)
        deadline = time.monotonic() + 5
        while len(got) < i + 1 and time.monotonic() < deadline:
            ring.wait(timeout=0.5)
    assert [data for _, data in got] == sent
    assert not any(flags & F_BUF_MORE for flags, _ in got)
    assert group.recycled == 60 == group.kernel_head()
    assert group.lent == 2
    ring.cancel(op)
    while not op.done:
        ring.wait(timeout=1)
    group.close()


def test_completion_for_a_buffer_the_kernel_does_not_hold_is_an_internal_error(ring: Ring) -> None:
    """If the kernel ever named a buffer that is ours (handed out twice), dispatch says so
    loudly -- after the CQE has still been delivered to its operation."""
    group = ProvidedBufferRing(ring, bgid=10, count=2, size=16)
    first, second = ring.nop(), ring.nop()
    first.buffers = second.buffers = group
    ring.submit()
    (c1, c2) = reap_raw(ring, 2)
    ring._dispatch(pack([(c1[0], 3, F_BUFFER | (1 << SHIFT))]))  # buffer 1 is now ours
    assert first.done
    with pytest.raises(UringInternalError) as info:
        ring._dispatch(pack([(c2[0], 3, F_BUFFER | (1 << SHIFT))]))  # ... and named again
    assert second.done
    assert second.result == 3
    cause = info.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert len(cause.exceptions) == 1
    assert isinstance(cause.exceptions[0], UringInternalError)
    assert "handed out twice" in str(cause.exceptions[0])
    group.recycle(1)
    group.close()


# ============================================================= errors raised by completion callbacks


def nops_with_callbacks(ring: Ring, *behaviours: BaseException | None) -> tuple[list[Operation], list[int]]:
    """One NOP per behaviour: its callback raises that exception (or just records it ran)."""
    ran: list[int] = []
    ops = []
    for i, exc in enumerate(behaviours):
        op = ring.nop()

        def callback(_op: Operation, i: int = i, exc: BaseException | None = exc) -> None:
            ran.append(i)
            if exc is not None:
                raise exc

        op.callback = callback
        ops.append(op)
    ring.submit()
    return ops, ran


def test_every_callback_error_of_a_batch_is_reported(ring: Ring) -> None:
    ops, ran = nops_with_callbacks(ring, ValueError("a"), None, TypeError("c"), KeyError("d"))
    batch = reap_raw(ring, 4)
    with pytest.raises(UringInternalError) as info:
        ring._dispatch(pack(batch))
    assert ran == [0, 1, 2, 3]  # every CQE reached its operation
    assert all(op.done for op in ops)
    group = info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [type(e) for e in group.exceptions] == [ValueError, TypeError, KeyError]
    assert [str(e) for e in group.exceptions][:2] == ["a", "c"]
    assert "3 error(s)" in str(info.value)


def test_callback_errors_reported_through_wait(ring: Ring) -> None:
    """The public path: Ring.wait dispatches the batch and raises once for both errors."""
    ops, ran = nops_with_callbacks(ring, RuntimeError("x"), RuntimeError("y"))
    with pytest.raises(UringInternalError) as info:
        ring.wait(timeout=5, min_complete=2)  # both NOPs complete at submit: one batch
    assert all(op.done for op in ops)
    assert sorted(ran) == [0, 1]
    group = info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert sorted(str(e) for e in group.exceptions) == ["x", "y"]


def test_keyboard_interrupt_propagates_as_itself_with_the_other_errors_attached(ring: Ring) -> None:
    _, ran = nops_with_callbacks(ring, ValueError("before"), KeyboardInterrupt(), OSError("after"))
    with pytest.raises(KeyboardInterrupt) as info:
        ring._dispatch(pack(reap_raw(ring, 3)))
    assert ran == [0, 1, 2]
    report = info.value.__cause__
    assert isinstance(report, UringInternalError)
    assert "2 other error" in str(report)
    group = report.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [type(e) for e in group.exceptions] == [ValueError, OSError]


def test_first_system_exit_wins_and_a_second_stop_request_is_kept(ring: Ring) -> None:
    _, ran = nops_with_callbacks(ring, None, SystemExit(3), KeyboardInterrupt())
    with pytest.raises(SystemExit) as info:
        ring._dispatch(pack(reap_raw(ring, 3)))
    assert ran == [0, 1, 2]
    assert info.value.code == 3
    report = info.value.__cause__
    assert isinstance(report, UringInternalError)
    group = report.__cause__
    assert isinstance(group, BaseExceptionGroup)
    assert not isinstance(group, ExceptionGroup)
    assert [type(e) for e in group.exceptions] == [KeyboardInterrupt]


def test_a_lone_keyboard_interrupt_is_unchanged_and_an_existing_cause_is_kept(ring: Ring) -> None:
    nops_with_callbacks(ring, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        ring._dispatch(pack(reap_raw(ring, 1)))
    assert info.value.__cause__ is None
    root = LookupError("root cause")
    ki = KeyboardInterrupt()
    ki.__cause__ = root
    nops_with_callbacks(ring, ki, ValueError("other"))
    with pytest.raises(KeyboardInterrupt) as info:
        ring._dispatch(pack(reap_raw(ring, 2)))
    assert info.value.__cause__ is root
    assert any("ValueError('other')" in note for note in info.value.__notes__)


def test_other_base_exceptions_from_callbacks_are_internal_errors(ring: Ring) -> None:
    """A callback raising GeneratorExit (or trio-style Cancelled) is a bug, not a stop request."""
    nops_with_callbacks(ring, GeneratorExit())
    with pytest.raises(UringInternalError) as info:
        ring._dispatch(pack(reap_raw(ring, 1)))
    group = info.value.__cause__
    assert isinstance(group, BaseExceptionGroup)
    assert [type(e) for e in group.exceptions] == [GeneratorExit]
