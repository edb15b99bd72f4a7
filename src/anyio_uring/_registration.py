"""Registration of the anyio backend ``"uring"``.

There are three ways anyio can come to know the backend, and all of them end at
:class:`anyio_uring.backend.UringBackend`:

1. ``anyio_uring.pth`` in site-packages imports the tiny stdlib-only module ``_anyio_uring_hook``
   at interpreter start-up; it appends a meta-path finder that provides the module
   ``anyio._backends._uring`` on demand.  anyio imports that module when it is asked for
   ``"uring"`` and does not know it yet -- so ``anyio.run(main, backend="uring")`` and anyio's
   pytest plugin work without importing anything.
2. ``import anyio_uring`` calls :func:`register`: it installs the same finder (for interpreters
   started with ``-S``, where ``.pth`` files are not processed) and, if anyio is already
   imported, puts the backend straight into ``anyio._core._eventloop.loaded_backends``.
   (anyio always consults that dict first, so a backend put there wins over the finder.)
3. Calling :func:`register` explicitly does the same, and imports anyio to do it.

Importing ``anyio_uring`` does not import anyio: most of the runtime does not need it.
"""

from __future__ import annotations

import sys

__all__ = ["BACKEND_NAME", "register"]

#: The name to pass to ``anyio.run(..., backend=...)``.
BACKEND_NAME = "uring"


def register(*, import_anyio: bool = True) -> None:
    """Make ``"uring"`` known to anyio (idempotent).

    With ``import_anyio=False`` (what ``import anyio_uring`` does) anyio is not imported: the
    backend is registered directly only if anyio is already loaded, and through the import
    finder otherwise.
    """
    import _anyio_uring_hook

    _anyio_uring_hook.install()
    # ``import anyio`` imports its submodules lazily: test for the package, not the registry.
    if import_anyio or "anyio" in sys.modules:
        from anyio._core._eventloop import loaded_backends

        from .backend import UringBackend

        loaded_backends[BACKEND_NAME] = UringBackend
