"""The machinery the benchmark drivers share (``net_bench.py``, ``http_bench.py``).

A driver names its workloads in a ``dict[str, Workload]``; every measurement runs in a fresh
subprocess of the driver (``--single BACKEND:WORKLOAD:PARAMS``, which prints one JSON line), so
one backend's state never leaks into another's and a backend that fails or hangs shows as
``error: ...`` in the table instead of ending the run.  :func:`run_interleaved` runs every
backend once per workload per repetition, in turn, and does not retry a (workload, backend) that
failed once; :func:`print_table` shows the medians and, for uring, the ratio to the best peer.

Also here: :func:`server_process` (a server in a subprocess that prints its port on its first
stdout line), :func:`proc_cpu_seconds` (``/proc/PID/stat`` utime + stime), the environment line
(:func:`versions`) and the JSON dump of every sample (:func:`write_json`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anyio_bench import BACKENDS  # the backend table; puts src/ on sys.path

import anyio_uring

__all__ = [
    "BACKENDS",
    "REFERENCES",
    "Failure",
    "Params",
    "Workload",
    "last_line",
    "measure",
    "print_errors",
    "print_table",
    "proc_cpu_seconds",
    "raise_nofile_limit",
    "run_interleaved",
    "server_process",
    "short_reason",
    "single",
    "versions",
    "write_json",
]

#: Columns that are not backends under comparison but floors to read them against (net_bench's
#: ``--reference`` C echo server): shown in tables, never the "best peer".
REFERENCES: frozenset[str] = frozenset({"c-epoll"})

Results = dict[tuple[str, str], list[dict[str, Any]]]
Failed = dict[tuple[str, str], dict[str, Any]]


class Params(Protocol):
    """A driver's parameters: what ``--single`` gets on its command line."""

    duration: float

    def encode(self) -> str: ...


@dataclass(frozen=True)
class Workload:
    unit: str
    fn: Callable[[str, Any], dict[str, Any]]  # (backend, params) -> result; runs in --single
    less_is_better: bool = False
    timeout: float = 60.0  # seconds beyond 3 x --duration before the driver gives up


class Failure(Exception):
    """A failure reported by another process: ``kind`` names it in the table."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def short_reason(exc: BaseException) -> tuple[str, str]:
    """The first leaf of an exception group: (type name, 'Type: message' cut to 160 characters)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    name = exc.kind if isinstance(exc, Failure) else type(exc).__name__
    text = str(exc) if isinstance(exc, Failure) else f"{name}: {exc}".strip().rstrip(":")
    return name, text if len(text) <= 160 else text[:159] + "…"


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ============================================================================ one measurement


def single(workloads: dict[str, Workload], spec: str, decode: Callable[[str], Any]) -> None:
    """``--single BACKEND:WORKLOAD[:PARAMS]``: one measurement; one JSON line on stdout
    (``error`` on failure, exit status 1)."""
    backend, workload, *rest = spec.split(":", 2)
    raise_nofile_limit()
    try:
        result = workloads[workload].fn(backend, decode(rest[0] if rest else ""))
    except BaseException as exc:  # reported to the driver, which goes on
        traceback.print_exc()
        kind, text = short_reason(exc)
        print(json.dumps({"error": text, "error_type": kind}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)


def measure(script: str, workload: Workload, backend: str, name: str, p: Params) -> dict[str, Any]:
    """One ``--single`` subprocess of ``script``; its JSON line, or ``error``."""
    cmd = [sys.executable, script, "--single", f"{backend}:{name}:{p.encode()}"]
    timeout = 3 * p.duration + workload.timeout
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "error_type": "timeout"}
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        err = proc.stderr.strip().splitlines()
        text = err[-1] if err else f"exit status {proc.returncode}"
        return {"error": text[:160], "error_type": f"exit status {proc.returncode}"}
    if proc.returncode and "error" not in result:
        return {"error": f"exit status {proc.returncode}", "error_type": f"exit status {proc.returncode}"}
    return result


