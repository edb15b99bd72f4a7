"""Subprocesses and pipe streams on the ring, against real child processes.

Every process test runs on each way of waiting for a child: ``IORING_OP_WAITID`` (the default),
``POLL_ADD`` on a pidfd (``RingOptions(disable={"waitid"})``) and the last-resort polling loop
(no pidfd).  Named races: a cancelled ``wait()`` followed by another ``wait()``; a cancelled pipe
read whose CQE carries data (forced on a ring without DEFER_TASKRUN, where the read completes
while the writer's ``write()`` returns); ``aclose()`` of a stream another task waits on.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio import BrokenResourceError, BusyResourceError, ClosedResourceError, EndOfStream

import anyio_uring as au
from anyio_uring import CancelScope, RingOptions
from anyio_uring._core import current_runner
from anyio_uring._proc._pipes import PipeReceiveStream, PipeSendStream
from anyio_uring._proc._process import Process, open_process

PIPE = subprocess.PIPE
PY = sys.executable
NO_WAITID = RingOptions(disable=frozenset({"waitid"}))
WITH_WAITID = RingOptions(disable=RingOptions().effective_disable() - {"waitid"}, use_environment=False)
NO_DEFER = RingOptions(disable=frozenset({"defer_taskrun"}))

Runner = Callable[[Callable[[], Awaitable[Any]]], Any]


# ============================================================================ helpers


@pytest.fixture(params=["waitid", "pidfd", "polling"])
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run an async test body on a fresh loop, with one of the three ways of waiting."""
    mode = request.param
    # The WAITID path is tested even when ANYIO_URING_DISABLE masks it for the rest of the run.
    options = WITH_WAITID if mode == "waitid" else NO_WAITID
    if mode == "polling":

        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open disabled by the test")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    def runner(fn: Callable[[], Awaitable[Any]]) -> Any:
        async def body() -> Any:
            ring = current_runner().ring
            assert ring.support.waitid == (mode == "waitid")
            result = await fn()
            assert ring.inflight == current_runner().entry.watchers, ring.ledger()
            assert ring.bytes_pinned == 0
            return result

        return au.run(body, ring_options=options)

    return runner


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def assert_reaped(pid: int) -> None:
    """The child is gone: not our child any more (no zombie), and not in /proc."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists() or _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


async def spawn(code: str, **kwargs: Any) -> Process:
    options: dict[str, Any] = {"stdin": PIPE, "stdout": PIPE, "stderr": PIPE}
    options.update(kwargs)
    return await open_process([PY, "-c", code], **options)


async def read_all(stream: Any) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive())
        except EndOfStream:
            return b"".join(chunks)


async def receive_line(stream: Any) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive(1)
    return line


# ============================================================================ exit status


def test_exit_code(run: Runner) -> None:
    async def main() -> None:
        async with await spawn("import sys; sys.exit(7)") as p:
            assert await p.wait() == 7
            assert p.returncode == 7
            assert await p.wait() == 7  # again: from the record, still a checkpoint

    run(main)


def test_killed_by_signal(run: Runner) -> None:
    async def main() -> None:
        async with await spawn("import time; time.sleep(30)") as p:
            assert p.returncode is None
            p.kill()
            assert await p.wait() == -signal.SIGKILL

    run(main)


def test_terminate_and_send_signal(run: Runner) -> None:
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(2))\n"
        "signal.signal(signal.SIGUSR1, lambda *a: print('usr1', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True: signal.pause()\n"
    )

    async def main() -> None:
        async with await spawn(code) as p:
            assert p.stdout is not None
            assert await receive_line(p.stdout) == b"ready\n"
            p.send_signal(signal.SIGUSR1)
            assert await receive_line(p.stdout) == b"usr1\n"
            p.terminate()
            assert await p.wait() == 2

    run(main)


def test_signalling_a_reaped_process_does_nothing(run: Runner) -> None:
    """trio's behaviour (asyncio raises ProcessLookupError); see tests/test_hardening_proc.py."""

    async def main() -> None:
        p = await spawn("pass", stdin=None, stdout=None, stderr=None)
        assert await p.wait() == 0
        for method in (p.kill, p.terminate, lambda: p.send_signal(signal.SIGUSR1)):
            method()
        assert p.returncode == 0
        await p.aclose()

    run(main)


