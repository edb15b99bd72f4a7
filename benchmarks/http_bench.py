"""HTTP benchmarks: ``examples/http_server.py`` (h11 on anyio streams) on every backend.

Usage: python benchmarks/http_bench.py [--reps 3] [--duration 5] [--only httpx-*,wrk-c64]
       [--backends asyncio,asyncio+uvloop,trio,uring] [--json results.json]
       python benchmarks/http_bench.py --single BACKEND:WORKLOAD[:duration=5,warmup=1]
       python benchmarks/http_bench.py --profile uring [--profile-conns 64] [--duration 5]

The driver is ``net_bench.py``'s (``bench_common.py``): backends ``asyncio``, ``asyncio+uvloop``,
``trio`` and ``uring``; every measurement in a fresh ``--single`` subprocess; runs interleaved
(every backend once per workload per repetition, in turn); the tables show the median of
``--reps`` repetitions and uring's ratio to the best peer (> 1: uring is better).

Workloads (GET ``/``: a 14-byte body with Content-Length; keep-alive throughout):

* in-process, ``httpx-c{1,32}``: one ``httpx.AsyncClient`` (keep-alive pool as large as the
  concurrency) and N tasks each doing GETs in a loop, against the example server in the same
  ``anyio.run()`` on the same backend, after a warm-up (one request per task, then
  ``warmup`` s of load); requests/s, and the process's CPU time per request (client + server).
  httpx needs httpcore to accept the backend (sniffio's name): where it does not, the table says
  ``error: RuntimeError``.
* outside load, ``wrk-c{1,64,256}`` (GET ``/``) and ``wrk-c64-16k`` (GET ``/bytes/16384``): the
  example server alone in a subprocess (``examples/http_server.py --backend ... --port 0``)
  driven by ``wrk -t1 -cN`` for ``duration`` s after a ``warmup`` s run; requests/s (wrk's
  ``Requests/sec``; p99 latency in a table, p50 too in the JSON; wrk's request timeout is
  30 s) and the server's CPU time per request (utime + stime from ``/proc/PID/stat`` around
  the timed run).  wrk takes a CPU of its own: on a 2-core
  machine the server has the other one.  Any non-2xx response or socket error fails the
  measurement.  wrk comes from the distribution (``apt-get install wrk``) or
  https://github.com/wg/wrk; without it the wrk rows say ``error: no wrk``.

``--profile BACKEND`` runs the server under cProfile for one wrk run (``--profile-conns``
connections, ``--duration`` s) and prints where it spent its time per request: the top
functions by own time and the totals per package (h11, anyio, the backend, the example).
cProfile slows everything down (more so for many small Python calls), so read the shares, not
the absolute numbers.  These are benchmarks: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
from bench_common import (  # the shared driver; puts src/ on sys.path
    BACKENDS,
    Failed,
    Failure,
    Workload,
    print_errors,
    print_table,
    proc_cpu_seconds,
    run_interleaved,
    server_process,
    single,
    versions,
    write_json,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "http_server.py"
HOST = "127.0.0.1"
WRK_HINT = "wrk not found: install it (apt-get install wrk, or build https://github.com/wg/wrk)"


@dataclass(frozen=True)
class Params:
    duration: float = 5.0
    warmup: float = 1.0

    def encode(self) -> str:
        return f"duration={self.duration},warmup={self.warmup}"

    @classmethod
    def decode(cls, text: str) -> Params:
        kw = dict(item.split("=") for item in text.split(",") if item)
        p = cls()
        return cls(
            duration=float(kw.pop("duration", p.duration)),
            warmup=float(kw.pop("warmup", p.warmup)),
            **kw,  # an unknown key: TypeError
        )


def load_example() -> ModuleType:
    """``examples/http_server.py`` as the module ``http_server`` (it is not a package)."""
    if "http_server" in sys.modules:
        return sys.modules["http_server"]
    spec = importlib.util.spec_from_file_location("http_server", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_server"] = module  # before exec: its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


# ============================================================================ in-process: httpx


async def bench_httpx(p: Params, concurrency: int, path: str = "/") -> dict[str, Any]:
    import httpx

    hs = load_example()
    expected = hs.HELLO if path == "/" else None
    clock = time.perf_counter

    async with hs.running_server(0, HOST) as (port, stats):
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits) as client:
            get = client.get
            counts: list[int] = []

            async def loop(deadline: float, record: bool) -> None:
                n = 0
                while True:
                    response = await get(path)
                    if response.status_code != 200 or (expected is not None and response.content != expected):
                        raise RuntimeError(
                            f"unexpected response {response.status_code}: {response.content[:80]!r}"
                        )
                    n += 1
                    if clock() >= deadline:
                        break
                if record:
                    counts.append(n)

            async with anyio.create_task_group() as tg:  # warm-up: the connections, then load
                for _ in range(concurrency):
                    tg.start_soon(loop, 0.0, False)
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(loop, clock() + p.warmup, False)
            cpu0, t0 = time.process_time(), clock()
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(loop, t0 + p.duration, True)
            elapsed, cpu = clock() - t0, time.process_time() - cpu0
        total = sum(counts)
        return {
            "value": total / elapsed,
            "requests": total,
            "seconds": elapsed,
            "cpu_us_per_req": cpu / total * 1e6,
            "connections": stats.connections_opened,
            "server_errors": stats.errors,
        }


# ============================================================================ outside load: wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's (``--latency``) report: requests/s, request count, latency percentiles, errors."""
    result: dict[str, Any] = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise Failure("wrk", f"wrk: no Requests/sec in its output: {out.strip()[-160:]!r}")
    result["rate"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", out, re.M)
    if m:
        result["requests"] = int(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            result[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(m.group(1)) if m else 0
    return result


def server_cmd(backend: str, prefix: list[str] | None = None) -> list[str]:
    """The command line of the example server on ``backend`` (a row of ``BACKENDS``)."""
    spec = BACKENDS[backend]
    if spec is None:
        raise RuntimeError(f"{backend} is not installed")
    name, options = spec
    cmd = [sys.executable, *(prefix or []), str(EXAMPLE), "--backend", name, "--port", "0"]
    return cmd + (["--uvloop"] if options.get("use_uvloop") else [])


def run_wrk(port: int, conns: int, duration: float, path: str) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise Failure("no wrk", WRK_HINT)
    # wrk's default 2 s request timeout counts slow responses as socket errors and closes those
    # connections: at 256 connections every peer backend had some (their p99 is 1-3 s here),
    # which failed the row instead of measuring it.  30 s keeps errors for real failures; the
    # tail shows up in p99.
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "30s"]
    cmd.append(f"http://{HOST}:{port}{path}")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode:
        raise Failure("wrk", f"wrk exit status {out.returncode}: {out.stderr.strip()[-160:]}")
    return parse_wrk(out.stdout)


def bench_wrk(backend: str, p: Params, conns: int, path: str) -> dict[str, Any]:
    with server_process(server_cmd(backend)) as (server, port):
        if p.warmup > 0:
            run_wrk(port, conns, p.warmup, path)
        cpu0 = proc_cpu_seconds(server.pid)
        result = run_wrk(port, conns, p.duration, path)
        cpu = proc_cpu_seconds(server.pid) - cpu0
    if result["non_2xx"] or result["socket_errors"]:
        raise Failure(
            "bad responses", f"{result['non_2xx']} non-2xx responses, {result['socket_errors']} socket errors"
        )
    result["value"] = result["rate"]
    if result.get("requests"):
        result["cpu_us_per_req"] = cpu / result["requests"] * 1e6
        result["server_cpu_share"] = cpu / p.duration
    return result


# ============================================================================ workloads


def in_process(concurrency: int, path: str = "/") -> Any:
    def run(backend: str, p: Params) -> dict[str, Any]:
        spec = BACKENDS[backend]
        if spec is None:
            raise RuntimeError(f"{backend} is not installed")
        result: dict[str, Any] = anyio.run(
            bench_httpx, p, concurrency, path, backend=spec[0], backend_options=spec[1]
        )
        return result

    return run


def outside(conns: int, path: str = "/") -> Any:
    return lambda backend, p: bench_wrk(backend, p, conns, path)


WORKLOADS: dict[str, Workload] = {
    "httpx-c1": Workload("req/s", in_process(1)),
    "httpx-c32": Workload("req/s", in_process(32)),
    "wrk-c1": Workload("req/s", outside(1)),
    "wrk-c64": Workload("req/s", outside(64)),
    "wrk-c256": Workload("req/s", outside(256)),
    "wrk-c64-16k": Workload("req/s", outside(64, "/bytes/16384")),
}


# ============================================================================ --profile


def _package(filename: str) -> str:
    """A coarse owner for a profiled function: which library its file belongs to."""
    if filename == "~":
        return "builtins (C)"
    parts = Path(filename).parts
    for name in ("h11", "anyio_uring", "anyio", "trio", "uvloop", "sniffio"):
        if name in parts:
            return name
    if filename == str(EXAMPLE) or filename.endswith("http_server.py"):
        return "examples/http_server.py"
    if "asyncio" in parts:
        return "asyncio"
    return "stdlib/other"


def profile(backend: str, conns: int, p: Params, top: int = 30) -> None:
    """cProfile the server under one wrk run; print its costs per request."""
    with tempfile.TemporaryDirectory(prefix="httpbench-prof-") as tmp:
        out = os.path.join(tmp, "server.prof")
        with server_process(server_cmd(backend, ["-m", "cProfile", "-o", out])) as (_, port):
            warm = run_wrk(port, conns, p.warmup, "/") if p.warmup > 0 else {"requests": 0}
            result = run_wrk(port, conns, p.duration, "/")
        stats = pstats.Stats(out)
    # every request of the profile's lifetime, the warm-up's too (a coroutine's "calls" in
    # cProfile are its resumptions, so no function's call count is the request count)
    requests = int(result.get("requests", 0) + warm.get("requests", 0))
    print(f"{backend}: cProfile of the server under wrk -t1 -c{conns}, {requests:,} requests profiled")
    print(f"(rate under the profiler {result['rate']:,.0f} req/s; times are per request)\n")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for _, v in rows)
    print(f"{'own us/req':>10} {'cum us/req':>10} {'calls/req':>9} {'share':>6}  function")
    for (filename, line, func), (_, nc, tt, ct, _) in rows[:top]:
        where = f"{Path(filename).name}:{line}" if filename != "~" else ""
        print(
            f"{tt / requests * 1e6:>10.2f} {ct / requests * 1e6:>10.2f} {nc / requests:>9.2f} "
            f"{tt / total:>6.1%}  {func} {where}"
        )
    by_package: dict[str, float] = {}
    for (filename, _, _), (_, _, tt, _, _) in rows:
        key = _package(filename)
        by_package[key] = by_package.get(key, 0.0) + tt
    print(f"\nown time per package (total {total / requests * 1e6:.1f} us/request under cProfile):")
    for key, tt in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True):
        print(f"  {key:<26} {tt / requests * 1e6:>8.2f} us/req {tt / total:>6.1%}")


