"""Adaptations for libraries that accept only the sniffio names ``"asyncio"`` and ``"trio"``.

Inside a ``"uring"`` run, sniffio answers ``"uring"`` -- it must, or anyio would dispatch to
another backend.  A few popular libraries whitelist sniffio's names and refuse anything else
(httpcore raises "Running under an unsupported async environment"), or pick an asyncio-only
primitive for every name but ``"trio"`` (httpx's ``ASGITransport``).  Their "asyncio" branch is in
fact anyio code that runs on any anyio backend; the adapters listed in :mod:`._libraries` (one
entry per library, with the reason) make them take that branch while a uring loop runs in the
calling thread, and nowhere else.

How an adapter is applied:

* :func:`activate` (called when a uring run starts: ``anyio.run(..., backend="uring")``, the pytest
  plugin's runner, ``anyio_uring.run``) adapts every listed module that is already imported and
  puts an import hook first on ``sys.meta_path`` that adapts the others when they are imported
  later.  Both are idempotent and process-wide.
* An adapted function calls the library's own function unless a uring loop runs in the calling
  thread (and the run did not switch the layer off with the backend option ``compat=False``):
  an asyncio or trio loop in another thread, and every thread before or after a run, see the
  library's behaviour unchanged.
* Each entry names the distribution's tested major versions and checks the shape it adapts (the
  function exists and still contains the whitelist it works around).  A version outside the
  range or a changed shape leaves the library alone and emits one :class:`CompatWarning` per
  library, saying what was found -- a warning our own test-suite turns into a failure
  (``tests/test_compat.py`` imports every listed library), so a library's new release is noticed
  in CI, not in production.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .._core._context import GLOBAL

__all__ = [
    "Adapter",
    "CompatWarning",
    "activate",
    "applied",
    "compat_disabled",
    "uring_here",
]


class CompatWarning(RuntimeWarning):
    """A library the compatibility layer adapts has a version or shape it was not made for."""


class _State(threading.local):
    #: ``True`` while a run that passed ``compat=False`` runs in this thread.
    disabled = False


_STATE = _State()


def uring_here() -> bool:
    """Whether a uring loop runs in the calling thread with the compatibility layer on."""
    return GLOBAL.runner is not None and not _STATE.disabled


class compat_disabled:
    """Context manager: switch the adapters off in this thread while it is active (if ``off``)."""

    __slots__ = ("_off", "_old")

    def __init__(self, off: bool = True) -> None:
        self._off = off
        self._old = False

    def __enter__(self) -> None:
        self._old = _STATE.disabled
        if self._off:
            _STATE.disabled = True

    def __exit__(self, *exc_info: object) -> None:
        _STATE.disabled = self._old


@dataclass(frozen=True, slots=True)
class Adapter:
    """One library's adaptation (see :mod:`._libraries`).

    ``patches`` maps each module to the attribute names it rebinds: ``make(original)`` returns the
    replacement for one attribute.  The first module of ``patches`` holds the original; later
    modules are ones that imported the name from it (``from x import f``) and get the same
    replacement if they still hold the original.  ``check(original)`` returns ``None`` when the
    original has the shape ``make`` was written for, else a description of what differs.
    """

    distribution: str
    versions: tuple[tuple[int, ...], tuple[int, ...]]  # [low, high): tested releases
    patches: dict[str, tuple[str, ...]]
    make: Callable[[Callable[..., Any]], Callable[..., Any]]
    check: Callable[[Callable[..., Any]], str | None]
    reason: str


#: Attribute set on every replacement: the library's original function.
ORIGINAL = "__anyio_uring_original__"

_lock = threading.RLock()
_replacements: dict[tuple[str, str], Callable[..., Any]] = {}  # (module, attribute) -> installed
_refused: set[str] = set()  # distributions found unfit (warned once)
_activated = False


def _adapters() -> Sequence[Adapter]:
    from ._libraries import ADAPTERS

    return ADAPTERS


def _parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def _refuse(adapter: Adapter, why: str) -> None:
    if adapter.distribution in _refused:
        return
    _refused.add(adapter.distribution)
    warnings.warn(
        f"anyio_uring's compatibility layer leaves {adapter.distribution} alone: {why}. "
        f"(It adapts {adapter.distribution} because {adapter.reason}.) Under the backend "
        f"'uring' the library may now refuse to run; please report this to anyio_uring.",
        CompatWarning,
        stacklevel=3,
    )


def _fit(adapter: Adapter, original: Callable[..., Any]) -> bool:
    """Whether ``adapter`` may adapt ``original`` (warns once per distribution if not)."""
    from importlib.metadata import PackageNotFoundError, version  # slow to import: on first use

    try:
        installed = version(adapter.distribution)
    except PackageNotFoundError:
        installed = None  # imported from a source tree: judge by shape alone
    if installed is not None:
        low, high = adapter.versions
        if not low <= _parse_version(installed) < high:
            lo = ".".join(map(str, low))
            hi = ".".join(map(str, high))
            _refuse(adapter, f"version {installed} is outside the tested range >={lo},<{hi}")
            return False
    problem = adapter.check(original)
    if problem is not None:
        _refuse(adapter, f"its shape changed ({problem})")
        return False
    return True


def _apply(adapter: Adapter, module_name: str, module: ModuleType) -> None:
    """Adapt ``module`` (one of ``adapter.patches``) if it has the expected shape."""
    with _lock:
        if adapter.distribution in _refused:
            return
        names = adapter.patches[module_name]
        home = next(iter(adapter.patches))
        for name in names:
            current = getattr(module, name, None)
            if current is None:
                if module_name == home:
                    _refuse(adapter, f"{module_name}.{name} does not exist")
                continue
            if getattr(current, ORIGINAL, None) is not None:
                _replacements.setdefault((module_name, name), current)
                continue  # adapted already (or bound the home module's replacement on import)
            replacement = _replacements.get((home, name))
            if module_name == home:
                if not callable(current) or not _fit(adapter, current):
                    return
                replacement = adapter.make(current)
                setattr(replacement, ORIGINAL, current)
                _replacements[(home, name)] = replacement
            elif replacement is None or current is not getattr(replacement, ORIGINAL):
                continue  # not the home module's original: not ours to replace
            setattr(module, name, replacement)
            _replacements[(module_name, name)] = replacement


def _watched() -> dict[str, Adapter]:
    """Every adapted module name, home modules before the ones that import from them."""
    return {name: adapter for adapter in _adapters() for name in adapter.patches}


class _AdaptingLoader(importlib.abc.Loader):
    """Wraps a watched module's loader: runs it, then applies the module's adapter."""

    def __init__(self, loader: importlib.abc.Loader, adapter: Adapter) -> None:
        self._loader = loader
        self._adapter = adapter

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        adapter = self._adapter
        # A later module of the entry binds the home module's name: adapt the home first.
        home = next(iter(adapter.patches))
        if module.__name__ != home and home in sys.modules:
            _apply(adapter, home, sys.modules[home])
        _apply(adapter, module.__name__, module)

    def __getattr__(self, name: str) -> Any:  # get_code, is_package, get_resource_reader ...
        return getattr(self._loader, name)


class _AdaptingFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``; answers only for watched modules, by asking the others."""

    _anyio_uring_compat_finder = True

    def __init__(self, watched: dict[str, Adapter]) -> None:
        self._watched = watched

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        adapter = self._watched.get(fullname)
        if adapter is None:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, "_anyio_uring_compat_finder", False):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AdaptingLoader(spec.loader, adapter)
                return spec
        return None


def activate() -> None:
    """Adapt the listed libraries already imported, and hook the import of the others."""
    global _activated
    if _activated:
        return
    with _lock:
        watched = _watched()
        for module_name, adapter in watched.items():
            module = sys.modules.get(module_name)
            if module is not None:
                _apply(adapter, module_name, module)
        if not any(getattr(f, "_anyio_uring_compat_finder", False) for f in sys.meta_path):
            sys.meta_path.insert(0, _AdaptingFinder(watched))
        _activated = True


def applied() -> dict[str, list[str]]:
    """``{module: [attribute, ...]}`` of every adaptation installed so far (for tests and
    ``python -m anyio_uring``)."""
    with _lock:
        result: dict[str, list[str]] = {}
        for (module_name, name), replacement in _replacements.items():
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, name, None) is replacement:
                result.setdefault(module_name, []).append(name)
        return result
