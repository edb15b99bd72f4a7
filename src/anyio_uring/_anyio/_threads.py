"""Calls into the loop from other threads: event-loop tokens and finished runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core import Runner

if TYPE_CHECKING:
    pass


def runner_from_token(token: object) -> Runner | None:
    if token is None or isinstance(token, Runner):
        return token
    raise TypeError(f"not an anyio_uring event loop token: {token!r}")


def is_finished(runner: Runner | None) -> bool:
    if runner is None:
        from .._core._threads import worker_local

        runner = worker_local.runner
    return runner is not None and (runner._closed or runner.entry._closed)
