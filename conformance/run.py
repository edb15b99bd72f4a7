#!/usr/bin/env python3
"""Run anyio's own test suite against the anyio backend ``"uring"``.

    python conformance/run.py [--backend uring|trio] [--reference trio|none] [-k EXPR]

1. Downloads the sdist of the *installed* anyio version from PyPI (``pip download anyio==X
   --no-binary :all: --no-deps``) and extracts its ``tests/`` and ``pyproject.toml`` (anyio's
   pytest configuration: warnings are errors, 20 s per test, ...) into ``conformance/_cache/``.
2. Runs pytest on that suite once per backend -- the reference backend (trio by default) first,
   then the backend under test -- each in its own process, with two plugins from this directory:
   ``anyio_uring_conformance`` (checks that anyio really runs the backend, keeps only the tests
   parametrized with it, records every outcome) and, for uring, ``anyio_uring_conformance_backends``
   (makes "uring" one of anyio's backends, also in the pytest processes pytester starts).
3. Classifies each failure of the backend under test:

   * *expected*: listed in ``expected-failures.txt`` (one test id per line, then ``  # reason``):
     documented limitations (none today);
   * *environment*: the same test fails on the reference backend in the same run (no IPv6
     ``localhost``, no DNS, ...);
   * *unexpected*: anything else.

The run fails (exit status 1) on any unexpected failure and on any expected failure that passes
now (the list must shrink as features land).  ``--update-expected`` adds the unexpected failures
whose error is the backend's own "sockets are not yet supported" error and drops entries that
pass.  The last line printed is ``anyio-conformance <backend>: P passed, F failed, S skipped``
(xfailed tests count as skipped; errors in set-up or tear-down count as failed).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_cache"
EXPECTED_FILE = HERE / "expected-failures.txt"

#: Modules anyio's test suite imports (its "test" dependency group), by distribution name.
TEST_REQUIREMENTS = {
    "pytest": "pytest",
    "pytest_mock": "pytest-mock",
    "pytest_timeout": "pytest-timeout",
    "trustme": "trustme",
    "truststore": "truststore",
    "hypothesis": "hypothesis",
    "psutil": "psutil",
    "trio": "trio",
}
_EXPECTED_LINE = re.compile(r"^(?P<id>\S.*?)\s+#\s+(?P<reason>\S.*)$")


# ------------------------------------------------------------------------------------------
# the suite
# ------------------------------------------------------------------------------------------


def anyio_version() -> str:
    try:
        return version("anyio")
    except PackageNotFoundError:
        sys.exit("anyio-conformance: anyio is not installed in this environment")


def check_requirements() -> None:
    import importlib.util

    missing = [dist for module, dist in TEST_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(
            f"anyio-conformance: anyio's test suite needs {', '.join(missing)}; "
            'install them with: pip install ".[test]"'
        )


@contextmanager
def _cache_lock() -> Iterator[None]:
    """Serializes downloads between runs that share the cache (e.g. two test sessions)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch_suite(anyio: str) -> Path:
    """The extracted test suite of anyio ``anyio`` (downloaded once, then cached)."""
    dest = CACHE / f"anyio-{anyio}"
    with _cache_lock():
        if not (dest / ".complete").exists():
            _download_suite(anyio, dest)
    return dest


