"""The ring layer: one io_uring, its ledger of in-flight operations, and the memory they own.

It knows nothing of tasks, cancel scopes or anyio.  Whoever waits for an :class:`Operation`
sets its ``callback`` and is called exactly once, on the final CQE (see ``_ring.py``).

* ``_ring.py``     -- :class:`Ring` (queue, submit+wait+harvest, cancel, close/drain) and
  :class:`Operation` (lifecycle, the one place memory lent to the kernel is released)
* ``_probe.py``    -- what the kernel supports, which of it is used, feature masks
* ``_buffers.py``  -- provided-buffer rings (``IOSQE_BUFFER_SELECT``)
* ``_msghdr.py``   -- ``struct msghdr`` with the iovecs/address/control memory it points at
* ``_ops.py``      -- per-opcode facts as data (returns an fd, cancellable, result-vs-release CQE)
* ``_owned.py``    -- :class:`OwnedFd`, an fd result closed unless taken
"""

from ._buffers import ProvidedBufferRing
from ._msghdr import MsgHdr
from ._ops import FACTS, OpFacts
from ._owned import OwnedFd
from ._probe import FEATURES, OPCODE_NAMES, KernelSupport, RingOptions
from ._ring import Ledger, Operation, OpState, Ring

__all__ = [
    "FACTS",
    "FEATURES",
    "OPCODE_NAMES",
    "KernelSupport",
    "Ledger",
    "MsgHdr",
    "OpFacts",
    "OpState",
    "Operation",
    "OwnedFd",
    "ProvidedBufferRing",
    "Ring",
    "RingOptions",
]
