"""The compiled io_uring core (cffi API mode) and its version guard.

``ffi`` and ``lib`` are the only things the rest of the package imports from here.  A compiled
module from another version of the package (a stale in-place build, a half-upgraded install) is
refused at import with a message that says how to rebuild.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__

try:
    from ._aur import ffi as _ffi
    from ._aur import lib as _lib
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "anyio_uring's native core (anyio_uring._native._aur) is not built: install the package "
        "with `pip install .` (it needs gcc and the Python headers) instead of importing it from "
        f"a source checkout ({exc})"
    ) from exc

ffi: Any = _ffi
lib: Any = _lib

_built = ffi.string(lib.aur_version()).decode()
if _built != __version__:  # pragma: no cover - exercised by tests/test_native.py in a subprocess
    raise ImportError(
        f"anyio_uring's native core was built for version {_built!r} but the package is "
        f"{__version__!r}: the build is stale; reinstall with `pip install --force-reinstall .`"
    )

__all__ = ["ffi", "lib"]
