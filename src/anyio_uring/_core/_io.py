"""The I/O seam: everything the run loop knows about I/O (trio's I/O manager, four methods).

The runner never calls the ring's blocking wait itself.  It asks :class:`IOManager` to

* :meth:`~IOManager.get_events` -- submit what tasks queued, wait until a completion or the
  timeout, and route every CQE to its operation (whose callback reschedules its task);
* :meth:`~IOManager.drain` -- at shutdown, end one of the loop's own operations (the entry
  queue's or the signal pipe's watcher) and reap until its final CQE;
* :meth:`~IOManager.abandon_orphans` -- at shutdown, give up operations nobody waits for, so an
  fd they return is closed rather than leaked;
* :meth:`~IOManager.close` -- cancel and drain everything still in flight, then close the ring.

Tasks queue operations on ``Runner.ring`` directly (the ring layer is the API for building
them) and wait for them through ``_cancel.wait_operation``, the one bridge from cancellation to
``ASYNC_CANCEL``.  The cross-thread wake-up (trio's ``force_wakeup``) is the entry queue's
eventfd, which the ring watches like any other fd (``_run.EntryQueue``).
"""

from __future__ import annotations

from collections.abc import Callable

from .._ring import Operation, Ring, RingOptions

__all__ = ["IOManager"]


class IOManager:
    """The runner's view of its ring (see the module docstring)."""

    __slots__ = ("get_events", "ring")

    def __init__(self, ring_options: RingOptions | None) -> None:
        self.ring = Ring(ring_options)
        #: ``get_events(timeout)``: submit, wait up to ``timeout`` seconds (``None``: until a
        #: completion; ``0``: do not block) and dispatch every completion; returns how many.
        #: The ring's own method, bound once: the loop calls it every tick, without a frame here.
        self.get_events: Callable[[float | None], int] = self.ring.wait

    def drain(self, op: Operation, step: float = 1.0) -> None:
        """Shutdown only (blocks the loop's thread): cancel ``op`` unless it is done and reap
        until its final CQE, whatever else completes meanwhile."""
        if op.done:
            return
        self.ring.cancel(op)
        while not op.done:
            self.ring.wait(timeout=step)

    def abandon_orphans(self) -> None:
        """No task is left: operations nobody waits for will never be taken (see
        ``Ring.abandon_orphans``)."""
        self.ring.abandon_orphans()

    def close(self) -> None:
        """Cancel every live operation, reap until none is left, close the ring."""
        self.ring.close()
