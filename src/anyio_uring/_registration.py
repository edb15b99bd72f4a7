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
    if import_anyio:
        import anyio._core._eventloop  # noqa: F401 - imported for the module registry below
    eventloop = sys.modules.get("anyio._core._eventloop")
    if eventloop is not None:
        from .backend import UringBackend

        eventloop.loaded_backends[BACKEND_NAME] = UringBackend
