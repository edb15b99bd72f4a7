"""The receive memory of one loop: how socket streams receive, and the provided-buffer pool.

The design note's core idea (DESIGN.md section 6): a ``receive()`` waiting on an idle connection
pins no memory.  Stream receives therefore select their buffer from a kernel-provided buffer ring
(``IOSQE_BUFFER_SELECT``) only when data arrives; the stream copies out exactly ``res`` bytes and
the buffer goes back to the ring at once.

* **Size classes** (:data:`SIZE_CLASSES`): one buffer group per class, registered lazily, the
  first time a receive of that class runs.  Each stream picks its class adaptively
  (:func:`size_pick`/:func:`size_record`, after Netty's ``AdaptiveRecvByteBufAllocator``): it
  starts at 4 KiB, grows one class after a receive that filled its buffer, and shrinks one class
  after two receives in a row that would have fitted the class below.  A receive never uses a
  class larger than needed for its ``max_bytes``.
* **Lazy growth**: a group starts small and grows (doubling, new memory added to the same ring)
  when a receive finds it empty (``-ENOBUFS``), as long as the pool stays under its memory
  limit (``receive_pool_limit``, default 64 MiB).  ``-ENOBUFS`` is back-pressure, never the end of
  a stream: the data stays in the socket, and a receive the pool cannot serve falls back to
  poll-then-recv for that one call.
* **Strategies** (backend option ``socket_receive``): ``"select"`` as above; ``"poll"``,
  Netty's poll-then-recv (``POLL_ADD``, then a non-blocking ``recv`` into fresh memory: idle
  connections pin nothing either; the default where buffer rings are missing or masked with
  ``disable="buffer_rings"``); ``"hybrid"`` (the default where the kernel has provided-buffer
  rings), ``"select"`` for a stream whose class is below :data:`HYBRID_POLL_FROM` (16 KiB) and
  ``"poll"`` from there on -- a provided buffer means two copies (socket -> buffer -> bytes),
  poll-then-recv one copy and one more system call, and from 16 KiB the copy costs more
  (measured: 16 and 100 KiB echo rows 8-28 % faster than ``"select"``, 1 KiB unchanged, and a
  new, idle stream starts at 4 KiB, so idle memory is ``"select"``'s); ``"owned"``, a ``RECV``
  into a per-stream buffer (pins that buffer while a receive waits; the simplest path).

**Multishot receives** (kernels with multishot RECV, on a ring with DEFER_TASKRUN;
``disable="multishot_recv"`` masks them):
``"hybrid"`` switches a stream to one multishot ``RECV`` on the 4 KiB group, kept armed, once a
select receive of a small class got data while the loop was busy (its newest harvest reaped at
least :data:`MULTISHOT_BUSY` CQEs): a receive then costs no SQE, no operation and no waiter.  On
one quiet connection the single-shot path is as fast or faster, and a stream that never received
anything (an idle connection) never switches, so idle memory is unchanged.  ``"multishot"`` is
``"hybrid"`` switching every stream at its first data, busy loop or not (the tests' way of
forcing the path).  A multishot receive keeps taking buffers while its consumer does not read,
which could drain the pool for everyone (DESIGN.md section 6); here every CQE is copied out and
its buffer given back inside the dispatch, so the pool is only ever lent for the instant of one
copy, and a stream that stops reading pauses its multishot (cancels it) after 16 untaken results
of at most 4 KiB: the socket buffer then holds the rest, as it would for a single-shot reader.
Reads that grow the stream's class to 16 KiB (bulk data, or results piling up between receives)
end the multishot too: the stream polls-then-receives, one copy, until its class is small again.
The other strategies take a buffer only for a reader that is waiting, which bounds each stream to
one buffer.
"""

from __future__ import annotations

import errno
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .._ring import ProvidedBufferRing

if TYPE_CHECKING:
    from .._core import Runner
    from .._ring import Ring

__all__ = [
    "HYBRID_POLL_FROM",
    "MULTISHOT_BUSY",
    "NEVER",
    "PICK_ANY_ABOVE",
    "RECEIVE_STRATEGIES",
    "SIZER_SMALL",
    "SIZER_START",
    "SIZE_CLASSES",
    "NetConfig",
    "ReceivePool",
    "net_state",
    "size_pick",
    "size_record",
]

