"""Per-opcode facts, as data: what the ring must know about an operation to keep its promises.

Every :class:`~anyio_uring._ring.Operation` carries the :class:`OpFacts` of its opcode.  The ring
layer -- not the code that queued the operation -- acts on them:

``returns_fd``
    A result ``>= 0`` is a new file descriptor.  If nobody takes it (the operation was
    abandoned, its waiter died, the loop is shutting down) the ring closes it; the waiter gets it
    as an :class:`~anyio_uring._ring.OwnedFd` that closes it unless taken.
``cancellable``
    The operation may be withdrawn before submission or ``ASYNC_CANCEL``-ed after.  ``CLOSE`` is
    not: a withdrawn or cancelled close leaves the fd open while its owner believes it closed.
    Cancellation (a cancel scope, Ctrl+C, loop shutdown) reaching a task parked on such an
    operation waits for its completion and lands at the next checkpoint.
``result_on_more``
    The result arrives on a CQE with ``IORING_CQE_F_MORE``, and the final CQE only releases the
    memory (``SEND_ZC``: the byte count comes first, the ``F_NOTIF`` CQE tens of milliseconds
    later says the kernel no longer reads the buffer).  Waiters are called on the final CQE;
    ``Operation.result`` is the result CQE's ``res``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_FACTS", "FACTS", "OpFacts", "facts_for"]

# Opcode numbers (kernel ABI).
OP_NOP, OP_FSYNC, OP_POLL_ADD, OP_SENDMSG, OP_RECVMSG, OP_TIMEOUT = 0, 3, 6, 9, 10, 11
OP_ACCEPT, OP_ASYNC_CANCEL, OP_CONNECT, OP_OPENAT, OP_CLOSE, OP_STATX = 13, 14, 16, 18, 19, 21
OP_READ, OP_WRITE, OP_SEND, OP_RECV, OP_SHUTDOWN, OP_RENAMEAT = 22, 23, 26, 27, 34, 35
OP_UNLINKAT, OP_MKDIRAT, OP_SYMLINKAT, OP_LINKAT, OP_SOCKET, OP_SEND_ZC = 36, 37, 38, 39, 45, 47
OP_WAITID, OP_FTRUNCATE = 50, 55


@dataclass(frozen=True, slots=True)
class OpFacts:
    """What one opcode's operations promise (see the module docstring)."""

    returns_fd: bool = False
    cancellable: bool = True
    result_on_more: bool = False


#: The facts of an opcode the table does not list.
DEFAULT_FACTS: Final = OpFacts()

#: Opcode -> facts.  Opcodes not listed have the defaults (cancellable, no fd, result on final).
FACTS: Final[dict[int, OpFacts]] = {
    OP_NOP: OpFacts(),
    OP_FSYNC: OpFacts(),
    OP_POLL_ADD: OpFacts(),
    OP_SENDMSG: OpFacts(),
    OP_RECVMSG: OpFacts(),
    OP_TIMEOUT: OpFacts(),
    OP_ACCEPT: OpFacts(returns_fd=True),
    OP_CONNECT: OpFacts(),
    OP_OPENAT: OpFacts(returns_fd=True),
    OP_CLOSE: OpFacts(cancellable=False),
    OP_STATX: OpFacts(),
    OP_READ: OpFacts(),
    OP_WRITE: OpFacts(),
    OP_SEND: OpFacts(),
    OP_RECV: OpFacts(),
    OP_SHUTDOWN: OpFacts(),
    OP_RENAMEAT: OpFacts(),
    OP_UNLINKAT: OpFacts(),
    OP_MKDIRAT: OpFacts(),
    OP_SYMLINKAT: OpFacts(),
    OP_LINKAT: OpFacts(),
    OP_SOCKET: OpFacts(returns_fd=True),
    OP_SEND_ZC: OpFacts(result_on_more=True),
    OP_WAITID: OpFacts(),
    OP_FTRUNCATE: OpFacts(),
}


def facts_for(opcode: int) -> OpFacts:
    """The facts of ``opcode`` (the defaults for an opcode the table does not list)."""
    return FACTS.get(opcode, DEFAULT_FACTS)
