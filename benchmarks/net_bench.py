"""Network benchmarks through anyio: the same anyio socket code on every backend.

Usage: python benchmarks/net_bench.py [--reps 5] [--duration 2] [--only pingpong,echo-c64-*] [--pin]
       [--reference]
       [--backends asyncio,asyncio+uvloop,trio,uring] [--check] [--json results.json]
       python benchmarks/net_bench.py --single BACKEND:WORKLOAD[:duration=2,check=1,conns=9900]
       python benchmarks/net_bench.py --serve BACKEND   (the echo server alone; prints its port)

Backends: ``asyncio``, ``asyncio+uvloop``, ``trio`` and ``uring`` (the table of
``anyio_bench.py``).  Every measurement runs in a fresh ``--single`` subprocess, which prints one
JSON line, so one backend's state never leaks into another's and a backend that fails (or hangs)
shows as ``error: ...`` in the table instead of ending the run; a (backend, workload) that failed
once is not retried in later repetitions.  Runs are interleaved (every backend once per workload
per repetition, in turn); the table shows the median of ``--reps`` repetitions and, for uring,
the ratio to the best of the peers (> 1: uring is better, for ``idle`` too, where less is better).

Workloads, all over real loopback TCP (``anyio.create_tcp_listener`` on 127.0.0.1, port 0, which
sets SO_REUSEADDR; ``anyio.connect_tcp``); set-up and connection establishment are not timed:

* in-process (client and server in the same ``anyio.run()``, task groups; the server echoes
  whatever it receives, ``receive(65536)`` then ``send()``; a client reads until its whole
  message is back):
  ``pingpong``: 64-byte request/response on one connection, round trips/s;
  ``rr64x1k``, ``rr64x16k``: 64 connections each doing 1 KiB / 16 KiB request/response, total
  round trips/s;
  ``stream256m``: 256 MiB over one connection in 64 KiB sends to a task counting bytes, MiB/s.
* outside load, ``echo-c{1,64,500}-m{1k,16k,100k}``: the same echo server alone in a subprocess
  (``--serve``) on the backend under test, driven by ``loadgen.c`` (epoll, one thread, C; built
  with gcc on first use and whenever the source is newer): N connections, closed-loop M-byte
  request/response for ``--duration`` s after a warm-up; round trips/s (p50/p99 latency in the
  JSON).  Two processes on one machine: the load generator takes a CPU of its own; ``--pin``
  puts the server on CPU 0 and the load generator on CPU 1 (``taskset``), for steadier
  one-connection rows.  ``--reference`` adds a column ``c-epoll``: ``echo_ref.c``, the same
  echo service in C (epoll, read 64 KiB, write it back), built the same way -- what the kernel
  and the load generator leave as the ceiling on this machine; it is no peer (not in the ratio).
* ``idle``: ``conns`` (9,900) idle connections, both ends in one process (the soft
  RLIMIT_NOFILE is raised to the hard limit): the server has a task per connection blocked in
  ``await stream.receive()``, the client holds its streams.  VmRSS before opening them and once
  every receiver is waiting (a counter, then a short sleep): KiB per connection, both ends.

Connections are long-lived within a measurement, and the clients close first, so TIME_WAIT
lands on the clients' ephemeral ports; each measurement's listener has a new port, so the kernel
reuses them for the next one (three 9,900-connection ``idle`` runs within 20 s, more than the
28,232-port range, work).

``--check`` compares every echoed byte with what was sent (a CRC for ``stream256m``): a
correctness pass, slower, not a benchmark.  ``--only`` takes names or shell patterns
(``echo-*``).  These are benchmarks: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
from anyio.abc import SocketAttribute, SocketStream
from bench_common import (  # the shared driver; puts src/ on sys.path
    BACKENDS,
    Failure,
    Workload,
    print_errors,
    print_table,
    raise_nofile_limit,
    run_interleaved,
    server_process,
    single,
    versions,
    write_json,
)

BENCH_DIR = Path(__file__).resolve().parent
KiB = 1024
MiB = 1024 * KiB
HOST = "127.0.0.1"
LOADGEN_SRC = BENCH_DIR / "loadgen.c"
ECHO_REF_SRC = BENCH_DIR / "echo_ref.c"
C_BIN_DIR = Path(tempfile.gettempdir()) / f"anyio_uring_netbench-{os.getuid()}"
#: The ``--reference`` column: the C echo server (``echo_ref.c``), for echo-* rows only.
REFERENCE = "c-epoll"


@dataclass(frozen=True)
class Params:
    duration: float = 2.0
    check: bool = False
    conns: int = 9900  # idle
    pin: bool = False  # echo-*: the server on CPU 0, the load generator on CPU 1

    def encode(self) -> str:
        return f"duration={self.duration},check={int(self.check)},conns={self.conns},pin={int(self.pin)}"

    @classmethod
    def decode(cls, text: str) -> Params:
        kw = dict(item.split("=") for item in text.split(",") if item)
        p = cls()
        return cls(
            duration=float(kw.pop("duration", p.duration)),
            check=kw.pop("check", str(int(p.check))) not in ("0", ""),
            conns=int(kw.pop("conns", p.conns)),
            pin=kw.pop("pin", str(int(p.pin))) not in ("0", ""),
            **kw,  # an unknown key: TypeError
        )


# ============================================================================ in-process


async def echo_handler(stream: SocketStream) -> None:
    """The echo server's connection task (in-process and ``--serve``)."""
    async with stream:
        while True:
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                return
            await stream.send(data)


