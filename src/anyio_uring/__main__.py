"""``python -m anyio_uring``: what the running kernel's io_uring supports and what we will use.

Creates one ring with the default options (honouring ``ANYIO_URING_DISABLE``), prints its probe
and closes it.  Only the ring layer is imported, never the runtime.  Exit status: 0 when io_uring
works, 1 when it is unavailable (the message names the cause and the remedy), 2 on bad usage
(for example an unknown name in ``ANYIO_URING_DISABLE``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._errors import IoUringUnavailableError
from ._fallback import falls_back
from ._ring import FEATURES, OPCODE_NAMES, KernelSupport, RingOptions

#: IORING_FEAT_* bit names, by bit number (kernel ABI).
FEATURE_BITS: dict[int, str] = {
    0: "SINGLE_MMAP", 1: "NODROP", 2: "SUBMIT_STABLE", 3: "RW_CUR_POS", 4: "CUR_PERSONALITY",
    5: "FAST_POLL", 6: "POLL_32BITS", 7: "SQPOLL_NONFIXED", 8: "EXT_ARG", 9: "NATIVE_WORKERS",
    10: "RSRC_TAGS", 11: "CQE_SKIP", 12: "LINKED_FILE", 13: "REG_REG_RING", 14: "RECVSEND_BUNDLE",
    15: "MIN_TIMEOUT", 16: "RW_ATTR", 17: "NO_IOWAIT",
}  # fmt: skip


def _feature_names(features: int) -> list[str]:
    return [FEATURE_BITS.get(bit, f"bit{bit}") for bit in range(32) if features & (1 << bit)]


def _report(support: KernelSupport) -> dict[str, Any]:
    return {
        "kernel": support.kernel_release,
        "available": True,
        "sq_entries": support.sq_entries,
        "cq_entries": support.cq_entries,
        "setup_flags": support.setup_flag_names(),
        "features": _feature_names(support.features),
        "ext_arg": support.ext_arg,
        "registered_fd": support.registered_fd,
        "buffer_rings": support.buffer_rings,
        "opcodes": {name: num in support.opcodes for num, name in sorted(OPCODE_NAMES.items())},
        "disabled": sorted(support.disabled),
        "strategies": support.strategies(),
    }


def _print_text(report: dict[str, Any]) -> None:
    opcodes: dict[str, bool] = report["opcodes"]
    missing = [name for name, ok in opcodes.items() if not ok]
    print(f"kernel:       Linux {report['kernel']}")
    print("io_uring:     available")
    print(f"ring:         sq={report['sq_entries']} cq={report['cq_entries']}")
    print(f"setup flags:  {' '.join(report['setup_flags']) or '(none)'}")
    print(f"features:     {' '.join(report['features']) or '(none)'}")
    uses = ("ext_arg", "registered_fd", "buffer_rings")
    print(f"in use:       {' '.join(f'{key}={report[key]}' for key in uses)}")
    print(f"opcodes:      {sum(opcodes.values())}/{len(opcodes)} of those anyio_uring uses are supported")
    print(f"  supported:  {' '.join(name for name, ok in opcodes.items() if ok)}")
    print(f"  missing:    {' '.join(missing) or '(none)'}")
    masked = ", ".join(report["disabled"]) or "(none; mask with ANYIO_URING_DISABLE=name,...)"
    print(f"masked:       {masked}")
    print("strategies:")
    width = max(len(k) for k in report["strategies"])
    for key, value in report["strategies"].items():
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anyio_uring",
        description="Show what the running kernel's io_uring supports and which paths anyio_uring uses.",
        epilog=f"Maskable features (ANYIO_URING_DISABLE=a,b,...): {', '.join(sorted(FEATURES))}",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    from ._ring import Ring

    try:
        options = RingOptions()
    except ValueError as exc:
        print(f"anyio_uring: {exc}", file=sys.stderr)
        return 2
    try:
        ring = Ring(options)
    except IoUringUnavailableError as exc:
        message = exc.strerror or str(exc)  # the text naming cause and remedy, without "[Errno n]"
        if args.json:
            failure = {"kernel": os.uname().release, "available": False, "errno": exc.errno, "error": message}
            print(json.dumps(failure, indent=2))
        print(f"anyio_uring: {message}", file=sys.stderr)
        if falls_back(exc, None):
            print(
                "anyio_uring: programs still run: anyio.run(..., backend='uring') and anyio_uring.run() "
                "use trio's loop here (slower, same semantics; ANYIO_URING_FALLBACK=0 makes it an error)",
                file=sys.stderr,
            )
        return 1
    try:
        report = _report(ring.support)
    finally:
        ring.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `python -m anyio_uring | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