#: Buffer sizes of the pool's groups, smallest first.
SIZE_CLASSES: Final = (1024, 4096, 16384, 65536)
#: The class a new stream starts with (4 KiB).
_START_CLASS: Final = 1
#: Bytes each group starts with when it is first used (at least 8 buffers).
_INITIAL_BYTES: Final = 256 * 1024
#: Ring entries of a group at most (the kernel allows 32768).
_MAX_ENTRIES: Final = 4096
#: First buffer group id the pool uses (ids below are free for other users of the ring).
_BGID_BASE: Final = 0x7F00
#: Default memory limit of one loop's pool.
DEFAULT_POOL_LIMIT: Final = 64 * 1024 * 1024
#: ``"hybrid"`` switches a stream to a multishot receive on a loop whose harvests reap at least
#: this many CQEs (``"multishot"``: from 0, on any loop).
MULTISHOT_BUSY: Final = 4
#: A threshold no harvest reaches.
NEVER: Final = 1 << 62

RECEIVE_STRATEGIES: Final = ("auto", "hybrid", "select", "poll", "owned", "multishot")
_CANONICAL: Final = {name: name for name in RECEIVE_STRATEGIES}


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Socket settings of one loop (backend options ``socket_receive`` and
    ``receive_pool_limit``)."""

    receive: str = "auto"
    pool_limit: int = DEFAULT_POOL_LIMIT

    def __post_init__(self) -> None:
        if self.receive not in RECEIVE_STRATEGIES:
            raise ValueError(
                f"socket_receive must be one of {', '.join(map(repr, RECEIVE_STRATEGIES))}, "
                f"not {self.receive!r}"
            )
        if (
            not isinstance(self.pool_limit, int)
            or isinstance(self.pool_limit, bool)
            or not SIZE_CLASSES[-1] * 8 <= self.pool_limit <= 1 << 40
        ):
            raise ValueError(
                f"receive_pool_limit must be an int of at least {SIZE_CLASSES[-1] * 8} bytes, "
                f"got {self.pool_limit!r}"
            )


#: A stream's adaptive size state, one int (``index + SIZER_SMALL * small``: the class index,
#: and how many small receives in a row it saw) instead of an object: an idle connection's
#: stream object is memory per connection.  The state of a new stream.
SIZER_START: Final = _START_CLASS
_SMALL: Final = 8  # index < 8
#: ``size_pick(state, max_bytes)`` is ``state % SIZER_SMALL`` whenever ``max_bytes`` exceeds
#: this (no smaller class can be big enough): the receive path tests that instead of calling.
PICK_ANY_ABOVE: Final = SIZE_CLASSES[-2]
#: The ``"hybrid"`` strategy polls (then receives into fresh memory) for classes from this index
#: on (16 KiB), and selects a provided buffer below it.
HYBRID_POLL_FROM: Final = 2
SIZER_SMALL: Final = _SMALL


def size_pick(state: int, max_bytes: int) -> int:
    """The class index for a receive of at most ``max_bytes`` by a stream in ``state``."""
    index = state % _SMALL
    while index and SIZE_CLASSES[index - 1] >= max_bytes:
        index -= 1
    return index


def size_record(state: int, index: int, nbytes: int) -> int:
    """The state after a receive of class ``index`` returned ``nbytes`` (Netty's rule: grow one
    class after a full buffer, shrink one after two receives in a row that fitted the class
    below)."""
    current, small = state % _SMALL, state // _SMALL
    if nbytes >= SIZE_CLASSES[index]:
        if index >= current and current < len(SIZE_CLASSES) - 1:
            current += 1
        return current
    if current and nbytes <= SIZE_CLASSES[current - 1]:
        if small >= 1:
            return current - 1
        return current + _SMALL
    return current


class ReceivePool:
    """One loop's provided-buffer groups, one per size class, grown lazily under a limit."""

    def __init__(self, ring: Ring, limit: int = DEFAULT_POOL_LIMIT) -> None:
        self.ring = ring
        self.limit = limit
        self._groups: list[ProvidedBufferRing | None] = [None] * len(SIZE_CLASSES)
        #: Times a group grew, and receives the pool could not serve (they polled instead: a
        #: group at the limit ran dry, or a class had no room to be registered).
        self.grows = 0
        self.exhausted = 0
        #: Receives the ``"hybrid"`` strategy served by poll-then-recv (a large class).
        self.hybrid_polls = 0
        #: False once registering a group failed: receives then poll.
        self.usable = True
        #: A stream whose select receive got data while the loop's newest harvest reaped at
        #: least this many CQEs switches to a multishot receive (see "multishot" above;
        #: :data:`NEVER`: the strategy or the kernel has none).  Set by :class:`NetState`.
        self.multishot_from = NEVER
        #: Streams that switched to a multishot receive, and times one ended it because its
        #: reads grew large (it polls then, until its class is small again).
        self.multishot_streams = 0
        self.multishot_pauses = 0

    @property
    def nbytes(self) -> int:
        """Buffer memory the pool holds (all groups)."""
        return sum(g.nbytes for g in self._groups if g is not None)

    def group(self, index: int) -> ProvidedBufferRing | None:
        """The group of class ``index``, registered on first use (``None``: unusable)."""
        group = self._groups[index]
        if group is not None:
            return group
        if not self.usable:
            return None
        size = SIZE_CLASSES[index]
        capacity = min(_MAX_ENTRIES, _pow2_floor(self.limit // size))
        count = min(capacity, max(8, _INITIAL_BYTES // size))
        if self.nbytes + count * size > self.limit:
            count = max(1, (self.limit - self.nbytes) // size)
            if self.nbytes + count * size > self.limit:
                self.exhausted += 1  # no room for this class: the receive polls instead
                return None
        try:
            group = ProvidedBufferRing(self.ring, _BGID_BASE + index, count, size, capacity=capacity)
        except OSError as exc:
            if exc.errno not in (errno.ENOMEM, errno.EINVAL, errno.EOPNOTSUPP, errno.EEXIST):
                raise
            self.usable = False
            return None
        self._groups[index] = group
        return group

    def grow(self, group: ProvidedBufferRing) -> bool:
        """``group`` ran dry (``-ENOBUFS``): add as many buffers as it has, within the limit.
        False if it cannot grow (the caller then receives another way)."""
        room = (self.limit - self.nbytes) // group.size
        added = group.grow(min(group.count, room)) if room > 0 and not group.closed else 0
        if added:
            self.grows += 1
            return True
        self.exhausted += 1
        return False


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


class NetState:
    """Per loop: the socket settings, the resolved receive strategy and the pool."""

    __slots__ = ("__weakref__", "config", "pool", "strategy")

    def __init__(self, ring: Ring, config: NetConfig) -> None:
        self.config = config
        strategy = config.receive
        multishot = ring.support.multishot_recv and ring.support.defer_taskrun
        if strategy == "auto" or (strategy == "multishot" and not multishot):
            strategy = "hybrid" if ring.support.buffer_rings else "poll"
        elif strategy in ("select", "hybrid") and not ring.support.buffer_rings:
            strategy = "poll"  # masked or missing: the documented fallback
        #: This module's own string (streams test it with ``is``; a name the caller built at
        #: run time, or a str subclass, is another object).
        self.strategy = _CANONICAL[strategy]
        self.pool = ReceivePool(ring, config.pool_limit)
        if multishot:
            # Without DEFER_TASKRUN the kernel runs a multishot receive -- taking a buffer per
            # message -- whenever data arrives, not only inside our harvest: the pause after
            # MULTISHOT_QUEUE untaken results could not bound what one stream takes from the pool.
            if strategy == "multishot":
                self.pool.multishot_from = 0
            elif strategy == "hybrid":
                self.pool.multishot_from = MULTISHOT_BUSY


_configs: weakref.WeakKeyDictionary[Runner, NetConfig] = weakref.WeakKeyDictionary()
_states: weakref.WeakKeyDictionary[Runner, NetState] = weakref.WeakKeyDictionary()


def configure(runner: Runner, config: NetConfig) -> None:
    """Set ``runner``'s socket settings (before its first socket)."""
    _configs[runner] = config
    _states.pop(runner, None)


def net_state(runner: Runner) -> NetState:
    """``runner``'s socket state, made on first use."""
    state = _states.get(runner)
    if state is None:
        state = _states[runner] = NetState(runner.ring, _configs.get(runner, NetConfig()))
    return state
