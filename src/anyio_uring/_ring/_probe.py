"""What the running kernel's io_uring supports, which of it we use, and how to mask it.

Probing happens once per ring (``Ring.support``): the setup flags the kernel accepted, the
``IORING_FEAT_*`` bits it reported, the opcodes ``IORING_REGISTER_PROBE`` lists, and a real
registration attempt for provided-buffer rings.  Capabilities that the kernel does not report
directly are derived from an opcode introduced in the same release (documented per field).

Every capability can be *masked* with ``RingOptions(disable=...)`` or the environment variable
``ANYIO_URING_DISABLE`` (comma-separated names), so each fallback path runs on a new kernel too.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass, field
from typing import Final

from .._errors import IoUringUnavailableError
from .._native import lib

__all__ = [
    "FEATURES",
    "OPCODE_NAMES",
    "KernelSupport",
    "RingOptions",
    "unavailable_error",
]

#: Maskable capabilities and what masking each one changes.
FEATURES: Final[dict[str, str]] = {
    "single_issuer": "setup flag SINGLE_ISSUER (also disables defer_taskrun)",
    "defer_taskrun": "setup flag DEFER_TASKRUN: completions are posted only inside our enter",
    "coop_taskrun": "setup flags COOP_TASKRUN|TASKRUN_FLAG",
    "submit_all": "setup flag SUBMIT_ALL",
    "no_sqarray": "setup flag NO_SQARRAY",
    "registered_fd": "enter through a registered ring fd",
    "ext_arg": "EXT_ARG wait timeouts (fallback: one TIMEOUT SQE per timed wait)",
    "cqe_skip": "IOSQE_CQE_SKIP_SUCCESS for withdrawn SQEs",
    "multishot_poll": "multishot POLL_ADD (fallback: re-armed single-shot poll)",
    "multishot_accept": "multishot ACCEPT (fallback: one ACCEPT per connection)",
    "multishot_recv": "multishot RECV (fallback: single-shot RECV)",
    "buffer_rings": "provided-buffer rings (fallback: receive into an owned buffer)",
    "incremental_buffers": "incremental consumption of provided buffers (IOU_PBUF_RING_INC, 6.12+)",
    "waitid": "IORING_OP_WAITID (fallback: poll a pidfd, then waitpid)",
    "ftruncate": "IORING_OP_FTRUNCATE (fallback: worker thread)",
    "statx": "IORING_OP_STATX (fallback: worker thread)",
    "inline_fs": "non-blocking inline file attempts before the ring (cached stat/open, RWF_NOWAIT reads)",
}

#: Opcode numbers (kernel ABI) of the operations anyio_uring uses, by name.
OPCODE_NAMES: Final[dict[int, str]] = {
    0: "NOP", 3: "FSYNC", 6: "POLL_ADD", 9: "SENDMSG", 10: "RECVMSG", 11: "TIMEOUT", 13: "ACCEPT",
    14: "ASYNC_CANCEL", 16: "CONNECT", 18: "OPENAT", 19: "CLOSE", 21: "STATX", 22: "READ",
    23: "WRITE", 26: "SEND", 27: "RECV", 34: "SHUTDOWN", 35: "RENAMEAT", 36: "UNLINKAT",
    37: "MKDIRAT", 38: "SYMLINKAT", 39: "LINKAT", 45: "SOCKET", 47: "SEND_ZC", 50: "WAITID",
    55: "FTRUNCATE",
}  # fmt: skip

_OP = {name: num for num, name in OPCODE_NAMES.items()}
_SETUP_FEATURES: Final[dict[str, int]] = {
    "single_issuer": lib.AUR_SF_SINGLE_ISSUER | lib.AUR_SF_DEFER_TASKRUN,
    "defer_taskrun": lib.AUR_SF_DEFER_TASKRUN,
    "coop_taskrun": lib.AUR_SF_COOP_TASKRUN | lib.AUR_SF_TASKRUN_FLAG,
    "submit_all": lib.AUR_SF_SUBMIT_ALL,
    "no_sqarray": lib.AUR_SF_NO_SQARRAY,
    "registered_fd": lib.AUR_ALLOW_REGISTERED_FD,
    "ext_arg": lib.AUR_ALLOW_EXT_ARG,
    "cqe_skip": lib.AUR_ALLOW_CQE_SKIP,
}
_FEAT_CQE_SKIP = 1 << 11
_FEAT_RECVSEND_BUNDLE = 1 << 14
_FEAT_MIN_TIMEOUT = 1 << 15


def _parse_names(spec: str | None) -> frozenset[str]:
    if not spec:
        return frozenset()
    return frozenset(name.strip() for name in spec.split(",") if name.strip())


@dataclass(frozen=True, slots=True)
class RingOptions:
    """How to set up a ring.

    ``entries`` is the SQ size (a power of two is chosen by the kernel, 1..32768);
    ``cq_entries`` defaults to 8 x ``entries`` (bounded to 65536); ``disable`` masks
    capabilities by name (see ``FEATURES``), in addition to ``ANYIO_URING_DISABLE``.
    """

    entries: int = 256
    cq_entries: int | None = None
    disable: frozenset[str] = field(default_factory=frozenset)
    use_environment: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.entries, int) or not 1 <= self.entries <= 32768:
            raise ValueError(f"entries must be an int in 1..32768, got {self.entries!r}")
        if self.cq_entries is not None and (
            not isinstance(self.cq_entries, int) or not self.entries <= self.cq_entries <= 65536
        ):
            raise ValueError(
                f"cq_entries must be an int in entries..65536 ({self.entries}..65536), "
                f"got {self.cq_entries!r}"
            )
        object.__setattr__(self, "disable", frozenset(self.disable))
        unknown = self.effective_disable() - FEATURES.keys()
        if unknown:
            raise ValueError(
                f"unknown io_uring feature name(s) {sorted(unknown)} to disable; "
                f"valid names: {', '.join(sorted(FEATURES))}"
            )

    def effective_disable(self) -> frozenset[str]:
        """The masked capabilities: ``disable`` plus ``$ANYIO_URING_DISABLE``."""
        env = _parse_names(os.environ.get("ANYIO_URING_DISABLE")) if self.use_environment else frozenset()
        return self.disable | env

    def setup_allow_mask(self) -> int:
        """The ``allow`` argument of ``aur_setup``: every setup flag not masked."""
        allow = 0
        for bits in _SETUP_FEATURES.values():
            allow |= bits
        for name in self.effective_disable():
            allow &= ~_SETUP_FEATURES.get(name, 0)
        return allow

    def resolved_cq_entries(self) -> int:
        if self.cq_entries is not None:
            return self.cq_entries
        return min(max(self.entries * 8, 64), 65536)


def _read_sysctl(name: str) -> str | None:
    try:
        with open(f"/proc/sys/kernel/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def unavailable_error(err: int, entries: int) -> IoUringUnavailableError:
    """Build the one exception raised when ``io_uring_setup`` fails, naming cause and remedy."""
    name = _errno.errorcode.get(err, str(err))
    release = os.uname().release
    if err == _errno.ENOSYS:
        cause = (
            f"io_uring_setup() is not available (ENOSYS) on Linux {release}: the kernel is older "
            "than 5.1 or built without CONFIG_IO_URING, or a seccomp profile (such as Docker's "
            "default) blocks the io_uring system calls"
        )
        remedy = (
            "run on Linux >= 6.1, or allow io_uring_setup, io_uring_enter and io_uring_register in "
            "the container's seccomp profile (e.g. `docker run --security-opt seccomp=<profile>`)"
        )
    elif err == _errno.EPERM:
        disabled = _read_sysctl("io_uring_disabled")
        group = _read_sysctl("io_uring_group")
        cause = (
            f"io_uring is denied by policy (EPERM): kernel.io_uring_disabled={disabled} "
            f"(1: only CAP_SYS_ADMIN or members of kernel.io_uring_group={group}; 2: nobody), "
            "or a seccomp/LSM policy rejects io_uring_setup"
        )
        remedy = (
            "set `sysctl kernel.io_uring_disabled=0` (or add the user to kernel.io_uring_group), "
            "or allow io_uring in the sandbox's seccomp/LSM profile"
        )
    elif err == _errno.ENOMEM:
        cause = (
            f"the kernel could not allocate a ring of {entries} entries (ENOMEM): memory is "
            "exhausted, or RLIMIT_MEMLOCK is too low (kernels before 5.12 charge rings to it)"
        )
        remedy = "use a smaller ring (RingOptions(entries=...)), free memory, or raise `ulimit -l`"
    elif err in (_errno.EMFILE, _errno.ENFILE):
        cause = f"no file descriptor is left for the ring ({name}): the open-file limit is reached"
        remedy = "close unused files/sockets or raise the limit (`ulimit -n`)"
    else:
        cause = f"io_uring_setup() failed with {name} on Linux {release}"
        remedy = "check the kernel's io_uring support with `python -m anyio_uring`"
    return IoUringUnavailableError(err, f"io_uring is unavailable: {cause}. Remedy: {remedy}.")


@dataclass(frozen=True, slots=True)
class KernelSupport:
    """The io_uring capabilities of one ring, after masking."""

    kernel_release: str
    setup_flags: int
    features: int
    opcodes: frozenset[int]
    disabled: frozenset[str]
    ext_arg: bool
    registered_fd: bool
    buffer_rings: bool
    sq_entries: int
    cq_entries: int

    def has_op(self, name: str) -> bool:
        """Whether the opcode ``name`` (e.g. ``"STATX"``) is supported and not masked."""
        if name.lower() in self.disabled:
            return False
        return _OP[name] in self.opcodes

    @property
    def defer_taskrun(self) -> bool:
        return bool(self.setup_flags & lib.AUR_SF_DEFER_TASKRUN)

    @property
    def single_issuer(self) -> bool:
        return bool(self.setup_flags & lib.AUR_SF_SINGLE_ISSUER)

    @property
    def cqe_skip(self) -> bool:
        return bool(self.features & _FEAT_CQE_SKIP) and "cqe_skip" not in self.disabled

    @property
    def multishot_poll(self) -> bool:
        # 5.13; MKDIRAT arrived in 5.15, so its presence implies multishot poll.
        return "multishot_poll" not in self.disabled and _OP["MKDIRAT"] in self.opcodes

    @property
    def multishot_accept(self) -> bool:
        # 5.19, the release that added IORING_OP_SOCKET.
        return "multishot_accept" not in self.disabled and _OP["SOCKET"] in self.opcodes

    @property
    def multishot_recv(self) -> bool:
        # 6.0, the release that added IORING_OP_SEND_ZC; it also needs buffer rings.
        return "multishot_recv" not in self.disabled and self.buffer_rings and _OP["SEND_ZC"] in self.opcodes

    @property
    def incremental_buffers(self) -> bool:
        # 6.12, the release that added IORING_FEAT_MIN_TIMEOUT; it also needs buffer rings.  A
        # kernel that still rejects IOU_PBUF_RING_INC makes ProvidedBufferRing raise instead.
        return (
            "incremental_buffers" not in self.disabled
            and self.buffer_rings
            and bool(self.features & _FEAT_MIN_TIMEOUT)
        )

    @property
    def recv_bundle(self) -> bool:
        return bool(self.features & _FEAT_RECVSEND_BUNDLE)

    @property
    def waitid(self) -> bool:
        return self.has_op("WAITID")

    @property
    def ftruncate(self) -> bool:
        return self.has_op("FTRUNCATE")

    @property
    def statx(self) -> bool:
        return self.has_op("STATX")

    def setup_flag_names(self) -> list[str]:
        names = {
            lib.AUR_SF_SINGLE_ISSUER: "SINGLE_ISSUER",
            lib.AUR_SF_DEFER_TASKRUN: "DEFER_TASKRUN",
            lib.AUR_SF_COOP_TASKRUN: "COOP_TASKRUN",
            lib.AUR_SF_TASKRUN_FLAG: "TASKRUN_FLAG",
            lib.AUR_SF_SUBMIT_ALL: "SUBMIT_ALL",
            lib.AUR_SF_NO_SQARRAY: "NO_SQARRAY",
        }
        return [name for bit, name in names.items() if self.setup_flags & bit]

    def strategies(self) -> dict[str, str]:
        """Which mechanism each subsystem uses on this ring."""
        return {
            "loop wait": "io_uring_enter with an EXT_ARG timeout"
            if self.ext_arg
            else "io_uring_enter bounded by a TIMEOUT SQE",
            "completions": "deferred to the loop's enter (DEFER_TASKRUN)"
            if self.defer_taskrun
            else "posted by the kernel at any time",
            "cross-thread wakeup": "eventfd watched by a multishot POLL_ADD"
            if self.multishot_poll
            else "eventfd watched by a re-armed POLL_ADD",
            "withdrawn SQEs": "NOP with CQE_SKIP_SUCCESS" if self.cqe_skip else "NOP whose CQE is dropped",
            "accept": "multishot ACCEPT" if self.multishot_accept else "one ACCEPT per connection",
            "stream receive": "RECV from provided-buffer size classes (no memory pinned while idle)"
            if self.buffer_rings
            else "POLL_ADD, then a non-blocking recv (no memory pinned while idle)",
            "file stat": "STATX on the ring" if self.statx else "os.stat in a worker thread",
            "file truncate": "FTRUNCATE on the ring" if self.ftruncate else "os.ftruncate in a worker thread",
            "process wait": "WAITID on the ring" if self.waitid else "POLL_ADD on a pidfd, then waitpid",
        }
