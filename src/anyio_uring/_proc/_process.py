"""Subprocesses: spawned with :class:`subprocess.Popen`, waited for on the ring.

Theory of operation
-------------------
Spawning is ``subprocess.Popen`` (vfork/posix_spawn + exec, synchronous like asyncio's loop does
it; the child never touches the ring: its fds are ``O_CLOEXEC``).  Pipes requested with
``subprocess.PIPE`` are made here (``pipe2(O_CLOEXEC)``), the child's ends handed to Popen as
plain fds and closed in the parent after the spawn; the parent's ends become
:mod:`~anyio_uring._proc._pipes` streams.

Each process gets a pidfd (``pidfd_open``) right after the spawn, while the child cannot have
been reaped yet, so the pidfd names *this* process for its whole life.  Waiting for exit never
consumes the exit status in the kernel: the ring operation only *observes* the exit, and reaping
is a synchronous ``waitid(P_PIDFD, WNOHANG)`` (``waitpid`` without a pidfd) in one place
(:meth:`Process._reap`), which records the return code (and tells Popen) in the same step:

* ``IORING_OP_WAITID`` with ``WEXITED | WNOWAIT`` (on the pidfd, else ``P_PID``) where the ring
  supports it.  Plain ``WAITID`` would reap in the kernel (KERNEL-FACTS.md section 4), and then a
  cancelled wait whose CQE carried the status, a second concurrent ``wait()``, or a
  ``returncode`` poll racing with the CQE could each lose or misreport the status.  ``WNOWAIT``
  makes every one of those cases trivial: any number of waits may be in flight, a cancelled one
  loses nothing, the zombie stays until ``_reap``.
* else ``POLL_ADD`` on the pidfd (readable once the child has exited), then reap;
* else (no pidfd: Linux < 5.3 or a sandbox) a sleep-and-poll loop with back-off.

The pidfd follows the ownership rule of the ring's memory: an fd number named by an operation
must stay open until that operation's final CQE (the kernel resolves it only when it issues the
SQE, and a closed number can be reused by the next ``open``).  ``_reap`` therefore only *retires*
the pidfd; it is closed when the last operation naming it is done (``_pidfd_users``).

Signalling follows trio (``subprocess.Popen.send_signal``): the process is first reaped if it has
exited, and a reaped process is not signalled at all -- its pid may belong to another process by
now.  Before that, the signal goes through the pidfd (``pidfd_send_signal``), which cannot reach
another process even if someone else reaped ours behind our back; without a pidfd, ``os.kill``
(the pid cannot be reused while our child is unreaped).  Popen's own ``poll()``/``wait()`` are
never called: they would reap behind our back.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from signal import SIGKILL, SIGTERM, Signals, pidfd_send_signal
from typing import IO, Any, Final, TypeAlias

from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.abc import Process as AbstractProcess

from .._core._cancel import CancelScope, wait_operation
from .._core._run import checkpoint, current_runner, sleep
from ._pipes import PipeReceiveStream, PipeSendStream

__all__ = ["Process", "open_process"]

StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

#: Back-off bounds (seconds) of the last-resort polling wait (no WAITID, no pidfd).
_POLL_MIN: Final = 0.001
_POLL_MAX: Final = 0.1


class Process(AbstractProcess):
    """A child process (:class:`anyio.abc.Process`) whose exit is awaited on the ring."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: PipeSendStream | None,
        stdout: PipeReceiveStream | None,
        stderr: PipeReceiveStream | None,
    ) -> None:
        self._popen = popen
        self._pid = popen.pid
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._returncode: int | None = None
        #: The pidfd (-1: none, fall back to the pid); opened before anyone can reap the child.
        self._pidfd = _open_pidfd(self._pid)
        #: Ring operations in flight that name the pidfd (it is closed only when none is left).
        self._pidfd_users = 0

    def __repr__(self) -> str:
        state = "running" if self._returncode is None else f"returncode={self._returncode}"
        return f"<{type(self).__name__} pid={self._pid} {state}>"

    # -- reaping (the only place the exit status is consumed) ----------------------------

    def _reap(self) -> int | None:
        """Reap the child if it has exited (never blocks); return the return code or None."""
        if self._returncode is not None:
            return self._returncode
        try:
            if self._pidfd >= 0:
                info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
                if info is None:
                    return None
                code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            else:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
                if pid == 0:
                    return None
                code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            # Reaped by someone else (a waitpid(-1) elsewhere, SIGCHLD set to SIG_IGN): the
            # status is gone.  subprocess.Popen reports 0 in this case; so do we.
            code = 0
        self._returncode = code
        self._popen.returncode = code  # Popen must not try to reap (or warn) again
        if self._pidfd_users == 0:
            self._close_pidfd()
        # else: the last operation naming the pidfd closes it (see _observe_exit).
        return code

    def _close_pidfd(self) -> None:
        pidfd = self._pidfd
        if pidfd >= 0:
            self._pidfd = -1
            os.close(pidfd)

    async def _observe_exit(self) -> None:
        """Wait (on the ring) until the child has exited -- or seems to: the caller reaps."""
        ring = current_runner().ring
        pidfd = self._pidfd
        if ring.support.waitid:
            if pidfd >= 0:
                op = ring.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)
            else:
                op = ring.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOWAIT)
            what = "waitid"
        else:
            op = ring.poll_add(pidfd, select.POLLIN)
            what = "poll on the pidfd"
        if pidfd >= 0:
            self._pidfd_users += 1
        try:
            res = await wait_operation(op)  # returns (or raises) only after the final CQE
        finally:
            if pidfd >= 0:
                self._pidfd_users -= 1
                if self._pidfd_users == 0 and self._returncode is not None:
                    self._close_pidfd()  # retired by _reap meanwhile
        if res < 0 and res != -errno.ECHILD:
            raise OSError(-res, f"{what} for process {self._pid} failed: {os.strerror(-res)}")

    # -- anyio.abc.Process -----------------------------------------------------------------

    async def wait(self) -> int:
        """Wait until the process exits and return its return code (``-N``: killed by signal N).

        Cancellation never loses the exit status: the ring only observes the exit (see the
        module docstring); a later ``wait()`` returns the same code.
        """
        if self._returncode is not None:
            await checkpoint()
            return self._returncode
        ring = current_runner().ring
        delay = _POLL_MIN
        while True:
            if ring.support.waitid or self._pidfd >= 0:
                await self._observe_exit()
            else:
                await sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
            code = self._reap()
            if code is not None:
                return code

    def terminate(self) -> None:
        """Send ``SIGTERM`` (nothing if the process has exited: see :meth:`send_signal`)."""
        self.send_signal(SIGTERM)

    def kill(self) -> None:
        """Send ``SIGKILL`` (nothing if the process has exited: see :meth:`send_signal`)."""
        self.send_signal(SIGKILL)

    def send_signal(self, signal: Signals | int) -> None:
        """Send ``signal`` to the process, or do nothing if it has exited (trio's behaviour).

        An exited process is reaped first (like ``Popen.send_signal``), and a reaped one is not
        signalled: its pid may have been given to another process.  Until then the signal goes
        through the pidfd, which names this process only; without one, to the pid, which
        cannot be reused while the child is unreaped.
        """
        if self._reap() is not None:
            return
        try:
            if self._pidfd >= 0:
                pidfd_send_signal(self._pidfd, signal)
            else:
                os.kill(self._pid, signal)
        except ProcessLookupError:
            pass  # reaped by someone else just now: nothing to signal (as Popen does)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        """The return code, or ``None`` while the process runs (reaps it if it has exited,
        like ``Popen.poll()``)."""
        return self._reap()

    @property
    def stdin(self) -> ByteSendStream | None:
        return self._stdin

    @property
    def stdout(self) -> ByteReceiveStream | None:
        return self._stdout

    @property
    def stderr(self) -> ByteReceiveStream | None:
        return self._stderr

    async def aclose(self) -> None:
        """Close the standard streams, then wait for the process to exit.

        Closing the pipes lets a child blocked on a full pipe get ``EPIPE``/``SIGPIPE``.  If the
        wait is cancelled, the process is killed and waited for (shielded), so no child and no
        zombie is left behind; the cancellation then propagates.
        """
        with CancelScope(shield=True):
            for stream in (self._stdin, self._stdout, self._stderr):
                if stream is not None:
                    await stream.aclose()
        try:
            await self.wait()
        except BaseException:
            if self._returncode is None:
                self.kill()
            with CancelScope(shield=True):
                await self.wait()
            raise

    def __del__(self) -> None:
        # Unreachable: no task can be parked on an operation naming the pidfd any more.
        try:
            self._close_pidfd()
        except (AttributeError, OSError):  # pragma: no cover - half-built object
            pass


def _open_pidfd(pid: int) -> int:
    """A pidfd for ``pid`` (a child not reaped yet); -1 if the kernel or sandbox has none."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return -1


