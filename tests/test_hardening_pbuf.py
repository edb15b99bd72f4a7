"""How Ring._dispatch reports errors raised by completion callbacks (every one of them)."""

from __future__ import annotations

import errno
import struct
import time

import pytest

from anyio_uring._errors import UringInternalError
from anyio_uring._native import ffi, lib
from anyio_uring._ring import Operation, Ring

_CQE = struct.Struct("QiI")


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
