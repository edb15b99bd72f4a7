"""Async generator hooks: finalize abandoned async generators inside the loop, as trio does.

Theory of operation
-------------------
Without hooks, an async generator dropped mid-iteration (``async for x in agen(): break``) is
finalized by the garbage collector wherever the last reference dies: Python throws
``GeneratorExit`` into it and steps it *once*, outside any task.  A ``finally`` that awaits
anything then fails ("async generator ignored GeneratorExit") and whatever the generator holds
(a subprocess and its pipes, a file, a lock) leaks.  So, while a :class:`~._run.Runner` runs
(``Runner.run`` and ``Runner.close``), ``sys.set_asyncgen_hooks`` is pointed at this module:

* **firstiter** -- called when a generator is first iterated.  Iterated by one of our tasks, it
  is *ours*: it joins ``alive``, a weak set (the garbage collector still frees it).  Iterated on
  the loop thread outside any task (e.g. in a callback), it is *foreign*: its id is remembered
  and it is handed to the previous hooks.
* **finalizer** -- Python stores the finalizer that was installed at firstiter *in the
  generator*, so this is called for every generator we saw, from whatever thread drops it and
  at any later time (even between two ``Runner.run`` calls).  For one of ours it queues, through
  the thread-safe entry queue, a system task that closes it (``aclose()``) on the loop, and warns
  with a ``ResourceWarning`` (as trio does: use ``aclosing()`` to close it deterministically).  A
  foreign one goes to the previous finalizer, or gets Python's default treatment when there is
  none.
* **end of the run** -- in ``Runner.close``, after every remaining task (all system tasks) has
  been cancelled and has finished, no task is iterating anything: every generator still alive
  is suspended at a ``yield``.  ``alive`` becomes a strong set (no more finalization at random
  GC moments) and the survivors are closed one at a time, in one system task, until none is left
  (closing one may start another); only then is the entry queue stopped and the ring closed.

A generator is always closed inside a cancel scope that is shielded *and* cancelled: its
``finally`` runs in a task, so it may await, but only what is itself shielded (e.g. an anyio
``CancelScope(shield=True)`` around a subprocess's ``aclose()``) -- a plain ``await`` raises
``Cancelled`` there, and nothing can hang the loop's shutdown by accident.  An exception escaping
the generator is logged (logger ``anyio_uring.async_generator_errors``), never raised.

The runner is re-enterable, so the hooks are installed for each ``run()`` (and for ``close()``)
and the previous ones restored when it returns, even after a crash; ``alive`` lasts as long as
the runner, so a generator iterated in one run (e.g. an async-generator test fixture) is closed
at ``close()`` if nobody closed it before, not at the end of the run that started it.
"""

from __future__ import annotations

import logging
import sys
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Runner

__all__ = ["AsyncGenerators"]

ASYNCGEN_LOGGER = logging.getLogger("anyio_uring.async_generator_errors")

AGen = AsyncGenerator[Any, Any]


def asyncgen_name(agen: AGen) -> str:
    """``module.qualname`` of the generator's function (best effort)."""
    qualname = getattr(agen, "__qualname__", None) or type(agen).__qualname__
    frame = getattr(agen, "ag_frame", None)
    module = frame.f_globals.get("__name__") if frame is not None else None
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