def _pipe() -> tuple[int, int]:
    return os.pipe2(os.O_CLOEXEC)


async def open_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[str, str] | None = None,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int = -1,
    startupinfo: Any = None,
    creationflags: int = 0,
) -> Process:
    """Start ``command`` (anyio's ``open_process`` semantics).

    A ``str``, ``bytes`` or path-like ``command`` runs through the shell (``/bin/sh -c``); a
    sequence runs the program directly.  ``stdin``/``stdout``/``stderr`` take
    ``subprocess.PIPE`` (an async stream is created), ``DEVNULL``, ``STDOUT`` (stderr only), an
    fd, a file object or ``None`` (inherit).  The rest is passed to :class:`subprocess.Popen`
    (``startupinfo``/``creationflags`` are Windows-only: Popen rejects non-defaults).
    """
    current_runner()  # a clear error outside a loop, before anything is spawned
    await checkpoint()
    if isinstance(command, (str, bytes, os.PathLike)):
        shell = True
        args: Any = os.fspath(command)
    else:
        shell = False
        args = [os.fspath(item) for item in command]

    parent_fds: list[int] = []
    child_fds: list[int] = []

    def make_pipe(spec: int | IO[Any] | None, child_reads: bool) -> tuple[int | IO[Any] | None, int]:
        if spec != subprocess.PIPE:
            return spec, -1
        r, w = _pipe()
        parent, child = (w, r) if child_reads else (r, w)
        parent_fds.append(parent)
        child_fds.append(child)
        return child, parent

    try:
        child_in, parent_in = make_pipe(stdin, child_reads=True)
        child_out, parent_out = make_pipe(stdout, child_reads=False)
        child_err, parent_err = make_pipe(stderr, child_reads=False)
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs["user"] = user
        if group is not None:
            kwargs["group"] = group
        if extra_groups is not None:
            kwargs["extra_groups"] = extra_groups
        popen = subprocess.Popen(
            args,
            shell=shell,
            stdin=child_in,
            stdout=child_out,
            stderr=child_err,
            cwd=cwd,
            env=env,
            start_new_session=start_new_session,
            pass_fds=pass_fds,
            umask=umask,
            startupinfo=startupinfo,
            creationflags=creationflags,
            **kwargs,
        )
    except BaseException:
        for fd in parent_fds:
            os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)

    return Process(
        popen,
        PipeSendStream(parent_in) if parent_in >= 0 else None,
        PipeReceiveStream(parent_out) if parent_out >= 0 else None,
        PipeReceiveStream(parent_err) if parent_err >= 0 else None,
    )