def test_returncode_polls_without_wait(run: Runner) -> None:
    async def main() -> None:
        p = await spawn("import sys; sys.exit(4)", stdin=None, stdout=None, stderr=None)
        with au.fail_after(10):
            while p.returncode is None:
                await au.sleep(0.01)
        assert p.returncode == 4
        assert_reaped(p.pid)
        assert await p.wait() == 4
        await p.aclose()

    run(main)


def test_returncode_poll_races_a_pending_wait(run: Runner) -> None:
    """Race: a task waits on the ring while another reaps through ``returncode`` (a
    ``waitpid``): the wait's operation only observes the exit, so both agree on the code."""

    async def main() -> None:
        for _ in range(5):
            p = await spawn("import sys; sys.stdin.read(); sys.exit(6)")
            results: list[int] = []

            async def waiter(p: Process = p, results: list[int] = results) -> None:
                results.append(await p.wait())

            async with au.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await au.wait_all_tasks_blocked()
                assert p.stdin is not None
                await p.stdin.aclose()
                with au.fail_after(10):
                    while p.returncode is None:
                        await au.sleep(0)  # spins: usually reaps before the wait's CQE is seen
            assert results == [6]
            assert p.returncode == 6
            await p.aclose()
            assert_reaped(p.pid)

    run(main)


def test_concurrent_waits_all_get_the_code(run: Runner) -> None:
    async def main() -> None:
        p = await spawn("import sys; sys.stdin.read(); sys.exit(9)")
        results: list[int] = []

        async def waiter() -> None:
            results.append(await p.wait())

        async with au.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await au.wait_all_tasks_blocked()
            assert p.stdin is not None
            await p.stdin.aclose()
        assert results == [9, 9, 9]
        await p.aclose()

    run(main)


def test_cancelled_wait_then_wait_returns_the_code(run: Runner) -> None:
    """A wait cancelled while the child runs loses nothing: a later wait gets the code."""

    async def main() -> None:
        p = await spawn("import sys; sys.stdin.read(); sys.exit(5)")
        with au.move_on_after(0.05) as scope:
            await p.wait()
        assert scope.cancelled_caught
        assert p.returncode is None
        assert p.stdin is not None
        await p.stdin.aclose()  # the child exits now
        assert await p.wait() == 5
        await p.aclose()

    run(main)


def test_wait_cancelled_as_the_child_exits(run: Runner) -> None:
    """Race: the cancellation of a wait lands around the child's exit, over a range of
    timings (and before the wait even parks); whichever wins, the next wait() gets the code."""

    async def main() -> None:
        for i in range(16):
            p = await spawn("import sys; sys.exit(3)", stdin=None, stdout=None, stderr=None)
            with CancelScope() as scope:
                if i == 0:
                    scope.cancel()  # the WAITID/POLL is withdrawn before the kernel sees it
                else:
                    scope.deadline = au.current_time() + 0.002 * i
                await p.wait()
            assert await p.wait() == 3
            with CancelScope() as scope:
                scope.cancel()
                await p.wait()  # already known: still a cancel point
            assert scope.cancelled_caught
            await p.aclose()
            assert_reaped(p.pid)

    run(main)


def test_wait_uses_the_expected_operation(run: Runner, request: pytest.FixtureRequest) -> None:
    mode = request.node.callspec.params["run"]

    async def main() -> None:
        p = await spawn("import sys; sys.stdin.read()")
        before = dict(current_runner().ring.ledger().by_opcode)
        async with au.open_nursery() as nursery:
            nursery.start_soon(p.wait)
            await au.wait_all_tasks_blocked()
            during = current_runner().ring.ledger().by_opcode
            if mode == "waitid":
                assert during.get("WAITID") == 1
            elif mode == "pidfd":
                assert during.get("POLL_ADD", 0) == before.get("POLL_ADD", 0) + 1
                assert "WAITID" not in during
            else:
                assert during == before
            assert p.stdin is not None
            await p.stdin.aclose()
        await p.aclose()

    run(main)


# ============================================================================ spawning


