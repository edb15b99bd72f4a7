"""Kernel probing and feature masking: each mask must switch the path really taken, and
``python -m anyio_uring`` must report it."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anyio_uring._native import lib
from anyio_uring._ring import OpState, Ring
from anyio_uring._ring._probe import FEATURES, OPCODE_NAMES, RingOptions

SF = {
    "SINGLE_ISSUER": lib.AUR_SF_SINGLE_ISSUER,
    "DEFER_TASKRUN": lib.AUR_SF_DEFER_TASKRUN,
    "COOP_TASKRUN": lib.AUR_SF_COOP_TASKRUN,
    "TASKRUN_FLAG": lib.AUR_SF_TASKRUN_FLAG,
    "SUBMIT_ALL": lib.AUR_SF_SUBMIT_ALL,
    "NO_SQARRAY": lib.AUR_SF_NO_SQARRAY,
}


def timed_wait(ring: Ring, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    n = ring.wait(timeout=timeout)
    return n, time.monotonic() - t0


def test_default_ring_uses_the_best_paths(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(use_environment=False)
    s = ring.support
    # KERNEL-FACTS 1: 6.18 accepts the recommended flags together and supports every opcode we use
    assert {"SINGLE_ISSUER", "DEFER_TASKRUN", "TASKRUN_FLAG", "SUBMIT_ALL", "NO_SQARRAY"} <= set(
        s.setup_flag_names()
    )
    assert s.opcodes >= OPCODE_NAMES.keys()
    assert s.ext_arg
    assert ring._c.use_ext_arg == 1
    assert s.registered_fd
    assert s.buffer_rings
    assert s.cqe_skip
    assert s.multishot_accept
    assert s.multishot_recv
    assert s.multishot_poll
    assert s.disabled == frozenset()
    assert s.cq_entries == 8 * s.sq_entries
    assert s.kernel_release == os.uname().release


def test_ext_arg_off_falls_back_to_timeout_sqe(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(disable=frozenset({"ext_arg"}), use_environment=False)
    assert ring._c.use_ext_arg == 0
    assert not ring.support.ext_arg
    assert ring.support.strategies()["loop wait"] == "io_uring_enter bounded by a TIMEOUT SQE"
    for _ in range(3):  # each timed wait times out on time, again and again
        n, elapsed = timed_wait(ring, 0.05)
        assert n == 0
        assert 0.049 <= elapsed < 3.0
    assert ring._c.stale_timeouts == 3  # ... through our own TIMEOUT SQEs, whose CQEs never leak
    assert ring.rejected_cqes == 0
    # a completion ends a long timed wait at once, and the next short wait is not stretched
    op = ring.nop()
    n, elapsed = timed_wait(ring, 10)
    assert (n, op.result) == (1, 0)
    assert elapsed < 3.0
    n, elapsed = timed_wait(ring, 0.03)
    assert n == 0
    assert 0.029 <= elapsed < 3.0
    assert ring.rejected_cqes == 0


def test_ext_arg_on_needs_no_timeout_sqe(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(use_environment=False)
    n, elapsed = timed_wait(ring, 0.03)
    assert n == 0
    assert 0.029 <= elapsed < 3.0
    assert ring._c.stale_timeouts == 0
    assert ring.counters()["sqes_written"] == 0


@pytest.mark.parametrize(
    ("masked", "absent", "present"),
    [
        ("defer_taskrun", {"DEFER_TASKRUN"}, {"SINGLE_ISSUER"}),
        ("single_issuer", {"SINGLE_ISSUER", "DEFER_TASKRUN"}, {"COOP_TASKRUN"}),
        ("coop_taskrun", {"COOP_TASKRUN", "TASKRUN_FLAG"}, {"DEFER_TASKRUN"}),
        ("submit_all", {"SUBMIT_ALL"}, {"DEFER_TASKRUN"}),
        ("no_sqarray", {"NO_SQARRAY"}, {"DEFER_TASKRUN"}),
    ],
)
def test_setup_flag_masks(
    make_ring: Callable[..., Ring],
    sockpair: tuple[socket.socket, socket.socket],
    masked: str,
    absent: set[str],
    present: set[str],
) -> None:
    ring = make_ring(disable=frozenset({masked}), use_environment=False)
    names = set(ring.support.setup_flag_names())
    assert not names & absent
    assert present <= names
    for name in absent:
        assert not ring._c.setup_flags & SF[name]
    assert masked in ring.support.disabled
    # Non-blocking waits must still see completions the kernel has pending for us; without
    # TASKRUN_FLAG a DEFER_TASKRUN ring needs GETEVENTS on every enter to run its task work.
    a, b = sockpair
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    ring.wait(timeout=0)
    a.sendall(b"polled")
    for _ in range(100):
        if op.done:
            break
        ring.wait(timeout=0)
        time.sleep(0.001)
    assert op.result == 6
    assert bytes(buf[:6]) == b"polled"


def test_completions_strategy_follows_defer_taskrun(make_ring: Callable[..., Ring]) -> None:
    on = make_ring(use_environment=False).support
    off = make_ring(disable=frozenset({"defer_taskrun"}), use_environment=False).support
    assert on.defer_taskrun
    assert not off.defer_taskrun
    assert on.strategies()["completions"] != off.strategies()["completions"]
    assert "DEFER_TASKRUN" in on.strategies()["completions"]


def test_defer_taskrun_off_posts_completions_without_enter(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """The mask changes kernel behaviour, not just a flag: KERNEL-FACTS 1's table."""
    a, b = sockpair
    for disable, expect_ready in ((frozenset(), 0), (frozenset({"defer_taskrun"}), 1)):
        ring = make_ring(disable=disable, use_environment=False)
        op = ring.recv(b.fileno(), bytearray(4))
        ring.wait(timeout=0)
        a.sendall(b"hi")
        # syscalls other than our enter (these sleeps) run plain task work, never deferred work
        deadline = time.monotonic() + (0.02 if expect_ready == 0 else 5)
        while lib.aur_cq_ready(ring._c) != expect_ready and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.001)
        assert lib.aur_cq_ready(ring._c) == expect_ready
        ring.wait(timeout=1)
        assert op.result == 2


