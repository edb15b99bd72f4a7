"""Third-party test suites on the "uring" backend, with trio as the reference in the same run:
anyio's own suite (conformance/run.py) and httpcore's (conformance/httpcore_run.py).

Each fails on any uring failure that is neither a documented limitation
(conformance/expected-failures.txt for anyio; none today) nor shared by trio (the machine's
environment), and on any listed failure that passes now.  anyio's takes a few minutes (its suite
runs twice), httpcore's about 15 seconds.
"""

from __future__ import annotations

import faulthandler
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
ON_BACKEND = re.compile(r"^uring: \d+ s, (\d+) of \d+ tests parametrized with anyio_backend='uring'")


def run_suite(runner: str, label: str, timeout: float) -> list[str]:
    """Run ``conformance/<runner>`` on uring with trio as the reference; assert that it passed
    and printed both summary lines.  Returns its output lines and prints the summaries; the
    last two lines are ``<label> trio: ...`` and ``<label> uring: ...``."""
    proc = subprocess.run(
        [sys.executable, str(CONFORMANCE / runner), "--backend", "uring", "--reference", "trio"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, output
    summary = re.compile(rf"^{re.escape(label)} (\w+): (\d+) passed, (\d+) failed, (\d+) skipped$")
    summaries = [m for m in map(summary.match, lines[-2:]) if m]
    assert [m[1] for m in summaries] == ["trio", "uring"], output
    print("\n".join(lines[-2:]))
    assert proc.returncode == 0, output
    return lines


def passed_on_uring(lines: list[str]) -> int:
    """The ``passed`` count of the uring summary line (``run_suite``'s last line)."""
    return int(lines[-1].split(": ", 1)[1].split()[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_anyio_test_suite_passes_on_uring() -> None:
    # Minutes by design: no stack dump at faulthandler_timeout. The suite's own tests have
    # 20-second timeouts, and pytest-timeout bounds this test.
    faulthandler.cancel_dump_traceback_later()
    lines = run_suite("run.py", "anyio-conformance", timeout=1700)
    assert passed_on_uring(lines) > 500, lines[-2:]  # it really ran the suite


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_httpcore_test_suite_passes_on_uring() -> None:
    lines = run_suite("httpcore_run.py", "httpcore-conformance", timeout=500)
    # It really ran the suite, and its async half on uring.
    assert passed_on_uring(lines) > 100, lines[-2:]
    on_backend = [int(m[1]) for m in map(ON_BACKEND.match, lines) if m]
    assert on_backend, lines
    assert on_backend[0] > 50, lines