def run_interleaved(
    script: str,
    workloads: dict[str, Workload],
    names: Sequence[str],
    backends: Sequence[str],
    p: Params,
    reps: int,
    failed: Failed | None = None,
    applies: Callable[[str, str], bool] | None = None,
) -> tuple[Results, Failed]:
    """``reps`` repetitions of every (workload, backend), interleaved; a failure is not retried.

    ``failed`` may come pre-filled (a workload the driver knows cannot run): those are skipped.
    ``applies(workload, backend)`` false: not measured, shown as ``-`` (a reference that only
    serves some workloads).
    """
    import time

    results: Results = {(w, b): [] for w in names for b in backends}
    failed = {} if failed is None else failed
    t_start = time.perf_counter()
    for rep in range(reps):
        for name in names:
            for backend in backends:
                if (name, backend) in failed or (applies is not None and not applies(name, backend)):
                    continue
                result = measure(script, workloads[name], backend, name, p)
                if "error" in result:
                    failed[(name, backend)] = result
                else:
                    results[(name, backend)].append(result)
        elapsed = time.perf_counter() - t_start
        print(f"  repetition {rep + 1}/{reps} done ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    return results, failed


# ============================================================================ servers in subprocesses


@contextmanager
def server_process(cmd: list[str], what: str = "server") -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``cmd``, which prints its port alone on its first stdout line; yield (process, port).

    Raises :class:`Failure` if no port comes within 60 s; terminates the server on the way out
    (SIGTERM, then SIGKILL after 5 s) and raises :class:`Failure` ("server exited") if it had
    exited by itself.
    """
    with tempfile.NamedTemporaryFile("w+", prefix=f"bench-{what}-", suffix=".err") as err:
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(server.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
                line = server.stdout.readline() if sel.select(60) else ""  # type: ignore[union-attr]
            if not line.strip().isdigit():
                server.wait(5)
                text = last_line(Path(err.name)) or "no port printed"
                kind = text.split(":")[0] if text.split(":")[0].isidentifier() else what
                raise Failure(kind, f"{what}: {text}")
            try:
                yield server, int(line)
            except Exception as exc:  # a server that died explains the failure best
                if server.poll() is not None:
                    text = f"{what} exited ({server.returncode}): {last_line(Path(err.name))}"
                    raise Failure(f"{what} exited", text) from exc
                raise
            if server.poll() is not None:
                text = f"{what} exited ({server.returncode}): {last_line(Path(err.name))}"
                raise Failure(f"{what} exited", text)
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


# ============================================================================ output


def versions(extra: Sequence[str] = ()) -> str:
    system = f"Linux {platform.release()}, {os.cpu_count()} CPUs"
    names = [f"anyio {importlib.metadata.version('anyio')}", f"anyio_uring {anyio_uring.__version__}"]
    for dist in ("uvloop", "trio", *extra):
        try:
            names.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            names.append(f"{dist} absent")
    return f"Python {platform.python_version()}, {system}; " + ", ".join(names)


def print_table(
    workloads: dict[str, Workload],
    names: Sequence[str],
    backends: Sequence[str],
    results: Results,
    failed: Failed,
    *,
    key: str = "value",
    unit: str | None = None,
    less_is_better: bool | None = None,
    decimals: int | None = None,
    markdown: bool = False,
) -> None:
    """The medians of ``result[key]`` per (workload, backend), and uring's ratio to the best peer
    (> 1: uring is better, whichever way "better" goes; a column in :data:`REFERENCES` is shown
    but is no peer).  ``unit`` and ``less_is_better``
    override the workloads' own; rows without a sample of ``key`` anywhere are left out."""
    rows = [["workload", "unit", *backends, "uring vs best peer"]]
    for w in names:
        spec = WorkloadView(workloads[w], unit, less_is_better)
        values = {b: [r[key] for r in results[(w, b)] if r.get(key) is not None] for b in backends}
        if not any(values.values()) and not any((w, b) in failed for b in backends):
            continue
        medians = {b: statistics.median(v) for b, v in values.items() if v}
        digits = decimals if decimals is not None else (1 if spec.less_is_better else 0)
        row = [w, spec.unit]
        for b in backends:
            if (w, b) in failed:
                row.append(f"error: {failed[(w, b)]['error_type']}")
            elif b in medians:
                row.append(f"{medians[b]:,.{digits}f}")
            else:
                row.append("-")
        peers = [v for b, v in medians.items() if b != "uring" and b not in REFERENCES]
        if "uring" in medians and peers and medians["uring"]:
            ratio = min(peers) / medians["uring"] if spec.less_is_better else medians["uring"] / max(peers)
            row.append(f"{ratio:.2f}x")
        else:
            row.append("-")
        rows.append(row)
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    print()
    for i, cells in enumerate(rows):
        padded = [
            c.ljust(wd) if j < 2 else c.rjust(wd) for j, (c, wd) in enumerate(zip(cells, widths, strict=True))
        ]
        if markdown:
            print("| " + " | ".join(padded) + " |")
            if i == 0:
                print(
                    "|"
                    + "|".join("-" * (wd + 1) + (":" if j >= 2 else "-") for j, wd in enumerate(widths))
                    + "|"
                )
        else:
            print("  ".join(padded))
            if i == 0:
                print("-" * (sum(widths) + 2 * (len(widths) - 1)))


@dataclass(frozen=True)
class WorkloadView:
    """A workload's unit and direction, with the overrides of one table applied."""

    workload: Workload
    unit_override: str | None
    less_override: bool | None

    @property
    def unit(self) -> str:
        return self.unit_override if self.unit_override is not None else self.workload.unit

    @property
    def less_is_better(self) -> bool:
        return self.less_override if self.less_override is not None else self.workload.less_is_better


def print_errors(failed: Failed) -> None:
    errors: dict[tuple[str, str], list[str]] = {}
    for (w, b), result in failed.items():
        errors.setdefault((b, result["error"]), []).append(w)
    for (b, text), ws in errors.items():
        print(f"error on {b} ({', '.join(ws)}): {text}")


def write_json(
    path: str,
    workloads: dict[str, Workload],
    names: Sequence[str],
    backends: Sequence[str],
    results: Results,
    failed: Failed,
    params: dict[str, Any],
    extra_versions: Sequence[str] = (),
) -> None:
    """Every measurement, with the environment line and the parameters."""
    with open(path, "w") as out:
        json.dump(
            {
                "versions": versions(extra_versions),
                "params": params,
                "results": [
                    {
                        "workload": w,
                        "backend": b,
                        "unit": workloads[w].unit,
                        "values": [r["value"] for r in results[(w, b)]],
                        "samples": results[(w, b)],
                        "error": failed.get((w, b), {}).get("error"),
                    }
                    for w in names
                    for b in backends
                ],
            },
            out,
            indent=1,
        )