def test_shell_and_exec_commands(run: Runner, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho script $1\n")
    script.chmod(0o755)

    async def main() -> None:
        cases: list[tuple[Any, bytes]] = [
            ("echo $((6 * 7))", b"42\n"),  # str: through the shell
            (b"echo bytes | tr a-z A-Z", b"BYTES\n"),  # bytes: through the shell
            (script, b"script\n"),  # path-like: through the shell (a path to run)
            (["echo", "$HOME"], b"$HOME\n"),  # sequence: no shell, no expansion
            ([b"/bin/echo", Path("a b")], b"a b\n"),  # bytes and path-like items
        ]
        for command, expected in cases:
            p = await open_process(command, stdin=None, stdout=PIPE, stderr=None)
            assert p.stdout is not None
            assert await read_all(p.stdout) == expected, command
            assert await p.wait() == 0
            await p.aclose()

    run(main)


def test_spawn_failure_leaks_no_fd(run: Runner) -> None:
    async def main() -> None:
        before = open_fds()
        with pytest.raises(FileNotFoundError):
            await open_process(["/nonexistent/program"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert open_fds() == before

    run(main)


def test_stdio_options(run: Runner, tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); print(repr(sys.stdin.read()))"

    async def main() -> None:
        # stderr into stdout
        p = await spawn(code, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert p.stdin is None
        assert p.stderr is None
        assert p.stdout is not None
        assert sorted((await read_all(p.stdout)).split()) == [b"''", b"err", b"out"]
        await p.aclose()
        # files both ways
        (tmp_path / "in").write_text("from file")
        with (tmp_path / "in").open("rb") as fin, (tmp_path / "out").open("wb") as fout:
            p = await spawn(code, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL)
            assert (p.stdin, p.stdout, p.stderr) == (None, None, None)
            assert await p.wait() == 0
            await p.aclose()
        assert (tmp_path / "out").read_text() == "out\n'from file'\n"

    run(main)


def test_popen_options_pass_through(run: Runner, tmp_path: Path) -> None:
    code = "import os; print(os.getcwd(), os.environ.get('FOO'), os.getsid(0) == os.getpid())"

    async def main() -> None:
        p = await spawn(code, cwd=tmp_path, env={"FOO": "bar"}, start_new_session=True, umask=0o22)
        assert p.stdout is not None
        assert (await read_all(p.stdout)).split() == [str(tmp_path).encode(), b"bar", b"True"]
        await p.aclose()
        with pytest.raises(ValueError, match="startupinfo"):
            await open_process(["true"], stdin=None, stdout=None, stderr=None, startupinfo=object())

    run(main)


def test_pass_fds(run: Runner) -> None:
    async def main() -> None:
        r, w = os.pipe()
        try:
            p = await spawn(f"import os; os.write({w}, b'via fd')", pass_fds=(w,))
            assert await p.wait() == 0
            assert os.read(r, 100) == b"via fd"
            await p.aclose()
        finally:
            os.close(r)
            os.close(w)

    run(main)


# ============================================================================ streams of a process


def test_large_roundtrip(run: Runner) -> None:
    """More than a pipe holds, both ways at once (partial writes, many reads)."""
    data = os.urandom(3 << 20)

    async def main() -> None:
        p = await spawn("import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)")
        assert p.stdin is not None
        assert p.stdout is not None
        received = bytearray()

        async def reader() -> None:
            assert p.stdout is not None
            received.extend(await read_all(p.stdout))

        async with au.open_nursery() as nursery:
            nursery.start_soon(reader)
            await p.stdin.send(data)
            await p.stdin.aclose()
        assert received == data
        assert await p.wait() == 0
        await p.aclose()

    run(main)


def test_exceptions_after_the_child_exits(run: Runner) -> None:
    async def main() -> None:
        async with await spawn("pass") as p:
            await p.wait()
            assert p.stdin is not None
            assert p.stdout is not None
            assert p.stderr is not None
            with pytest.raises(BrokenResourceError) as info:
                await p.stdin.send(b"foo")
            assert isinstance(info.value.__cause__, BrokenPipeError)
            with pytest.raises(EndOfStream):
                await p.stdout.receive(1)
            with pytest.raises(EndOfStream):
                await p.stderr.receive(1)
        with pytest.raises(ClosedResourceError):
            await p.stdin.send(b"foo")
        with pytest.raises(ClosedResourceError):
            await p.stdout.receive(1)
        with pytest.raises(ClosedResourceError):
            await p.stderr.receive(1)

    run(main)


def test_wait_returns_while_a_grandchild_holds_stdout(run: Runner) -> None:
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import select, sys; select.select([sys.stdin], [], [], 10)'])\n"
    )

    async def main() -> None:
        p = await spawn(code)
        assert p.stdin is not None
        assert p.stdout is not None
        async with p.stdin:
            with au.fail_after(5):
                assert await p.wait() == 0
        with au.fail_after(5):  # the grandchild exits when stdin closes
            await read_all(p.stdout)
        await p.aclose()

    run(main)


# ============================================================================ aclose and hygiene


def test_aclose_leaves_no_fd_and_no_zombie(run: Runner) -> None:
    async def main() -> None:
        before = open_fds()
        pids = []
        for _ in range(5):
            async with await spawn("import sys; sys.stdout.write(sys.stdin.read())") as p:
                pids.append(p.pid)
                assert p.stdin is not None
                assert p.stdout is not None
                await p.stdin.send(b"x")
                await p.stdin.aclose()
                assert await p.stdout.receive() == b"x"
            assert p.returncode == 0
        assert open_fds() == before
        for pid in pids:
            assert_reaped(pid)

    run(main)


def test_aclose_cancelled_kills_and_reaps(run: Runner) -> None:
    async def main() -> None:
        before = open_fds()
        with CancelScope() as scope:
            async with await spawn("import time; time.sleep(30)") as p:
                scope.cancel()
        assert scope.cancelled_caught
        assert p.returncode == -signal.SIGKILL
        assert_reaped(p.pid)
        assert open_fds() == before
        for stream in (p.stdout, p.stderr):
            assert stream is not None
            with pytest.raises(ClosedResourceError):
                await stream.receive(1)

    run(main)


def test_aclose_unblocks_a_child_blocked_on_a_full_pipe(run: Runner) -> None:
    async def main() -> None:
        p = await spawn("import sys; sys.stdout.write('x' * 1024 * 1024)")
        with au.fail_after(10):
            await p.aclose()
        assert p.returncode not in (None, 0)
        assert_reaped(p.pid)

    run(main)


def test_dropped_process_and_streams_close_their_fds(run: Runner) -> None:
    async def main() -> None:
        before = open_fds()
        p = await spawn("pass")
        assert await p.wait() == 0
        del p
        assert open_fds() == before

    run(main)


# ============================================================================ pipe streams


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_receive_max_bytes_and_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        stream = PipeReceiveStream(os.dup(r))
        for bad in (0, -1):
            with pytest.raises(ValueError, match="max_bytes must be a positive integer"):
                await stream.receive(bad)
        os.write(w, b"abcdef")
        assert await stream.receive(4) == b"abcd"
        assert await stream.receive(4) == b"ef"
        os.close(w)
        for _ in range(2):
            with pytest.raises(EndOfStream):
                await stream.receive()
        await stream.aclose()
        await stream.aclose()  # idempotent
        with pytest.raises(ClosedResourceError):
            await stream.receive()
        assert stream.fileno() == -1

    au.run(main)


@pytest.mark.parametrize("options", [None, NO_DEFER], ids=["defer_taskrun", "no_defer_taskrun"])
def test_cancelled_receive_loses_no_bytes(pipe: tuple[int, int], options: RingOptions | None) -> None:
    """A receive cancelled while idle, then data written: every byte is received."""
    r, w = pipe

    async def main() -> None:
        stream = PipeReceiveStream(os.dup(r))
        with au.move_on_after(0.02) as scope:
            await stream.receive()
        assert scope.cancelled_caught
        os.write(w, b"after the cancel")
        assert await stream.receive() == b"after the cancel"
        await stream.aclose()

    au.run(main, ring_options=options)


@pytest.mark.parametrize("options", [None, NO_DEFER], ids=["defer_taskrun", "no_defer_taskrun"])
def test_too_late_to_cancel_receive_keeps_the_bytes(
    pipe: tuple[int, int], options: RingOptions | None
) -> None:
    """Race: data arrives and the receive is cancelled in the same tick.  Whether the cancel
    or the data wins the kernel race, every byte comes out of the stream, in order; on a ring
    without DEFER_TASKRUN the data wins and the bytes go through the stream's push-back buffer."""
    r, w = pipe
    outcomes: set[str] = set()

    async def main() -> None:
        stream = PipeReceiveStream(os.dup(r))
        expected = bytearray()
        received = bytearray()
        for i in range(50):
            chunk = f"<{i}>".encode()
            expected += chunk
            with CancelScope() as scope:

                async def write_and_cancel(scope: CancelScope = scope, chunk: bytes = chunk) -> None:
                    await au.wait_all_tasks_blocked()
                    os.write(w, chunk)  # completes the READ at once without DEFER_TASKRUN
                    scope.cancel()

                async with au.open_nursery() as nursery:
                    nursery.start_soon(write_and_cancel)
                    received += await stream.receive()
                    outcomes.add("data")
            if scope.cancelled_caught:
                outcomes.add("pushed back" if stream._pending else "cancel won")
        os.close(w)
        received += await read_all(stream)
        assert received == expected
        await stream.aclose()

    au.run(main, ring_options=options)
    if options is NO_DEFER:
        assert "pushed back" in outcomes, outcomes


def test_concurrent_receive_is_busy(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        stream = PipeReceiveStream(os.dup(r))
        async with au.open_nursery() as nursery:
            nursery.start_soon(stream.receive)
            await au.wait_all_tasks_blocked()
            with pytest.raises(BusyResourceError, match="reading from"):
                await stream.receive()
            os.write(w, b"x")
        await stream.aclose()

    au.run(main)


def test_aclose_wakes_a_blocked_receiver(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        fd = os.dup(r)
        stream = PipeReceiveStream(fd)
        async with au.open_nursery() as nursery:
            nursery.start_soon(stream.aclose)
            with pytest.raises(ClosedResourceError):
                await stream.receive()
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        # The aborted read consumed nothing.
        os.write(w, b"still here")
        assert os.read(r, 100) == b"still here"

    au.run(main)


def test_aclose_wakes_a_blocked_sender(pipe: tuple[int, int]) -> None:
    _, w = pipe

    async def main() -> None:
        stream = PipeSendStream(os.dup(w))

        async def close_when_blocked() -> None:
            await au.wait_all_tasks_blocked()
            await stream.aclose()

        async with au.open_nursery() as nursery:
            nursery.start_soon(close_when_blocked)
            with pytest.raises(ClosedResourceError):
                await stream.send(b"x" * (4 << 20))  # far more than the pipe holds
        with pytest.raises(ClosedResourceError):
            await stream.send(b"x")

    au.run(main)


def test_concurrent_send_is_busy(pipe: tuple[int, int]) -> None:
    _, w = pipe

    async def main() -> None:
        stream = PipeSendStream(os.dup(w))
        async with au.open_nursery() as nursery:
            nursery.start_soon(stream.send, b"y" * (1 << 20))
            await au.wait_all_tasks_blocked()
            with pytest.raises(BusyResourceError, match="writing to"):
                await stream.send(b"z")
            nursery.cancel_scope.cancel()
        await stream.aclose()

    au.run(main)


def test_send_to_a_closed_reader_is_broken(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> None:
        stream = PipeSendStream(os.dup(w))
        os.close(r)
        with pytest.raises(BrokenResourceError):
            await stream.send(b"nobody reads")
        await stream.send(b"")  # nothing to write: just a checkpoint
        await stream.aclose()

    au.run(main)


def test_nonblocking_fds(pipe: tuple[int, int]) -> None:
    """O_NONBLOCK fds work too (a -EAGAIN answer is turned into a readiness wait)."""
    r, w = pipe

    async def main() -> None:
        rfd, wfd = os.dup(r), os.dup(w)
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        receiver, sender = PipeReceiveStream(rfd), PipeSendStream(wfd)
        data = os.urandom(1 << 20)
        got = bytearray()

        async def read() -> None:
            while len(got) < len(data):
                got.extend(await receiver.receive())

        async with au.open_nursery() as nursery:
            nursery.start_soon(read)
            await sender.send(data)
        assert got == data
        await receiver.aclose()
        await sender.aclose()

    au.run(main)


def test_invalid_fd_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        PipeReceiveStream(-1)