async def with_echo_server(
    body: Callable[[int], Awaitable[dict[str, Any]]], handler: Any = echo_handler
) -> dict[str, Any]:
    async with await anyio.create_tcp_listener(local_host=HOST) as listener:
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            result = await body(port)
            tg.cancel_scope.cancel()
    return result


async def client_loop(stream: SocketStream, messages: list[bytes], deadline: float, check: bool) -> int:
    """Request/response until ``deadline``: send a message, read until all of it is back."""
    send, receive, clock = stream.send, stream.receive, time.perf_counter
    size = len(messages[0])
    n = 0
    while True:
        for message in messages:
            await send(message)
            if check:
                parts = []
                got = 0
                while got < size:
                    parts.append(await receive(size - got))
                    got += len(parts[-1])
                if b"".join(parts) != message:
                    raise RuntimeError(f"echoed bytes differ after {n} round trips")
            else:
                got = 0
                while got < size:
                    got += len(await receive(size - got))
        n += len(messages)
        if clock() >= deadline:
            return n


async def bench_rr(p: Params, conns: int, size: int) -> dict[str, Any]:
    async def body(port: int) -> dict[str, Any]:
        streams = [await anyio.connect_tcp(HOST, port) for _ in range(conns)]
        messages = [os.urandom(size) for _ in range(4)]
        counts: list[int] = []
        async with anyio.create_task_group() as tg:  # warm-up: one round trip per connection
            for stream in streams:
                tg.start_soon(client_loop, stream, messages[:1], 0.0, True)

        async def run(stream: SocketStream) -> None:
            counts.append(await client_loop(stream, messages, deadline, p.check))

        t0 = time.perf_counter()
        deadline = t0 + p.duration
        async with anyio.create_task_group() as tg:
            for stream in streams:
                tg.start_soon(run, stream)
        elapsed = time.perf_counter() - t0
        for stream in streams:
            await stream.aclose()
        return {"value": sum(counts) / elapsed, "round_trips": sum(counts), "seconds": elapsed}

    return await with_echo_server(body)


