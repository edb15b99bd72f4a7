"""Files and paths on the ring: ``open_file`` and ``Path``, anyio's interface as ring operations.

* ``_files.py`` -- raw / buffered / text file layers (positional I/O at a Python-tracked offset)
* ``_paths.py`` -- :class:`Path` (``anyio.Path`` with its I/O methods on the ring)

Importing this package imports anyio (the classes subclass anyio's).
"""

from ._files import open_file
from ._paths import Path

__all__ = ["Path", "open_file"]
