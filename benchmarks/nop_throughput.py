"""NOP throughput through the ring layer's Python API, against raw calls into the C core.

Usage: python benchmarks/nop_throughput.py [--runs 5] [--ops 200000] [--batches 1,16,256]

For each batch size B, one round queues B NOPs and then waits for all of them in one call:

* ``Ring API``: ``Ring.nop()`` per operation (an Operation object, a ledger entry, one cffi call
  to ``aur_prep_nop``), then ``Ring.wait(min_complete=B)`` per batch (one cffi call to
  ``aur_wait``, which submits, waits and copies the CQEs; then Python unpacks and dispatches
  every CQE to its Operation and runs its callback, here none).
* ``raw lib``: ``lib.aur_prep_nop`` per operation and ``lib.aur_wait`` per batch, with no
  Operation objects and no dispatch -- the floor the Python layer adds its cost to.
* ``obj floor``: the least any API that hands out one Python object per operation can do -- one
  Python function call per NOP that makes a two-slot object, writes the SQE with the same
  ``aur_prep_nop`` call and files the object in a dict; per CQE an unpack, a dict pop and one
  store.  No state machine, no memory ownership, no callbacks, no error handling: not a usable
  API, only the ceiling the Ring API can approach on this machine and interpreter.

"cffi calls/op" is counted from the code path (see ``calls_per_op``), not measured: one
``aur_prep_*`` per operation plus the ``aur_wait`` calls of a batch divided by B (one, plus one
more only if the CQE array filled up, which ``more`` reports).  "enters/op" is measured from the
ring's own syscall counter.  Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from anyio_uring._native import ffi, lib
from anyio_uring._ring import Ring
from anyio_uring._ring._probe import RingOptions


def calls_per_op(batch: int, wait_calls_per_batch: float) -> float:
    """cffi crossings per NOP: Ring.nop -> Ring._queue -> lib.aur_prep_nop (1 per op);
    Ring.wait -> lib.aur_wait (1 per batch, +1 per batch whose CQEs did not fit in one copy).
    Reading ``ring._c.more`` is a struct field access, not a call.  The raw path is the same."""
    return 1 + wait_calls_per_batch / batch


def run_ring_api(ring: Ring, total: int, batch: int) -> tuple[float, float]:
    """Returns (seconds, aur_wait calls per batch)."""
    rounds = total // batch
    nop = ring.nop
    wait = ring.wait
    extra_waits = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            nop()
        wait(None, batch)
        extra_waits += ring._c.more  # (never true here: the CQE array holds a whole batch)
    elapsed = time.perf_counter() - t0
    if ring.inflight:
        raise RuntimeError(f"{ring.inflight} NOPs did not complete")
    return elapsed, 1 + extra_waits / rounds


def run_raw(ring: Ring, total: int, batch: int) -> tuple[float, float]:
    rounds = total // batch
    c = ring._c
    cap = max(batch, 256)
    out = ffi.new("aur_cqe[]", cap)
    prep = lib.aur_prep_nop
    wait = lib.aur_wait
    waits = 0
    ud = 1 << 40  # far from the Ring's own user_data values (they are rejected if seen)
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            prep(c, ud, 0)
            ud += 1
        got = 0
        while got < batch:
            n = wait(c, batch - got, -1, out, cap)
            if n < 0:
                raise OSError(-n, os.strerror(-n))
            got += n
            waits += 1
    elapsed = time.perf_counter() - t0
    return elapsed, waits / rounds


class _FloorOp:
    __slots__ = ("result", "user_data")


def run_object_floor(ring: Ring, total: int, batch: int) -> tuple[float, float]:
    """Returns (seconds, aur_wait calls per batch) for the ``obj floor`` path (module docstring)."""
    rounds = total // batch
    c = ring._c
    cap = max(batch, 256)
    out = ffi.new("aur_cqe[]", cap)
    view = memoryview(ffi.buffer(out))
    unpack = struct.Struct("QiI").iter_unpack
    prep = lib.aur_prep_nop
    wait = lib.aur_wait
    from_slot = lib.AUR_UD_FROM_SLOT
    ops: dict[int, _FloorOp] = {}
    pop = ops.pop

    def nop() -> _FloorOp:
        op = _FloorOp()
        op.user_data = ud = prep(c, from_slot, 0) + 1
        ops[ud] = op
        return op

    waits = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(batch):
            nop()
        got = 0
        while got < batch:
            n = wait(c, batch - got, -1, out, cap)
            if n < 0:
                raise OSError(-n, os.strerror(-n))
            for ud, res, _flags in unpack(view[: n << 4]):
                op = pop(ud, None)
                if op is not None:
                    op.result = res
            got += n
            waits += 1
    elapsed = time.perf_counter() - t0
    if ops:
        raise RuntimeError(f"{len(ops)} NOPs did not complete")
    return elapsed, waits / rounds


def measure(
    fn: Callable[[Ring, int, int], tuple[float, float]], batch: int, total: int, runs: int
) -> dict[str, float]:
    total -= total % batch
    rates, waits, enters = [], [], []
    ring = Ring(RingOptions(entries=max(256, batch)))
    try:
        fn(ring, min(total, 10_000), batch)  # warm-up
        for _ in range(runs):
            before = ring._c.enters
            seconds, wait_calls = fn(ring, total, batch)
            rates.append(total / seconds)
            waits.append(wait_calls)
            enters.append((ring._c.enters - before) / total)
    finally:
        ring.close()
    rate = statistics.median(rates)
    return {
        "ops_per_s": rate,
        "ns_per_op": 1e9 / rate,
        "calls_per_op": calls_per_op(batch, statistics.median(waits)),
        "enters_per_op": statistics.median(enters),
        "spread": (max(rates) - min(rates)) / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200_000, help="NOPs per run")
    parser.add_argument("--batches", default="1,16,256")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    probe = Ring()
    flags = " ".join(probe.support.setup_flag_names()) or "(none)"
    probe.close()
    system = f"Linux {platform.release()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    print(f"NOP throughput: {system}")
    print(f"ring setup flags: {flags}; masked: {os.environ.get('ANYIO_URING_DISABLE') or '(none)'}")
    print(f"{args.ops} NOPs per run, median of {args.runs} runs\n")
    header = (
        f"{'path':<10} {'batch':>5} {'ops/s':>12} {'ns/op':>8} {'cffi calls/op':>14} "
        f"{'enters/op':>10} {'spread':>7}"
    )
    print(header)
    print("-" * len(header))
    for kind, fn in (("Ring API", run_ring_api), ("obj floor", run_object_floor), ("raw lib", run_raw)):
        for batch in batches:
            r = measure(fn, batch, args.ops, args.runs)
            print(
                f"{kind:<10} {batch:>5} {r['ops_per_s']:>12,.0f} {r['ns_per_op']:>8.0f} "
                f"{r['calls_per_op']:>14.4f} {r['enters_per_op']:>10.4f} {r['spread']:>6.0%}"
            )
    print("\nspread = (max - min) / median over the runs; this VM's numbers vary with other load.")


if __name__ == "__main__":
    main()
