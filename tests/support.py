"""Small helpers shared by test modules."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_captured(
    args: Sequence[str],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` with its output captured as text; its exit status is the caller's to check."""
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )


def env_without(*names: str) -> dict[str, str]:
    """This process's environment without the variables ``names``."""
    return {k: v for k, v in os.environ.items() if k not in names}


def pinned(buf: bytearray) -> bool:
    """A bytearray exported to the kernel cannot be resized: that is how we see it is pinned."""
    try:
        buf.extend(b"x")
    except BufferError:
        return True
    del buf[-1]
    return False
