"""Where io_uring is blocked, programs still run -- on trio's loop, after one warning.

Each cause is made real in a subprocess: a seccomp filter answering ``io_uring_setup`` with
``EPERM`` (Docker's default profile) or ``ENOSYS`` (a filter that hides the call; kernels without
io_uring), and ``sysctl kernel.io_uring_disabled=2`` (set for the few seconds of one subprocess
and restored; root only).  In each, one program goes through every way into a run --
``anyio.run(backend="uring")`` twice, ``anyio_uring.run``, a blocking portal and anyio's pytest
plugin -- and each does sockets, files (``anyio_uring.open_file``/``Path``), threads, timeouts.
The backend option ``fallback=False`` and ``ANYIO_URING_FALLBACK=0`` make the cause an error.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support import env_without, run_captured
from test_unavailable import AUDIT_ARCH, SECCOMP

pytestmark = pytest.mark.skipif(AUDIT_ARCH is None, reason="no seccomp arch constant for this machine")

PROGRAM = textwrap.dedent(
    r"""
    import json, os, subprocess, sys, tempfile, warnings

    import anyio, anyio.abc, sniffio
    from anyio.from_thread import start_blocking_portal

    import anyio_uring

    async def work():
        out = {"sniffio": sniffio.current_async_library()}
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(5)
        out["timeout"] = scope.cancelled_caught

        async def echo(stream):
            async with stream:
                await stream.send(await stream.receive())

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                out["echo"] = (await client.receive()).decode()
            tg.cancel_scope.cancel()
        path = anyio_uring.Path(tempfile.mkdtemp()) / "f"
        await path.write_bytes(b"data")
        async with await anyio_uring.open_file(path, "rb") as f:
            out["file"] = (await f.read()).decode()
        out["stat"] = (await path.stat()).st_size
        out["thread"] = await anyio.to_thread.run_sync(lambda: 42)
        try:
            await anyio_uring.sleep(0.001)
        except RuntimeError as exc:
            out["native_api"] = str(exc)
        return out

    PLUGIN_TEST = '''
    import anyio, pytest, sniffio

    @pytest.fixture
    def anyio_backend():
        return "uring"

    @pytest.mark.anyio
    async def test_on_the_fallback():
        assert sniffio.current_async_library() == "trio"
        with anyio.fail_after(5):
            await anyio.sleep(0.01)
    '''

    results = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results["anyio.run"] = anyio.run(work, backend="uring")
        results["anyio.run again"] = anyio.run(work, backend="uring")
        results["anyio_uring.run"] = anyio_uring.run(work)
        with start_blocking_portal(backend="uring") as portal:
            results["portal"] = portal.call(work)
        for name, call in [
            ("option", lambda: anyio.run(work, backend="uring", backend_options={"fallback": False})),
            ("native option", lambda: anyio_uring.run(work, fallback=False)),
        ]:
            try:
                call()
            except anyio_uring.IoUringUnavailableError as exc:
                results[name] = f"error {exc.errno}"
    results["warnings"] = [
        str(w.message) for w in caught if issubclass(w.category, anyio_uring.IoUringFallbackWarning)
    ]
    results["other warnings"] = [
        str(w.message) for w in caught if not issubclass(w.category, anyio_uring.IoUringFallbackWarning)
    ]

    workdir = tempfile.mkdtemp()
    with open(os.path.join(workdir, "test_plugin.py"), "w") as f:
        f.write(PLUGIN_TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "anyio", "-p", "no:cacheprovider",
         "--rootdir", workdir, "-W", "default", "test_plugin.py"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    results["pytest"] = {"returncode": proc.returncode, "output": proc.stdout + proc.stderr}

    env = dict(os.environ, ANYIO_URING_FALLBACK="0")
    proc = subprocess.run(
        [sys.executable, "-c",
         "import anyio\nasync def main(): pass\nanyio.run(main, backend='uring')"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    results["environment"] = {"returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    print(json.dumps(results))
    """
)

WORK = {
    "sniffio": "trio",
    "timeout": True,
    "echo": "ping",
    "file": "data",
    "stat": 4,
    "thread": 42,
}


def _python(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` with the test's environment (plus ``env``), output captured."""
    base = env_without("ANYIO_URING_DISABLE", "ANYIO_URING_FALLBACK")
    return run_captured([sys.executable, *args], timeout=timeout, env={**base, **env})


def _check(results: dict[str, Any], err: int, cause_words: list[str]) -> None:
    for entry in ("anyio.run", "anyio.run again", "anyio_uring.run", "portal"):
        work = results[entry]
        native = work.pop("native_api")
        assert work == WORK, entry
        assert "trio's loop" in native
        assert "fallback for a blocked io_uring" in native
    assert results["option"] == f"error {err}"
    assert results["native option"] == f"error {err}"
    # one warning for the whole process, naming the cause, the remedy and how to make it an error
    [warning] = results["warnings"]
    for word in [*cause_words, "Remedy", "running on trio's loop instead", "ANYIO_URING_FALLBACK=0"]:
        assert word in warning, (word, warning)
    assert results["other warnings"] == []
    pytest_run = results["pytest"]
    assert pytest_run["returncode"] == 0, pytest_run["output"]
    assert "1 passed" in pytest_run["output"]
    assert "IoUringFallbackWarning" in pytest_run["output"]
    environment = results["environment"]
    assert environment["returncode"] == 1
    assert "IoUringUnavailableError" in environment["stderr"]
    assert "IoUringFallbackWarning" not in environment["stderr"]


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (errno.EPERM, ["EPERM", "io_uring_disabled", "seccomp"]),
        (errno.ENOSYS, ["ENOSYS", "seccomp", "Linux >= 6.1"]),
    ],
    ids=["seccomp-EPERM", "seccomp-ENOSYS"],
)
def test_fallback_under_seccomp(err: int, words: list[str]) -> None:
    proc = _python("-c", SECCOMP, str(err), "exec", str(AUDIT_ARCH), "-c", PROGRAM, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout), err, words)


SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")


@contextmanager
def _io_uring_disabled(value: str) -> Iterator[None]:
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text(value)
    try:
        yield
    finally:
        SYSCTL.write_text(old)


@pytest.mark.skipif(
    not SYSCTL.exists() or not os.access(SYSCTL, os.W_OK),
    reason="kernel.io_uring_disabled is not writable here",
)
def test_fallback_under_io_uring_disabled_sysctl() -> None:
    """The real sysctl, machine-wide for the seconds this takes: rings that exist keep working,
    new ones fail with EPERM (so run nothing else that creates rings meanwhile)."""
    with _io_uring_disabled("2"):
        proc = _python("-c", PROGRAM, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout), errno.EPERM, ["EPERM", "kernel.io_uring_disabled=2"])


def test_resource_errors_do_not_fall_back() -> None:
    """EMFILE is not a deployment's policy: the run reports it, it does not go to trio."""
    code = textwrap.dedent(
        """
        import resource, os, anyio, anyio_uring
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        import trio, anyio._backends._trio, anyio_uring._compat._libraries  # before the fds run out
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        async def main():
            pass
        try:
            anyio.run(main, backend="uring")
        except anyio_uring.IoUringUnavailableError as exc:
            print(exc.errno)
        """
    )
    proc = _python("-W", "error", "-c", code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(errno.EMFILE)


def test_bad_environment_value_is_an_error() -> None:
    code = "import anyio\nasync def main(): pass\nanyio.run(main, backend='uring')"
    proc = _python(
        "-c",
        SECCOMP,
        str(errno.EPERM),
        "exec",
        str(AUDIT_ARCH),
        "-c",
        code,
        timeout=60,
        ANYIO_URING_FALLBACK="maybe",
    )
    assert proc.returncode == 1
    assert "ANYIO_URING_FALLBACK='maybe' is not understood" in proc.stderr
