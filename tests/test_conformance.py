"""anyio's own test suite on the "uring" backend (conformance/run.py), with trio as the
reference in the same run.

Fails on any failure that is neither listed in conformance/expected-failures.txt (documented
limitations; none today) nor shared by trio (the machine's environment), and on any listed failure that
passes now.  Takes a few minutes: anyio's suite runs twice.
"""

from __future__ import annotations

import faulthandler
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent.parent / "conformance" / "run.py"
SUMMARY = re.compile(r"^anyio-conformance (\w+): (\d+) passed, (\d+) failed, (\d+) skipped$")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_anyio_test_suite_passes_on_uring() -> None:
    # Minutes by design: no stack dump at faulthandler_timeout. The suite's own tests have
    # 20-second timeouts, and pytest-timeout bounds this test.
    faulthandler.cancel_dump_traceback_later()
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--backend", "uring", "--reference", "trio"],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, output
    summaries = [m for m in map(SUMMARY.match, lines[-2:]) if m]
    assert [m[1] for m in summaries] == ["trio", "uring"], output
    print("\n".join(lines[-2:]))
    assert proc.returncode == 0, output
    assert int(summaries[1][2]) > 500, output  # it really ran the suite
