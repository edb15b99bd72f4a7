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

   A test that *passes* on the reference backend and is an expected failure (xfail) on the
   backend under test counts as a failure of the backend (it is one, hidden by the suite's
   non-strict xfail).

The run fails (exit status 1) on any unexpected failure and on any expected failure that passes
now (the list must shrink as features land).  ``--update-expected`` adds the unexpected failures
whose error is the backend's own "sockets are not yet supported" error and drops entries that
pass.  The last line printed is ``anyio-conformance <backend>: P passed, F failed, S skipped``
(xfailed tests count as skipped; errors in set-up or tear-down count as failed).

The machinery is not anyio-specific: a ``SuiteSpec`` names the distribution whose sdist holds the
tests, the modules they import and the pytest arguments they need, and ``main(spec=...)`` runs it.
``httpcore_run.py`` runs httpcore's test suite that way.
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
ANYIO_TEST_REQUIREMENTS = {
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


@dataclass(frozen=True)
class SuiteSpec:
    """A third-party test suite to run on the backends: what differs between anyio's and others."""

    #: The distribution whose PyPI sdist holds the tests (``tests/`` and ``pyproject.toml``, its
    #: pytest configuration); the installed version's sdist is used.
    dist: str
    #: ``{module: distribution}`` that the suite imports; checked before anything runs.
    requirements: dict[str, str]
    #: Extra pytest arguments for every run of the suite.
    pytest_args: tuple[str, ...] = ()
    #: Documented failures on uring (see ``read_expected``); None: the suite has none.
    expected_file: Path | None = None
    #: pytest options for every pytest process of a run, the ones pytester starts too
    #: (``PYTEST_ADDOPTS``): plugins the suite does not use, which only slow each start down.
    addopts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The prefix of every line the runner prints, e.g. ``anyio-conformance``."""
        return f"{self.dist}-conformance"


ANYIO = SuiteSpec(
    dist="anyio",
    requirements=ANYIO_TEST_REQUIREMENTS,
    pytest_args=("-m", "not network"),
    expected_file=EXPECTED_FILE,
    # pytest-httpbin (a test extra, for httpcore's suite) imports Flask at every start; anyio's
    # pytester tests give their pytest subprocesses 3 s.
    addopts=("-p", "no:httpbin"),
)


# ------------------------------------------------------------------------------------------
# the suite
# ------------------------------------------------------------------------------------------


def installed_version(spec: SuiteSpec) -> str:
    try:
        return version(spec.dist)
    except PackageNotFoundError:
        sys.exit(f"{spec.label}: {spec.dist} is not installed in this environment")


def check_requirements(spec: SuiteSpec) -> None:
    import importlib.util

    missing = [dist for module, dist in spec.requirements.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(
            f"{spec.label}: {spec.dist}'s test suite needs {', '.join(missing)}; "
            'install them with: pip install ".[test]"'
        )


@contextmanager
def _cache_lock() -> Iterator[None]:
    """Serializes downloads between runs that share the cache (e.g. two test sessions)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch_suite(spec: SuiteSpec, release: str) -> Path:
    """The extracted test suite of ``spec.dist`` version ``release`` (downloaded once, then cached)."""
    dest = CACHE / f"{spec.dist}-{release}"
    with _cache_lock():
        if not (dest / ".complete").exists():
            _download_suite(spec, release, dest)
    return dest


def _download_suite(spec: SuiteSpec, release: str, dest: Path) -> None:
    """Only ``tests/`` and ``pyproject.toml``: never the package's own sources, so that the tests
    import the installed package."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", f"{spec.dist}=={release}",
                "--no-binary", ":all:", "--no-deps", "--dest", tmp,
            ],
            check=True,
        )  # fmt: skip
        sdists = list(Path(tmp).glob(f"{spec.dist}-*.tar.gz"))
        if len(sdists) != 1:
            sys.exit(f"{spec.label}: expected one {spec.dist} sdist from pip, got {sdists}")
        extracted = Path(tmp, "x")
        with tarfile.open(sdists[0]) as tar:
            prefix = f"{spec.dist}-{release}/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
            ]
            tar.extractall(extracted, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(extracted / f"{spec.dist}-{release}", dest)
        (dest / ".complete").write_text(f"{spec.dist} {release} test suite from {sdists[0].name}\n")


def new_run_dir(spec: SuiteSpec, keep: int = 5) -> Path:
    """A directory for this run's logs and reports (runs may overlap); older ones are pruned."""
    runs = CACHE / f"runs-{spec.dist}"
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
    label: str
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
        return f"{self.label} {self.backend}: {passed} passed, {failed} failed, {skipped} skipped"

    def keys(self, outcome: str) -> set[str]:
        return {r["key"] for r in self.results.values() if r["outcome"] == outcome}

    def on_backend(self) -> int:
        """How many of the tests ran on the backend (the others take no ``anyio_backend``)."""
        return sum(1 for r in self.results.values() if r.get("on_backend"))


def run_suite(
    spec: SuiteSpec,
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
    env["ANYIO_CONFORMANCE_LABEL"] = spec.label
    if spec.addopts:
        env["PYTEST_ADDOPTS"] = " ".join(p for p in (env.get("PYTEST_ADDOPTS"), *spec.addopts) if p)
    # pytest rewrites the asserts of every plugin's distribution (all of hypothesis) and caches
    # the result as bytecode; with PYTHONDONTWRITEBYTECODE set it redoes that at every start
    # (~2 s here), which the suites' pytester tests (3 s timeouts) cannot afford.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if backend == "uring":
        plugins = [p for p in env.get("PYTEST_PLUGINS", "").split(",") if p]
        env["PYTEST_PLUGINS"] = ",".join([*plugins, "anyio_uring_conformance_backends"])
        # Where io_uring is blocked a uring run would fall back to trio's loop (anyio_uring's
        # _fallback.py): here that is an error, not a second trio run.
        env["ANYIO_URING_FALLBACK"] = "0"
    cmd = [
        sys.executable, "-m", "pytest", "-p", "anyio_uring_conformance", "-p", "no:cacheprovider",
        "--rootdir", str(suite), "-c", str(suite / "pyproject.toml"), "--tb=short", "-q",
        *spec.pytest_args, *(targets if targets is not None else ["tests"]),
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    cmd += extra
    what = f"{spec.dist}'s tests" if targets is None else f"{len(targets)} failed test(s) again, alone"
    print(f"{spec.label}: running {what} on {backend} (log: {log_path})", flush=True)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if proc.returncode not in (0, 1) or not report_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\n".join(tail))
        sys.exit(f"{spec.label}: pytest on {backend} exited with status {proc.returncode} (see {log_path})")
    data = json.loads(report_path.read_text(encoding="utf-8"))
    return Report(spec.label, backend, data["results"], seconds, log_path)


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


def write_expected(entries: dict[str, str], path: Path) -> None:
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
    reference_failures = reference.keys("failed") if reference is not None else set()
    reference_passes = reference.keys("passed") if reference is not None else set()
    for test_id, result in sorted(target.results.items()):
        if result["outcome"] == "failed":
            if test_id in expected:
                verdict.expected.append(test_id)
            elif result["key"] in reference_failures:
                verdict.environment.append(test_id)
            else:
                verdict.unexpected.append(test_id)
        elif result["outcome"] == "xfailed" and result["key"] in reference_passes:
            verdict.unexpected.append(test_id)  # XPASS on the reference (a non-strict xfail)
        elif result["outcome"] == "passed" and test_id in expected:
            verdict.now_passing.append(test_id)
    if not filtered:
        verdict.missing = sorted(set(expected) - set(target.results))
    return verdict


def update_expected(
    expected: dict[str, str], verdict: Verdict, target: Report, path: Path = EXPECTED_FILE
) -> dict[str, str]:
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
    write_expected(updated, path)
    removed = len(expected) + len(added) - len(updated)
    print(f"{target.label}: {path.name}: {len(added)} added, {removed} removed")
    verdict.unexpected = [t for t in verdict.unexpected if t not in updated]
    verdict.expected += added
    verdict.now_passing = []
    verdict.missing = []
    return updated


def main(argv: list[str] | None = None, spec: SuiteSpec = ANYIO, description: str | None = __doc__) -> int:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("uring", "trio"), default="uring", help="backend under test")
    parser.add_argument(
        "--reference",
        choices=("trio", "none"),
        default=None,
        help="backend run first for comparison (default: trio when testing uring)",
    )
    parser.add_argument("-k", "--k", dest="keyword", help="only run tests matching this pytest -k expression")
    if spec.expected_file is not None:
        parser.add_argument(
            "--update-expected",
            action="store_true",
            help=f"add unexpected socket-only failures to {spec.expected_file.name}, drop entries that pass",
        )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    reference_backend = args.reference or ("trio" if args.backend == "uring" else "none")
    if reference_backend == args.backend:
        reference_backend = "none"

    check_requirements(spec)
    release = installed_version(spec)
    suite = fetch_suite(spec, release)
    print(f"{spec.label}: {spec.dist} {release} test suite ({suite})", flush=True)
    expected = {}
    if spec.expected_file is not None and args.backend == "uring":
        expected = read_expected(spec.expected_file)

    run_dir = new_run_dir(spec)
    reference = None
    if reference_backend != "none":
        reference = run_suite(spec, suite, run_dir, reference_backend, args.keyword, args.pytest_args)
    target = run_suite(spec, suite, run_dir, args.backend, args.keyword, args.pytest_args)
    filtered = bool(args.keyword or args.pytest_args)
    verdict = judge(target, reference, expected, filtered)

    if spec.expected_file is not None and args.update_expected:
        expected = update_expected(expected, verdict, target, spec.expected_file)
    if verdict.unexpected:
        # anyio's suite has tests with tight wall-clock limits (pytester subprocesses given 3 s):
        # on a loaded machine they can time out.  Run the unexpected failures once more, alone;
        # a test that passes then is reported as flaky (with its first failure), not a failure.
        rerun = run_suite(spec, suite, run_dir, args.backend, None, [], targets=verdict.unexpected)
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

    show("UNEXPECTED failures (or xfails of tests that pass on the reference)", verdict.unexpected)
    show("flaky: failed, then passed when re-run alone", verdict.flaky)
    show(
        "expected failures that PASS now (remove them from expected-failures.txt)", verdict.now_passing, False
    )
    show("entries of expected-failures.txt that were not run (stale ids?)", verdict.missing, False)
    show(f"failing on {reference_backend} too (environment)", verdict.environment)
    if spec.expected_file is not None and args.backend == "uring":
        listed = len(expected)
        print(f"\nexpected failures (documented limitations): {len(verdict.expected)} of {listed} listed")
    for report in (reference, target):
        if report is not None:
            print(
                f"{report.backend}: {report.seconds:.0f} s, {report.on_backend()} of {len(report.results)} "
                f"tests parametrized with anyio_backend={report.backend!r}, log {report.log}"
            )
    print("verdict: " + ("OK" if verdict.ok else "FAILED"))
    if reference is not None:
        print(reference.summary())
    print(target.summary(), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
