"""Shared fixtures for the ring-layer tests: rings that are always closed, socket pairs, and a
helper that drives a ring until given operations are done (failing instead of hanging)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from anyio_uring._ring import Operation, Ring
from anyio_uring._ring._probe import RingOptions

Drive = Callable[..., None]


@pytest.fixture
def make_ring() -> Iterator[Callable[..., Ring]]:
    """A factory of rings (keyword arguments go to RingOptions); each is closed at teardown,
    and teardown fails if closing had to leave operations behind."""
    rings: list[Ring] = []

    def make(**kwargs: Any) -> Ring:
        ring = Ring(RingOptions(**kwargs))
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close(drain_timeout=5.0)
        assert ring.inflight == 0
        assert ring.bytes_pinned == 0


@pytest.fixture
def ring(make_ring: Callable[..., Ring]) -> Ring:
    return make_ring()


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def drive() -> Drive:
    """``drive(ring, *ops, timeout=5.0)``: wait on ``ring`` until every op is done."""

    def _drive(ring: Ring, *ops: Operation, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(op.done for op in ops):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"operations not done after {timeout}s: {[op for op in ops if not op.done]}")
            ring.wait(timeout=remaining)

    return _drive