def _download_suite(anyio: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", f"anyio=={anyio}",
                "--no-binary", ":all:", "--no-deps", "--dest", tmp,
            ],
            check=True,
        )  # fmt: skip
        sdists = list(Path(tmp).glob("anyio-*.tar.gz"))
        if len(sdists) != 1:
            sys.exit(f"anyio-conformance: expected one anyio sdist from pip, got {sdists}")
        extracted = Path(tmp, "x")
        with tarfile.open(sdists[0]) as tar:
            prefix = f"anyio-{anyio}/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
            ]
            tar.extractall(extracted, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(extracted / f"anyio-{anyio}", dest)
        (dest / ".complete").write_text(f"anyio {anyio} test suite from {sdists[0].name}\n")


def new_run_dir(keep: int = 5) -> Path:
    """A directory for this run's logs and reports (runs may overlap); older ones are pruned."""
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir()
    return run_dir


# ------------------------------------------------------------------------------------------
# running it
# ------------------------------------------------------------------------------------------


@dataclass
class Report:
    backend: str
    results: dict[str, dict[str, Any]]
    seconds: float
    log: Path

    def count(self, *outcomes: str) -> int:
        return sum(1 for r in self.results.values() if r["outcome"] in outcomes)

    def summary(self) -> str:
        passed = self.count("passed")
        failed = self.count("failed")
        skipped = self.count("skipped", "xfailed")
        return f"anyio-conformance {self.backend}: {passed} passed, {failed} failed, {skipped} skipped"

    def failed_keys(self) -> set[str]:
        return {r["key"] for r in self.results.values() if r["outcome"] == "failed"}


def run_suite(
    suite: Path,
    run_dir: Path,
    backend: str,
    keyword: str | None,
    extra: list[str],
    targets: list[str] | None = None,
) -> Report:
    """Run the suite (or only the test ids ``targets``: a re-run) on ``backend``."""
    name = backend if targets is None else f"{backend}-rerun"
    report_path = run_dir / f"{name}.json"
    log_path = run_dir / f"{name}.log"
    env = dict(os.environ)
    if targets is not None:
        env["ANYIO_CONFORMANCE_RERUN"] = "1"  # the selection may hold no uring-parametrized test
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env["ANYIO_CONFORMANCE_BACKEND"] = backend
    env["ANYIO_CONFORMANCE_REPORT"] = str(report_path)
    if backend == "uring":
        plugins = [p for p in env.get("PYTEST_PLUGINS", "").split(",") if p]
        env["PYTEST_PLUGINS"] = ",".join([*plugins, "anyio_uring_conformance_backends"])
    cmd = [
        sys.executable, "-m", "pytest", "-p", "anyio_uring_conformance", "-p", "no:cacheprovider",
        "--rootdir", str(suite), "-c", str(suite / "pyproject.toml"), "--tb=short", "-q",
        "-m", "not network", *(targets if targets is not None else ["tests"]),
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    cmd += extra
    what = "anyio's tests" if targets is None else f"{len(targets)} failed test(s) again, alone"
    print(f"anyio-conformance: running {what} on {backend} (log: {log_path})", flush=True)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if proc.returncode not in (0, 1) or not report_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\n".join(tail))
        sys.exit(
            f"anyio-conformance: pytest on {backend} exited with status {proc.returncode} (see {log_path})"
        )
    data = json.loads(report_path.read_text(encoding="utf-8"))
    return Report(backend, data["results"], seconds, log_path)


# ------------------------------------------------------------------------------------------
# judging it
# ------------------------------------------------------------------------------------------


def read_expected(path: Path = EXPECTED_FILE) -> dict[str, str]:
    """``{test id: reason}`` from the expected-failures file."""
    expected: dict[str, str] = {}
    if not path.exists():
        return expected
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _EXPECTED_LINE.match(line.strip())
        if match is None:
            sys.exit(f"{path}:{number}: expected '<test id>  # <reason>', got {line!r}")
        expected[match["id"]] = match["reason"]
    return expected


def _category(test_id: str) -> str:
    if test_id.startswith("tests/streams/test_tls.py"):
        return "TLS over sockets"
    if test_id.startswith("tests/test_sockets.py"):
        return "sockets"
    return "streams over sockets"


def write_expected(entries: dict[str, str], path: Path = EXPECTED_FILE) -> None:
    header = [
        "# anyio tests expected to fail on the anyio backend 'uring' (see run.py), one per line:",
        "#   <test id>  # <one-line reason>",
        "# Only documented, justified limitations belong here (there are none today: every test that",
        "# passes on trio passes on uring). conformance/run.py fails when a listed test passes.",
    ]
    width = max((len(test_id) for test_id in entries), default=0)
    lines = [f"{test_id.ljust(width)}  # {reason}" for test_id, reason in sorted(entries.items())]
    path.write_text("\n".join([*header, *lines]) + "\n", encoding="utf-8")


@dataclass
class Verdict:
    expected: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    now_passing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.now_passing or self.missing)


def judge(target: Report, reference: Report | None, expected: dict[str, str], filtered: bool) -> Verdict:
    verdict = Verdict()
    reference_failures = reference.failed_keys() if reference is not None else set()
    for test_id, result in sorted(target.results.items()):
        if result["outcome"] == "failed":
            if test_id in expected:
                verdict.expected.append(test_id)
            elif result["key"] in reference_failures:
                verdict.environment.append(test_id)
            else:
                verdict.unexpected.append(test_id)
        elif result["outcome"] == "passed" and test_id in expected:
            verdict.now_passing.append(test_id)
    if not filtered:
        verdict.missing = sorted(set(expected) - set(target.results))
    return verdict


def update_expected(expected: dict[str, str], verdict: Verdict, target: Report) -> dict[str, str]:
    """Rewrite the expected-failures file from this run; return the new entries.

    Added: unexpected failures whose error is the backend's own "sockets are not yet
    supported".  Removed: entries that pass now, and entries that were not run.  Nothing else is
    ever added -- failures that the reference backend shares stay out (they depend on the machine:
    no IPv6 ``localhost``, no DNS) and are told apart by the comparison in each run instead.
    """
    updated = {k: v for k, v in expected.items() if k not in verdict.now_passing and k not in verdict.missing}
    added: list[str] = []
    for test_id in verdict.unexpected:
        what = target.results[test_id].get("sockets")
        if what:
            updated[test_id] = f"{_category(test_id)}: needs {what}"
            added.append(test_id)
    write_expected(updated)
    removed = len(expected) + len(added) - len(updated)
    print(f"anyio-conformance: {EXPECTED_FILE.name}: {len(added)} added, {removed} removed")
    verdict.unexpected = [t for t in verdict.unexpected if t not in updated]
    verdict.expected += added
    verdict.now_passing = []
    verdict.missing = []
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("uring", "trio"), default="uring", help="backend under test")
    parser.add_argument(
        "--reference",
        choices=("trio", "none"),
        default=None,
        help="backend run first for comparison (default: trio when testing uring)",
    )
    parser.add_argument("-k", "--k", dest="keyword", help="only run tests matching this pytest -k expression")
    parser.add_argument(
        "--update-expected",
        action="store_true",
        help="add unexpected socket-only failures to expected-failures.txt and drop entries that pass",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    reference_backend = args.reference or ("trio" if args.backend == "uring" else "none")
    if reference_backend == args.backend:
        reference_backend = "none"

    check_requirements()
    anyio = anyio_version()
    suite = fetch_suite(anyio)
    print(f"anyio-conformance: anyio {anyio} test suite ({suite})", flush=True)
    expected = read_expected() if args.backend == "uring" else {}

    run_dir = new_run_dir()
    reference = None
    if reference_backend != "none":
        reference = run_suite(suite, run_dir, reference_backend, args.keyword, args.pytest_args)
    target = run_suite(suite, run_dir, args.backend, args.keyword, args.pytest_args)
    filtered = bool(args.keyword or args.pytest_args)
    verdict = judge(target, reference, expected, filtered)

    if args.update_expected:
        expected = update_expected(expected, verdict, target)
    if verdict.unexpected:
        # anyio's suite has tests with tight wall-clock limits (pytester subprocesses given 3 s):
        # on a loaded machine they can time out.  Run the unexpected failures once more, alone;
        # a test that passes then is reported as flaky (with its first failure), not a failure.
        rerun = run_suite(suite, run_dir, args.backend, None, [], targets=verdict.unexpected)
        verdict.flaky = [t for t in verdict.unexpected if rerun.results.get(t, {}).get("outcome") == "passed"]
        verdict.unexpected = [t for t in verdict.unexpected if t not in verdict.flaky]

    def show(title: str, test_ids: list[str], detail: bool = True) -> None:
        if not test_ids:
            return
        print(f"\n{title} ({len(test_ids)}):")
        for test_id in test_ids:
            result = target.results.get(test_id, {})
            message = " ".join(str(result.get("message", "")).split())[:200]
            print(
                f"  {test_id}"
                + (f"\n      {result.get('when', '')}: {message}" if detail and message else "")
            )

    show("UNEXPECTED failures", verdict.unexpected)
    show("flaky: failed, then passed when re-run alone", verdict.flaky)
    show(
        "expected failures that PASS now (remove them from expected-failures.txt)", verdict.now_passing, False
    )
    show("entries of expected-failures.txt that were not run (stale ids?)", verdict.missing, False)
    show(f"failing on {reference_backend} too (environment)", verdict.environment)
    if args.backend == "uring":
        listed = len(expected)
        print(f"\nexpected failures (documented limitations): {len(verdict.expected)} of {listed} listed")
    for report in (reference, target):
        if report is not None:
            print(f"{report.backend}: {report.seconds:.0f} s, log {report.log}")
    print("verdict: " + ("OK" if verdict.ok else "FAILED"))
    if reference is not None:
        print(reference.summary())
    print(target.summary(), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