# ============================================================================ driver


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each one")
    parser.add_argument("--only", default="", help="comma-separated workload names or patterns")
    parser.add_argument("--backends", default="", help="comma-separated (default: every installed one)")
    parser.add_argument("--json", default=None, help="also write every measurement to this file")
    parser.add_argument("--single", default="", help="BACKEND:WORKLOAD[:key=value,...] -- one measurement")
    parser.add_argument("--profile", default="", metavar="BACKEND", help="cProfile the server under wrk")
    parser.add_argument("--profile-conns", type=int, default=64)
    args = parser.parse_args()
    params = Params(duration=args.duration, warmup=args.warmup)
    if args.single:
        single(WORKLOADS, args.single, Params.decode)
        return
    if args.profile:
        if shutil.which("wrk") is None:
            parser.error(WRK_HINT)
        profile(args.profile, args.profile_conns, params)
        return

    patterns = [w.strip() for w in args.only.split(",") if w.strip()] or ["*"]
    workloads = [w for w in WORKLOADS if any(fnmatch.fnmatchcase(w, pat) for pat in patterns)]
    if not workloads:
        parser.error(f"no workload matches {args.only!r}; workloads: {', '.join(WORKLOADS)}")
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()] or list(BACKENDS)
    for b in wanted:
        if b not in BACKENDS:
            parser.error(f"unknown backend {b!r}; backends: {', '.join(BACKENDS)}")
    backends = [b for b in wanted if BACKENDS[b] is not None]
    failed: Failed = {}
    if shutil.which("wrk") is None and any(w.startswith("wrk-") for w in workloads):
        print(f"{WRK_HINT}; the wrk-* rows are skipped", file=sys.stderr)
        for w in workloads:
            if w.startswith("wrk-"):
                for b in backends:
                    failed[(w, b)] = {"error": WRK_HINT, "error_type": "no wrk"}

    print(versions(("h11", "httpx", "httpcore")))
    results, failed = run_interleaved(__file__, WORKLOADS, workloads, backends, params, args.reps, failed)
    if args.json:
        params_json = {"reps": args.reps, **params.__dict__}
        write_json(args.json, WORKLOADS, workloads, backends, results, failed, params_json, ("h11", "httpx"))

    tables = [
        ("requests per second (more is better)", "value", None),
        ("CPU time per request, us (httpx-*: the whole process, client and server; wrk-*: the server)",
         "cpu_us_per_req", "us/req"),
        ("p99 latency under wrk, ms (wrk's --latency; the in-process rows have none)", "p99_ms", "ms"),
    ]  # fmt: skip
    for title, key, unit in tables:
        print(f"\n{title}:")
        less = None if unit is None else True  # None: the workloads' own direction (req/s)
        print_table(
            WORKLOADS, workloads, backends, results, failed,
            key=key, unit=unit, less_is_better=less, markdown=True,
        )  # fmt: skip
    print(f"\nmedians of {args.reps} runs of {args.duration:g} s after {args.warmup:g} s of warm-up;")
    print("ratio > 1: uring is better (for CPU per request: uses less)")
    print_errors(failed)


if __name__ == "__main__":
    main()