async def bench_stream(p: Params) -> dict[str, Any]:
    total, chunk = 256 * MiB, 64 * KiB
    chunks = [os.urandom(chunk) for _ in range(17)]  # 17: the stream does not repeat every 64 KiB
    done = anyio.Event()
    got: dict[str, Any] = {}

    async def receiver(stream: SocketStream) -> None:
        n = crc = 0
        async with stream:
            while True:
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    break
                n += len(data)
                if p.check:
                    crc = zlib.crc32(data, crc)
        got.update(bytes=n, crc=crc, t1=time.perf_counter())
        done.set()

    async def body(port: int) -> dict[str, Any]:
        async with await anyio.connect_tcp(HOST, port) as stream:
            t0 = time.perf_counter()
            for i in range(total // chunk):
                await stream.send(chunks[i % len(chunks)])
        await done.wait()
        if got["bytes"] != total:
            raise RuntimeError(f"received {got['bytes']} of {total} bytes")
        if p.check:
            crc = 0
            for i in range(total // chunk):
                crc = zlib.crc32(chunks[i % len(chunks)], crc)
            if crc != got["crc"]:
                raise RuntimeError("received bytes differ from the sent ones (CRC)")
        elapsed = got["t1"] - t0
        return {"value": total / MiB / elapsed, "seconds": elapsed}

    return await with_echo_server(body, receiver)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def bench_idle(p: Params) -> dict[str, Any]:
    n = p.conns
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if 2 * n + 100 > limit:
        raise RuntimeError(f"{n} connections need {2 * n + 100} fds; RLIMIT_NOFILE is {limit}")
    waiting = finished = 0
    all_waiting, all_finished = anyio.Event(), anyio.Event()

    async def handler(stream: SocketStream) -> None:
        nonlocal waiting, finished
        async with stream:
            waiting += 1
            if waiting == n:
                all_waiting.set()
            try:
                data = await stream.receive()
            except anyio.EndOfStream:
                pass
            else:
                raise RuntimeError(f"an idle connection received {len(data)} bytes")
        finished += 1
        if finished == n:
            all_finished.set()

    async def body(port: int) -> dict[str, Any]:
        gc.collect()
        await anyio.sleep(0.2)
        before = rss_kib()
        streams: list[SocketStream] = []

        async def connector(count: int) -> None:
            for _ in range(count):
                streams.append(await anyio.connect_tcp(HOST, port))

        t0 = time.perf_counter()
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:  # 8 connectors at once
                for i in range(8):
                    tg.start_soon(connector, n // 8 + (i < n % 8))
            await all_waiting.wait()
        established = time.perf_counter() - t0
        await anyio.sleep(0.5)
        gc.collect()
        after = rss_kib()
        for stream in streams:
            await stream.aclose()
        with anyio.fail_after(120):
            await all_finished.wait()
        return {
            "value": (after - before) / n,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "connect_seconds": established,
            "conns": n,
        }

    return await with_echo_server(body, handler)


# ============================================================================ outside load


def build_c(src: Path) -> Path:
    """``gcc -O2`` one of the benchmark's C programs into a temporary directory, unless the
    binary there is up to date."""
    binary = C_BIN_DIR / src.stem
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    C_BIN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"{src.stem}.{os.getpid()}")
    subprocess.run(["gcc", "-O2", "-o", str(tmp), str(src)], check=True)
    os.replace(tmp, binary)
    return binary


def build_loadgen() -> Path:
    return build_c(LOADGEN_SRC)


async def serve_echo() -> None:
    async with await anyio.create_tcp_listener(local_host=HOST) as listener:
        print(listener.extra(SocketAttribute.local_port), flush=True)
        await listener.serve(echo_handler)


def pinning(pin: bool) -> tuple[list[str], list[str]]:
    """Command prefixes that put the server on CPU 0 and the load generator on CPU 1 (``taskset``),
    or nothing: left alone, the scheduler may put both on one CPU and migrate them, which is
    what makes the one-connection rows swing by several times between runs."""
    if not pin:
        return [], []
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if len(cpus) < 2 or taskset is None:
        raise RuntimeError("--pin needs two CPUs and taskset (util-linux)")
    return [taskset, "-c", str(cpus[0])], [taskset, "-c", str(cpus[1])]


def bench_echo(backend: str, p: Params, conns: int, size: int) -> dict[str, Any]:
    loadgen = build_loadgen()
    warmup = min(0.5, p.duration / 2)
    server_cpu, client_cpu = pinning(p.pin)
    if backend == REFERENCE:
        server = [str(build_c(ECHO_REF_SRC))]
    else:
        server = [sys.executable, __file__, "--serve", backend]
    with server_process([*server_cpu, *server]) as (_, port):
        cmd = [*client_cpu, str(loadgen), "-p", str(port), "-c", str(conns), "-m", str(size)]
        cmd += ["-d", str(p.duration), "-w", str(warmup)] + (["-k"] if p.check else [])
        out = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=p.duration + warmup + 60
        )
        lines = out.stdout.strip().splitlines()
        result: dict[str, Any] = (
            json.loads(lines[-1]) if lines else {"error": f"no output, {out.stderr.strip()}"}
        )
        if "error" in result:
            raise Failure("loadgen", f"loadgen: {result['error']}")
    result["value"] = result["rate"]
    return result


# ============================================================================ workloads


def in_process(
    coro_fn: Callable[..., Awaitable[dict[str, Any]]], *args: Any
) -> Callable[[str, Params], dict[str, Any]]:
    def run(backend: str, p: Params) -> dict[str, Any]:
        spec = BACKENDS[backend]
        if spec is None:
            raise RuntimeError(f"{backend} is not installed")
        result: dict[str, Any] = anyio.run(coro_fn, p, *args, backend=spec[0], backend_options=spec[1])
        return result

    return run


def outside(conns: int, size: int) -> Callable[[str, Params], dict[str, Any]]:
    return lambda backend, p: bench_echo(backend, p, conns, size)


WORKLOADS: dict[str, Workload] = {
    "pingpong": Workload("rt/s", in_process(bench_rr, 1, 64)),
    "rr64x1k": Workload("rt/s", in_process(bench_rr, 64, KiB)),
    "rr64x16k": Workload("rt/s", in_process(bench_rr, 64, 16 * KiB)),
    "stream256m": Workload("MiB/s", in_process(bench_stream)),
}
for _conns in (1, 64, 500):
    for _label, _size in (("1k", KiB), ("16k", 16 * KiB), ("100k", 100 * KiB)):
        WORKLOADS[f"echo-c{_conns}-m{_label}"] = Workload("rt/s", outside(_conns, _size))
WORKLOADS["idle"] = Workload("KiB/conn", in_process(bench_idle), less_is_better=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per timed measurement")
    parser.add_argument("--only", default="", help="comma-separated workload names or patterns")
    parser.add_argument("--backends", default="", help="comma-separated (default: every installed one)")
    parser.add_argument("--conns", type=int, default=9900, help="idle connections (both ends in one process)")
    parser.add_argument("--check", action="store_true", help="compare echoed data with what was sent")
    parser.add_argument("--pin", action="store_true", help="echo-*: server on CPU 0, loadgen on CPU 1")
    parser.add_argument(
        "--reference",
        action="store_true",
        help=f"echo-*: also measure the C echo server (echo_ref.c) as column {REFERENCE!r}, no peer",
    )
    parser.add_argument("--json", default=None, help="also write every measurement to this file")
    parser.add_argument("--single", default="", help="BACKEND:WORKLOAD[:key=value,...] -- one measurement")
    parser.add_argument("--serve", default="", metavar="BACKEND", help="run the echo server; print its port")
    args = parser.parse_args()
    if args.single:
        single(WORKLOADS, args.single, Params.decode)
        return
    if args.serve:
        raise_nofile_limit()
        spec = BACKENDS[args.serve]
        assert spec is not None, f"{args.serve} is not installed"
        anyio.run(serve_echo, backend=spec[0], backend_options=spec[1])
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
    params = Params(duration=args.duration, check=args.check, conns=args.conns, pin=args.pin)
    if any(w.startswith("echo-") for w in workloads):
        build_loadgen()
        if args.reference:
            build_c(ECHO_REF_SRC)
            backends.append(REFERENCE)

    print(versions())
    if args.check:
        print("--check: every echoed byte is compared (slower; not a benchmark)")
    results, failed = run_interleaved(
        __file__,
        WORKLOADS,
        workloads,
        backends,
        params,
        args.reps,
        applies=lambda workload, backend: backend != REFERENCE or workload.startswith("echo-"),
    )
    if args.json:
        params_json = {"reps": args.reps, **params.__dict__}
        write_json(args.json, WORKLOADS, workloads, backends, results, failed, params_json)

    print_table(WORKLOADS, workloads, backends, results, failed)
    print(f"\nmedians of {args.reps} runs of {args.duration:g} s; rt/s: round trips per second;")
    print("idle: KiB of RSS per connection (both ends; less is better); ratio > 1: uring is better")
    print_errors(failed)


if __name__ == "__main__":
    main()