def test_registered_fd_mask(make_ring: Callable[..., Ring], drive: Callable[..., None]) -> None:
    on = make_ring(use_environment=False)
    off = make_ring(disable=frozenset({"registered_fd"}), use_environment=False)
    assert on._c.use_registered_fd == 1
    assert off._c.use_registered_fd == 0
    assert not off.support.registered_fd
    op = off.nop()
    drive(off, op)
    assert op.result == 0


def test_buffer_rings_mask(make_ring: Callable[..., Ring]) -> None:
    on = make_ring(use_environment=False).support
    off = make_ring(disable=frozenset({"buffer_rings"}), use_environment=False).support
    assert on.buffer_rings
    assert not off.buffer_rings
    assert not off.multishot_recv
    assert off.strategies()["stream receive"].startswith("POLL_ADD, then a non-blocking recv")
    assert on.strategies()["stream receive"] != off.strategies()["stream receive"]


def test_cqe_skip_mask_changes_withdrawn_sqes(
    make_ring: Callable[..., Ring], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    _a, b = sockpair
    for disable, cqes in ((frozenset(), 0), (frozenset({"cqe_skip"}), 1)):
        ring = make_ring(disable=disable, use_environment=False)
        assert ring.support.cqe_skip is (cqes == 0)
        op = ring.recv(b.fileno(), bytearray(4))
        assert op.state is OpState.QUEUED
        assert ring.cancel(op) is True
        ring.submit()  # the withdrawn SQE (a NOP now) goes to the kernel
        assert lib.aur_cq_ready(ring._c) == cqes
        ring.wait(timeout=0)
        assert ring.rejected_cqes == 0  # its CQE, if any, is swallowed in C
        assert ring.support.strategies()["withdrawn SQEs"] == (
            "NOP with CQE_SKIP_SUCCESS" if cqes == 0 else "NOP whose CQE is dropped"
        )


@pytest.mark.parametrize(
    ("masked", "attribute", "strategy"),
    [
        ("multishot_poll", "multishot_poll", "cross-thread wakeup"),
        ("multishot_accept", "multishot_accept", "accept"),
        ("waitid", "waitid", "process wait"),
        ("statx", "statx", "file stat"),
        ("ftruncate", "ftruncate", "file truncate"),
    ],
)
def test_capability_masks(make_ring: Callable[..., Ring], masked: str, attribute: str, strategy: str) -> None:
    on = make_ring(use_environment=False).support
    off = make_ring(disable=frozenset({masked}), use_environment=False).support
    assert getattr(on, attribute) is True
    assert getattr(off, attribute) is False
    assert on.strategies()[strategy] != off.strategies()[strategy]


def test_every_feature_masked_at_once_still_works(
    make_ring: Callable[..., Ring], drive: Callable[..., None], sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    ring = make_ring(disable=frozenset(FEATURES), use_environment=False)
    assert ring.support.setup_flag_names() == []
    assert ring._c.use_ext_arg == 0
    assert ring._c.use_registered_fd == 0
    buf = bytearray(8)
    op = ring.recv(b.fileno(), buf)
    n, elapsed = timed_wait(ring, 0.02)
    assert n == 0
    assert elapsed >= 0.019
    a.sendall(b"plain")
    drive(ring, op)
    assert bytes(buf[:5]) == b"plain"


def test_environment_variable(monkeypatch: pytest.MonkeyPatch, make_ring: Callable[..., Ring]) -> None:
    monkeypatch.setenv("ANYIO_URING_DISABLE", " ext_arg, defer_taskrun ,")
    ring = make_ring()
    assert ring.support.disabled == {"ext_arg", "defer_taskrun"}
    assert ring._c.use_ext_arg == 0
    assert not ring.support.defer_taskrun
    # `disable=` adds to the environment; use_environment=False ignores it
    both = make_ring(disable=frozenset({"buffer_rings"}))
    assert both.support.disabled == {"ext_arg", "defer_taskrun", "buffer_rings"}
    ignored = make_ring(use_environment=False)
    assert ignored.support.disabled == frozenset()
    assert ignored._c.use_ext_arg == 1


def test_unknown_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="ext_args"):
        RingOptions(disable=frozenset({"ext_args"}))
    monkeypatch.setenv("ANYIO_URING_DISABLE", "ext_arg,no_such_thing")
    with pytest.raises(ValueError, match="no_such_thing"):
        RingOptions()
    RingOptions(use_environment=False)  # fine: the environment is not consulted


@pytest.mark.parametrize("kwargs", [{"entries": 0}, {"entries": 1 << 16}, {"entries": 64, "cq_entries": 32}])
def test_ring_options_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RingOptions(**kwargs)


def test_cq_entries_and_power_of_two(make_ring: Callable[..., Ring]) -> None:
    ring = make_ring(entries=100, cq_entries=1000, use_environment=False)
    assert ring.support.sq_entries == 128
    assert ring.support.cq_entries == 1024


# ================================================================================ python -m


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ANYIO_URING_DISABLE"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "anyio_uring", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_main_text() -> None:
    proc = run_main()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert os.uname().release in out
    assert "io_uring:     available" in out
    assert "DEFER_TASKRUN" in out
    for name in OPCODE_NAMES.values():
        assert name in out
    assert "io_uring_enter with an EXT_ARG timeout" in out
    assert "masked:       (none" in out
    assert proc.stderr == ""


def test_main_json_reflects_masks() -> None:
    plain = json.loads(run_main("--json").stdout)
    masked_proc = run_main("--json", env={"ANYIO_URING_DISABLE": "ext_arg,defer_taskrun,buffer_rings"})
    assert masked_proc.returncode == 0
    masked = json.loads(masked_proc.stdout)
    assert plain["available"] is True
    assert plain["kernel"] == os.uname().release
    assert set(plain["opcodes"]) == set(OPCODE_NAMES.values())
    assert all(plain["opcodes"].values())
    assert "DEFER_TASKRUN" in plain["setup_flags"]
    assert "DEFER_TASKRUN" not in masked["setup_flags"]
    assert "EXT_ARG" in plain["features"]  # what the kernel offers ...
    assert (plain["ext_arg"], masked["ext_arg"]) == (True, False)  # ... and what we use
    assert (plain["buffer_rings"], masked["buffer_rings"]) == (True, False)
    assert plain["disabled"] == []
    assert masked["disabled"] == ["buffer_rings", "defer_taskrun", "ext_arg"]
    assert plain["strategies"]["loop wait"] != masked["strategies"]["loop wait"]
    assert plain["strategies"]["stream receive"] != masked["strategies"]["stream receive"]


def test_main_bad_mask_is_a_usage_error() -> None:
    proc = run_main(env={"ANYIO_URING_DISABLE": "turbo"})
    assert proc.returncode == 2
    assert "turbo" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_main_imports_only_the_ring_layer() -> None:
    """``__main__`` reports on the ring layer; it must not depend on the runtime."""
    import anyio_uring.__main__ as main_module

    tree = ast.parse(Path(main_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                imported.add("." * node.level + (node.module or ""))
            elif (node.module or "").startswith("anyio"):
                imported.add(str(node.module))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("anyio"))
    assert imported == {"._errors", "._ring", "._fallback"}
    # ... and the fallback decision it reports needs only the errors at import time
    import anyio_uring._fallback as fallback_module

    tree = ast.parse(Path(fallback_module.__file__).read_text())
    top_level = {
        "." * node.level + (node.module or "")
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level
    }
    assert top_level == {"._errors"}
