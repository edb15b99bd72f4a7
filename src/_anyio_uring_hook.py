"""Start-up hook of anyio_uring: lets anyio find the backend ``"uring"`` without an import.

How anyio finds a backend by name: it looks in ``anyio._core._eventloop.loaded_backends``, and
failing that imports ``anyio._backends._<name>`` and takes its ``backend_class``.  There is no
plugin entry point.  So that ``anyio.run(main, backend="uring")`` and anyio's pytest plugin work
in a program that never imports ``anyio_uring``, this module puts a meta-path finder on
``sys.meta_path`` that answers for exactly one module name, ``anyio._backends._uring``: a module
built on demand whose ``backend_class`` is :class:`anyio_uring.backend.UringBackend`.

``anyio_uring.pth`` (installed next to this file in site-packages) imports this module when the
interpreter starts, so it must stay cheap and harmless: standard library only, no anyio and no
cffi import (those happen only when anyio actually asks for the backend), and nothing at import
time that can raise.  ``import anyio_uring`` installs the same finder (idempotently) for
interpreters started without site-packages processing (``python -S``).
"""

from __future__ import annotations

import sys

# Not ``typing.TYPE_CHECKING``: importing typing would cost every interpreter start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__all__ = ["BACKEND_MODULE", "UringBackendFinder", "install"]

#: The module anyio imports for ``backend="uring"``.
BACKEND_MODULE = "anyio._backends._uring"


class UringBackendFinder:
    """Finder and loader (used as the class itself) for :data:`BACKEND_MODULE` only."""

    #: Marks this finder on ``sys.meta_path`` (found by attribute, so that a second copy of this
    #: module -- e.g. after a reinstall in a running interpreter -- is recognised too).
    _anyio_uring_backend_finder = True

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != BACKEND_MODULE:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, cls, origin="anyio_uring.backend")  # type: ignore[arg-type]

    @staticmethod
    def create_module(spec: ModuleSpec) -> None:
        return None  # the default module object

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        # An ImportError here (e.g. a broken native build) reaches the user through anyio's
        # "No such backend: uring" LookupError, as its __cause__.
        from anyio_uring.backend import CancelScope, TaskGroup, UringBackend

        module.backend_class = UringBackend  # type: ignore[attr-defined]
        # anyio's own backend modules also export these; asyncer's create_task_group() subclasses
        # ``anyio._backends._<sniffio name>.TaskGroup``.
        module.TaskGroup = TaskGroup  # type: ignore[attr-defined]
        module.CancelScope = CancelScope  # type: ignore[attr-defined]
        module.__all__ = ["CancelScope", "TaskGroup", "backend_class"]  # type: ignore[attr-defined]


def install() -> None:
    """Append :class:`UringBackendFinder` to ``sys.meta_path`` unless one is already there.

    Appended, not prepended: it answers for a single name that no other finder provides, and
    must never slow down or shadow ordinary imports.
    """
    for finder in sys.meta_path:
        if getattr(finder, "_anyio_uring_backend_finder", False):
            return
    sys.meta_path.append(UringBackendFinder)


try:
    install()
except Exception:  # pragma: no cover - start-up must never break
    pass
