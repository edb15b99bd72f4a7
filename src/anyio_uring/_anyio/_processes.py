"""Process pools: the system task that reaps anyio's worker processes at shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._core import sleep_forever as _sleep_forever
from .._core._cancel import CancelScope as _NativeCancelScope
from .._core._run import Cancelled

if TYPE_CHECKING:
    pass


async def shutdown_process_pool(workers: set[anyio.abc.Process]) -> None:
    """System task: when the loop closes, kill the worker processes still alive and reap all."""
    try:
        await _sleep_forever()
    except Cancelled:
        for process in workers:
            if process.returncode is None:
                process.kill()
        with _NativeCancelScope(shield=True):
            for process in workers:
                await process.aclose()
