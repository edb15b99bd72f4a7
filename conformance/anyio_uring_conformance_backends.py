"""pytest plugin (every pytest process of a conformance run, via ``PYTEST_PLUGINS``): make
``"uring"`` one of anyio's backends.

anyio's ``get_all_backends()`` / ``get_available_backends()`` list only its built-in backends,
and anyio's test suite parametrizes over them -- its ``conftest.py`` ``anyio_backend`` fixture,
``parametrize("target_backend", get_available_backends())``, the test files that pytester writes,
and the default ``anyio_backend`` fixture of anyio's pytest plugin.  This plugin appends
``"uring"`` to that list so that all of those run on uring too, and re-declares the plugin's
default ``anyio_backend`` fixture: anyio computes its parameters when its plugin is imported,
which happens before this one is loaded.  A fixture of the same name registered later by a plugin
wins over the earlier one (and conftest files and test modules still win over both).

It is loaded through ``PYTEST_PLUGINS`` so that the pytest processes that pytester starts load it
as well.  It also imports ``anyio_uring``, which registers the backend even where the start-up
``.pth`` hook is missing.
"""

from __future__ import annotations

from typing import Any

import pytest
from anyio._core import _eventloop

import anyio_uring  # noqa: F401 - registers the backend "uring" with anyio

if "uring" not in _eventloop.BACKENDS:
    _eventloop.BACKENDS = (*_eventloop.BACKENDS, "uring")  # type: ignore[assignment]


@pytest.fixture(scope="module", params=_eventloop.get_available_backends())
def anyio_backend(request: Any) -> Any:
    """anyio's default ``anyio_backend`` fixture, over the backends including ``"uring"``."""
    return request.param
