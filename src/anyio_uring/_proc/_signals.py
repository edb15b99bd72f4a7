"""Receiving operating-system signals: ``open_signal_receiver``.

Theory of operation
-------------------
CPython's C-level signal handler writes the signal number into the fd registered with
``signal.set_wakeup_fd`` -- for every signal that has a *Python* handler -- before any Python code
runs.  The runner owns that fd (``_SignalWakeup``: a pipe whose read end the ring watches with
``POLL_ADD``), so a signal wakes the loop even while it is blocked in ``io_uring_enter``, and the
numbers reach the wakeup's ``listeners`` in arrival order, from inside the loop.

A receiver therefore installs a do-nothing Python handler for each of its signals (that is what
makes CPython write the number) and registers a listener that queues the numbers it owns.
"Owns" means: its handler is the one installed for that signal right now -- so when receivers
for the same signal are nested, the innermost gets it, and the outer one again after the inner
one exits and restores the previous handler.

As in trio, the pending signals form an ordered set: a signal that arrives while it is already
pending is not added again (it is reported once; the kernel merges a standard signal that is
pending at its level too), and one that arrives after it was read is pending again.  When the
``with`` block exits, signals that were caught but not read yet -- the pending ones, and those
still in the wake-up pipe, not yet seen by the loop -- are re-delivered (``signal.raise_signal``)
to the restored handlers, in order, so that none is lost to an exiting receiver.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._core._run import Runner, _SignalWakeup, checkpoint, current_runner
from .._core._sync import ParkingLot

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SignalReceiver", "open_signal_receiver"]


class SignalReceiver:
    """A context manager and async iterator of :class:`signal.Signals` (see
    :func:`open_signal_receiver`)."""

    def __init__(self, runner: Runner, signals: tuple[signal.Signals, ...]) -> None:
        self._runner = runner
        self._signals = frozenset(signals)
        #: The pending signals, in arrival order (a dict used as an ordered set).
        self._pending: dict[signal.Signals, None] = {}
        self._lot = ParkingLot()
        self._previous: dict[signal.Signals, Any] = {}
        self._wakeup: _SignalWakeup | None = None
        self._restore_wakeup: Callable[[], None] | None = None
        self._state = "new"  # -> "open" -> "closed"
        # One bound-method object, so that getsignal() can be compared by identity.
        self._handler = self._on_python_handler

    def __repr__(self) -> str:
        names = ", ".join(sorted(sig.name for sig in self._signals))
        return f"<{type(self).__name__} [{names}] {self._state}>"

    def _on_python_handler(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler: delivery happens through the wakeup fd, nothing to do."""

    def _on_signal(self, signum: int) -> None:
        """Listener of the runner's ``_SignalWakeup`` (called in the loop, in arrival order)."""
        if signum in self._signals and signal.getsignal(signum) is self._handler:
            self._pending[signal.Signals(signum)] = None  # already pending: stays where it is
            self._lot.unpark()

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a signal receiver can be entered only once")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "open_signal_receiver() must be used in the main thread: Python runs signal "
                "handlers only there (this loop runs in another thread)"
            )
        wakeup = self._runner._signal_wakeup
        if wakeup is None:  # the runner was started with install_signal_handlers=False
            wakeup = self._runner._signal_wakeup = _SignalWakeup(self._runner)
        self._restore_wakeup = wakeup.install()
        self._wakeup = wakeup
        wakeup.listeners.append(self._on_signal)
        self._state = "open"
        try:
            for sig in sorted(self._signals):
                self._previous[sig] = signal.signal(sig, self._handler)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._state == "closed":
            return
        if self._wakeup is not None and self._state == "open":
            _dispatch_unread(self._wakeup)  # signals caught but not seen by the loop yet
        self._state = "closed"
        restored = set()
        for sig, previous in self._previous.items():
            if previous is not None:  # None: installed from C, cannot be restored from Python
                signal.signal(sig, previous)
                restored.add(sig)
        self._previous.clear()
        if self._wakeup is not None:
            try:
                self._wakeup.listeners.remove(self._on_signal)
            except ValueError:  # pragma: no cover - removed already
                pass
        if self._restore_wakeup is not None:
            self._restore_wakeup()
            self._restore_wakeup = None
        self._lot.unpark_all()  # waiters see the receiver closed
        pending = [sig for sig in self._pending if sig in restored]
        self._pending.clear()
        _redeliver(pending)

    # -- async iterator ---------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> signal.Signals:
        """The next signal received (waits for one).

        :raises RuntimeError: if the ``with`` block has been exited (or not entered)
        """
        await checkpoint()
        while not self._pending:
            if self._state != "open":
                raise RuntimeError(
                    "this signal receiver is not active: iterate over it inside its 'with' block"
                )
            await self._lot.park()
        signum = next(iter(self._pending))
        del self._pending[signum]
        return signum


def _dispatch_unread(wakeup: _SignalWakeup) -> None:
    """Hand the signal numbers waiting in the wake-up pipe to its listeners now (the ring's
    ``POLL_ADD`` on the pipe then finds it empty, which the wake-up tolerates)."""
    while True:
        try:
            data = os.read(wakeup.rfd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # pragma: no cover - the write end is never closed while the loop runs
            return
        for signum in data:
            for listener in list(wakeup.listeners):
                listener(signum)


def _redeliver(pending: list[signal.Signals]) -> None:
    """Raise each signal again, in order, for the handler now installed -- all of them even if
    a handler raises (as in trio: the last exception propagates, earlier ones are its context)."""
    if pending:
        try:
            signal.raise_signal(pending[0])
        finally:
            _redeliver(pending[1:])


def open_signal_receiver(*signals: signal.Signals | int) -> SignalReceiver:
    """Receive the given signals while the returned context manager is open::

        with open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                ...

    Handlers are installed on entry and the previous ones restored on exit.  Signals are yielded
    as :class:`signal.Signals`, in arrival order; a signal that arrives again while it is still
    pending (not read yet) is reported once (trio's behaviour).  Signals not read when the block
    exits are re-delivered to the restored handlers.

    :raises RuntimeError: outside a running loop, or in a thread other than the main thread
    :raises ValueError: for a number that is not a signal
    """
    runner = current_runner()
    checked = tuple(signal.Signals(sig) for sig in signals)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "open_signal_receiver() must be used in the main thread: Python runs signal handlers "
            "only there (this loop runs in another thread)"
        )
    return SignalReceiver(runner, checked)