class AsyncGenerators:
    """The async generators one runner has seen, and the hooks that track them."""

    def __init__(self, runner: Runner, in_task: Callable[[], bool]) -> None:
        self._runner = runner
        self._in_task = in_task
        #: Our generators not yet finalized: weak while the runner lives, strong (a plain set)
        #: once its end-of-run finalization has begun.
        self.alive: weakref.WeakSet[AGen] | set[AGen] = weakref.WeakSet()
        #: ids of generators first iterated outside our tasks while our hooks were installed.
        #: Each is removed by the generator's finalizer, which runs before the id can be reused
        #: -- except for an exhausted generator (Python skips its finalizer): that stale id is
        #: dropped when one of ours is first iterated at the same address.
        self.foreign: set[int] = set()
        self._shutting_down = False
        self._prev: Any = sys.get_asyncgen_hooks()

    # -- the hooks -------------------------------------------------------------------------

    def install(self) -> Callable[[], None]:
        """Install the hooks for this thread; returns the function that restores the previous
        ones."""
        prev = sys.get_asyncgen_hooks()
        self._prev = prev
        sys.set_asyncgen_hooks(firstiter=self._firstiter, finalizer=self._finalizer)

        def restore() -> None:
            sys.set_asyncgen_hooks(prev.firstiter, prev.finalizer)

        return restore

    def _firstiter(self, agen: AGen) -> None:
        if self._in_task():
            self.alive.add(agen)
            self.foreign.discard(id(agen))  # a stale id: a foreign one exhausted (no finalizer)
            return
        self.foreign.add(id(agen))
        firstiter = self._prev.firstiter
        if firstiter is not None:
            firstiter(agen)

    def _finalizer(self, agen: AGen) -> None:
        try:
            self.foreign.remove(id(agen))
        except KeyError:
            pass
        else:
            finalizer = self._prev.finalizer
            if finalizer is not None:
                finalizer(agen)
            else:
                _close_without_loop(agen)
            return
        name = asyncgen_name(agen)
        try:
            self._runner.entry.run_sync_soon(self._finalize_soon, agen, name)
        except RuntimeError:
            # The runner is finished: every generator it saw was closed in ``close()`` unless
            # its closing failed (e.g. it ignored GeneratorExit).  Nothing can await any more.
            _close_without_loop(agen)
            return
        # Last: under ``-W error`` this raises, and the GC only prints it (already queued).
        warnings.warn(
            f"Async generator {name!r} was garbage collected before it had been exhausted. "
            "Surround its use in 'async with aclosing(...):' to ensure that it gets cleaned up "
            "as soon as you're done using it.",
            ResourceWarning,
            stacklevel=2,
            source=agen,
        )

    # -- finalization on the loop -------------------------------------------------------------

    def _finalize_soon(self, agen: AGen, name: str) -> None:
        """On the loop thread (entry queue): close a generator the GC handed us."""
        if self._shutting_down:
            self.alive.add(agen)  # the end-of-run loop closes it, one at a time with the rest
            return
        try:
            task_name = f"close asyncgen {name} (abandoned)"
            self._runner.spawn_system_task(self._finalize_one, agen, name, name=task_name)
        except RuntimeError:  # the runner stopped running tasks in the meantime
            _close_without_loop(agen)

    def begin_shutdown(self) -> None:
        """From now on hold every generator strongly and queue newly dropped ones for
        :meth:`finalize_remaining` (called by ``Runner.close`` once no task is left)."""
        if not self._shutting_down:
            self._shutting_down = True
            self.alive = set(self.alive)

    async def finalize_remaining(self) -> None:
        """Close every surviving generator, one at a time, until none is left."""
        while self.alive:
            batch, self.alive = self.alive, set()
            for agen in batch:
                await self._finalize_one(agen, asyncgen_name(agen))
            del batch

    @staticmethod
    async def _finalize_one(agen: AGen, name: str) -> None:
        from ._cancel import CancelScope

        try:
            # Shielded, so nothing outside can interrupt the closing; cancelled, so nothing
            # inside can block it.
            with CancelScope(shield=True) as scope:
                scope.cancel("async generator finalization: only shielded awaits can run")
                await agen.aclose()
        except BaseException:
            ASYNCGEN_LOGGER.exception(
                "Exception ignored during finalization of async generator %r -- surround your use "
                "of the generator in 'async with aclosing(...):' to raise exceptions like this in "
                "the context where they're generated",
                name,
            )


def _close_without_loop(agen: AGen) -> None:
    """Python's own finalization (no hooks): throw GeneratorExit in and step once."""
    closer = agen.aclose()
    try:
        closer.send(None)
    except StopIteration:
        return
    finally:
        closer.close()
    raise RuntimeError(
        f"async generator {asyncgen_name(agen)!r} awaited something during finalization, outside "
        "any event loop; wrap its use in 'async with aclosing(...):'"
    )
