"""httpcore's own test suite on the "uring" backend (conformance/httpcore_run.py), with trio as the
reference in the same run.

Fails on any uring failure (or xfail) of a test that passes on trio; failures shared by trio are
the machine's environment.  Takes about 15 seconds: httpcore's suite runs twice.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent.parent / "conformance" / "httpcore_run.py"
SUMMARY = re.compile(r"^httpcore-conformance (\w+): (\d+) passed, (\d+) failed, (\d+) skipped$")
ON_BACKEND = re.compile(r"^uring: \d+ s, (\d+) of \d+ tests parametrized with anyio_backend='uring'")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_httpcore_test_suite_passes_on_uring() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--backend", "uring", "--reference", "trio"],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, output
    summaries = [m for m in map(SUMMARY.match, lines[-2:]) if m]
    assert [m[1] for m in summaries] == ["trio", "uring"], output
    print("\n".join(lines[-2:]))
    assert proc.returncode == 0, output
    # It really ran the suite, and its async half on uring.
    assert int(summaries[1][2]) > 100, output
    on_backend = [int(m[1]) for m in map(ON_BACKEND.match, lines) if m]
    assert on_backend, output
    assert on_backend[0] > 50, output
