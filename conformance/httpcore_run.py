#!/usr/bin/env python3
"""Run httpcore's own test suite against the anyio backend ``"uring"``.

    python conformance/httpcore_run.py [--backend uring|trio] [--reference trio|none] [-k EXPR]

The same runner as ``run.py`` (anyio's suite), on the sdist of the *installed* httpcore version:
its ``tests/`` and ``pyproject.toml`` (its pytest configuration) are cached in
``conformance/_cache/httpcore-X/`` and the suite runs once on trio, the reference, and once on
uring, each in its own pytest process.

httpcore's async tests are ``@pytest.mark.anyio`` tests without a conftest: they take anyio's
default ``anyio_backend`` fixture, parametrized over anyio's backends.  The plugin
``anyio_uring_conformance_backends`` adds ``"uring"`` to those (as for anyio's suite) and
``anyio_uring_conformance`` keeps only the tests parametrized with the backend of the run.  The
tests that take no ``anyio_backend`` -- the ``_sync`` half of the suite, and a few
``@pytest.mark.trio`` tests (pytest-trio, httpcore's trio backend) -- run in both processes and
are compared all the same; the summary says how many ran on the backend.

A uring failure of a test that fails on trio too is the environment's (reported, not fatal); any
other uring failure, or a uring xfail of a test that passes on trio, fails the run.  There is no
expected-failures list: every test that passes on trio must pass on uring.  httpcore's three
non-strict xfails (HTTP/2 timeouts in ``test_cancellations.py``) depend on timing: they usually
pass on both backends and may xfail on either under load; like any uring failure, a uring xfail
where trio passed is run once more, alone, and reported as flaky if it passes then.  The last line
printed is ``httpcore-conformance <backend>: P passed, F failed, S skipped``.
"""

from __future__ import annotations

import sys

from run import SuiteSpec, main

HTTPCORE = SuiteSpec(
    dist="httpcore",
    # What httpcore's tests import (its requirements.txt, less the linters and docs): the
    # ``http2`` and ``socks`` extras, the local httpbin server fixtures and pytest-trio.
    requirements={
        "pytest": "pytest",
        "pytest_timeout": "pytest-timeout",
        "pytest_httpbin": "pytest-httpbin",
        "pytest_trio": "pytest-trio",
        "trio": "trio",
        "h2": "h2",
        "hpack": "hpack",
        "hyperframe": "hyperframe",
        "socksio": "socksio",
    },
    # httpcore's configuration sets no time limit; a hang must not stop the run.
    pytest_args=("--timeout", "30"),
)

if __name__ == "__main__":
    sys.exit(main(spec=HTTPCORE, description=__doc__))
