"""When io_uring cannot be used, ring creation fails with IoUringUnavailableError naming the cause
and the remedy (DESIGN.md section 8) -- never a crash, never a hang.

Each case runs in a subprocess that makes io_uring_setup fail for real: a seccomp filter returning
a chosen errno for syscall 425 (what Docker's default profile does with EPERM), or an exhausted
RLIMIT_NOFILE for a genuine EMFILE.
"""

from __future__ import annotations

import errno
import json
import platform
import subprocess
import sys

import pytest

from support import env_without, run_captured

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())

pytestmark = pytest.mark.skipif(
    AUDIT_ARCH is None, reason=f"no seccomp arch constant for {platform.machine()}"
)

# Installs a seccomp filter: io_uring_setup (425 on every architecture) fails with errno argv[1];
# everything else is allowed.  Then (argv[2]) tries a Ring ("ring"), execs `python argv[4:]`
# ("exec") or `python -m anyio_uring argv[4:]`.
SECCOMP = r"""
import ctypes, os, struct, sys

err, mode = int(sys.argv[1]), sys.argv[2]
arch = int(sys.argv[3])
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
prog = [
    (BPF_LD_W_ABS, 0, 0, 4),                # A = seccomp_data.arch
    (BPF_JEQ_K, 0, 3, arch),                # other arch -> allow
    (BPF_LD_W_ABS, 0, 0, 0),                # A = seccomp_data.nr
    (BPF_JEQ_K, 0, 1, 425),                 # io_uring_setup?
    (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
    (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
]
raw = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
filt = ctypes.create_string_buffer(raw, len(raw))

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

fprog = SockFprog(len(prog), ctypes.addressof(filt))
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_NO_NEW_PRIVS failed: {ctypes.get_errno()}")
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit(f"PR_SET_SECCOMP failed: {ctypes.get_errno()}")

if mode == "ring":
    import json
    from anyio_uring._errors import IoUringUnavailableError
    from anyio_uring._ring import Ring
    try:
        Ring()
    except IoUringUnavailableError as exc:
        print(json.dumps({"type": type(exc).__name__, "errno": exc.errno, "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
elif mode == "exec":  # any Python command line under the filter
    os.execv(sys.executable, [sys.executable, *sys.argv[4:]])
else:
    os.execv(sys.executable, [sys.executable, "-m", "anyio_uring", *sys.argv[4:]])
"""

EMFILE = r"""
import json, os, resource
from anyio_uring._errors import IoUringUnavailableError
from anyio_uring._ring import Ring

Ring().close()  # works before the limit is reached
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    assert exc.errno == 24, exc
try:
    Ring()
except IoUringUnavailableError as exc:
    report = {"type": type(exc).__name__, "errno": exc.errno, "message": str(exc), "held": len(held)}
    print(json.dumps(report))
else:
    print(json.dumps({"type": None}))
"""

# errno -> words the message must contain: the cause, and the remedy
EXPECTED = {
    errno.ENOSYS: ["ENOSYS", "seccomp", "Remedy", "Linux >= 6.1"],
    errno.EPERM: ["EPERM", "io_uring_disabled", "Remedy", "sysctl kernel.io_uring_disabled=0"],
    errno.ENOMEM: ["ENOMEM", "256 entries", "Remedy", "smaller ring"],
    errno.EMFILE: ["EMFILE", "open-file limit", "Remedy", "ulimit -n"],
}


def _env() -> dict[str, str]:
    return env_without("ANYIO_URING_DISABLE")


def run_seccomp(err: int, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_captured(
        [sys.executable, "-c", SECCOMP, str(err), mode, str(AUDIT_ARCH), *args], timeout=60, env=_env()
    )


@pytest.mark.parametrize("err", list(EXPECTED), ids=[errno.errorcode[e] for e in EXPECTED])
def test_ring_unavailable_under_seccomp(err: int) -> None:
    proc = run_seccomp(err, "ring")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["type"] == "IoUringUnavailableError"
    assert result["errno"] == err
    message = result["message"]
    assert message.startswith(f"[Errno {err}] io_uring is unavailable: ")
    for word in EXPECTED[err]:
        assert word in message


@pytest.mark.parametrize("err", list(EXPECTED), ids=[errno.errorcode[e] for e in EXPECTED])
def test_main_reports_unavailable(err: int) -> None:
    proc = run_seccomp(err, "main")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("anyio_uring: io_uring is unavailable: ")
    for word in EXPECTED[err]:
        assert word in proc.stderr


def test_main_json_reports_unavailable() -> None:
    proc = run_seccomp(errno.EPERM, "main", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["available"] is False
    assert report["errno"] == errno.EPERM
    assert "io_uring_disabled" in report["error"]
    assert "Traceback" not in proc.stderr


def test_seccomp_harness_control() -> None:
    """Control: the same harness with a filter that matches no architecture blocks nothing, so
    the failures above come from the filter's errno and not from the harness."""
    proc = run_captured(
        [sys.executable, "-c", SECCOMP, str(errno.EPERM), "main", str(0xDEAD)], timeout=60, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "io_uring:     available" in proc.stdout


def test_real_emfile() -> None:
    proc = run_captured([sys.executable, "-c", EMFILE], timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["type"] == "IoUringUnavailableError"
    assert result["errno"] == errno.EMFILE
    for word in EXPECTED[errno.EMFILE]:
        assert word in result["message"]
    assert result["held"] > 0
