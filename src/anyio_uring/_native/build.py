"""cffi build script for the native core (``anyio_uring._native._aur``).

Run by setuptools through ``cffi_modules`` in ``setup.py``.  It reads the C interface from
``aur.h`` (the same file ``aur.c`` includes) and the version from ``_version.py`` as text: it never
imports the package it builds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

_DIR = (
    Path(__file__).resolve().parent if "__file__" in globals() else Path("src/anyio_uring/_native").resolve()
)
# setuptools insists on paths relative to setup.py's directory (the working directory of a build).
HERE = Path(os.path.relpath(_DIR)) if _DIR.is_relative_to(Path.cwd()) else _DIR
VERSION_FILE = HERE.parent / "_version.py"


def _read_version() -> str:
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', VERSION_FILE.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no __version__ in {VERSION_FILE}")
    return match.group(1)


def _cdef_text() -> str:
    text = (HERE / "aur.h").read_text()
    # cffi's parser does not take C comments inside #define lines; strip all comments.
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "anyio_uring._native._aur",
    '#include <stdint.h>\n#include "aur.h"\n',
    sources=[str(HERE / "aur.c")],
    include_dirs=[str(HERE)],
    define_macros=[("AUR_VERSION", '"' + _read_version() + '"')],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
