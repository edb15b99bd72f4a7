"""cffi build script for the native core (``anyio_uring._native._aur``).

Run by setuptools through ``cffi_modules`` in ``setup.py``.  It reads the C interface from
``aur.h`` (the same file ``aur.c`` includes) and the version from ``_version.py`` as text: it never
imports the package it builds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

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


#: The C functions that keep the GIL: they touch memory only -- the preps write an SQE (and, only
#: when the SQ is full, submit without waiting), the pbuf calls write a buffer ring -- so dropping
#: and re-taking the GIL (two mutex round trips, ~400 instructions) would cost more than the call
#: (KERNEL-FACTS section 6).  Every other function releases the GIL around the call, so a function
#: added to aur.h that makes a system call is safe by default.  ``aur_wait`` keeps it only when it
#: can neither sleep nor submit (``_WAIT_MAY_BLOCK`` false): a poll with nothing to submit, which
#: usually makes no system call at all.
KEEP_GIL: Final = re.compile(
    r"aur_prep_\w+|aur_withdraw|aur_cq_ready|aur_has_work|aur_now_ns|aur_version|aur_ring_new"
    r"|aur_pbuf_(?:add|advance|recycle|entry_len)"
)
_WAIT_MAY_BLOCK: Final = "(timeout_ns != 0 && wait_nr != 0) || r->sq_written != r->sq_published"
_DECL: Final = re.compile(r"^([\w ]+?\**)\s*\b(aur_\w+)\(([^)]*)\);", re.M)


def _releasing(decl: re.Match[str], condition: str | None = None) -> str:
    """A static wrapper that calls ``name`` with the GIL released (if ``condition`` holds), and
    the function-like macro that routes cffi's generated call ``name(...)`` to it."""
    ret, name, params = decl.group(1).strip(), decl.group(2), decl.group(3)
    args = "" if params.strip() == "void" else ", ".join(re.findall(r"(\w+)\s*(?:,|$)", params))
    call = f"({name})({args})"  # a parenthesised name is not a macro invocation
    keep, give = ("", "") if ret == "void" else (f"{ret} ret = ", "    return ret;\n")
    fast = (
        f"    if (!({condition}))\n        {'' if ret == 'void' else 'return '}{call};\n" if condition else ""
    )
    return (
        f"static {ret} {name}_releasing_gil({params})\n{{\n{fast}"
        f"    PyThreadState *save = PyEval_SaveThread();\n    {keep}{call};\n"
        f"    PyEval_RestoreThread(save);\n{give}}}\n"
        f"#define {name}(...) {name}_releasing_gil(__VA_ARGS__)\n"
    )


def gil_preamble(cdef: str) -> str:
    """C text that cffi places between its ``#include <Python.h>`` and the wrappers it generates.

    cffi brackets every call with ``Py_BEGIN_ALLOW_THREADS``/``Py_END_ALLOW_THREADS`` and offers
    no per-function switch.  Here those macros are redefined to do nothing, and every function
    not matched by ``KEEP_GIL`` is routed to a wrapper that releases the GIL itself (``aur_wait``
    conditionally).  The ``_cffi_d_*`` variants cffi also generates reach the same wrappers;
    they serve only ``ffi.addressof(lib, name)``, which the package never uses on these
    functions (a call through such a pointer would release a GIL it does not hold).
    """
    decls = {m.group(2): m for m in _DECL.finditer(cdef)}
    unparsed = set(re.findall(r"\b(aur_\w+)\s*\(", cdef)) - set(decls)
    if unparsed or "aur_wait" not in decls:  # e.g. a declaration split over two lines
        raise RuntimeError(f"build.py cannot read aur.h's declarations of {sorted(unparsed)}")
    parts = [
        "#undef Py_BEGIN_ALLOW_THREADS\n#undef Py_END_ALLOW_THREADS\n",
        "#define Py_BEGIN_ALLOW_THREADS {\n#define Py_END_ALLOW_THREADS }\n",
    ]
    for name, decl in sorted(decls.items()):
        if name == "aur_wait":
            parts.append(_releasing(decl, _WAIT_MAY_BLOCK))
        elif not KEEP_GIL.fullmatch(name):
            parts.append(_releasing(decl))
    return "".join(parts)


ffibuilder = FFI()
_CDEF = _cdef_text()
ffibuilder.cdef(_CDEF)
ffibuilder.set_source(
    "anyio_uring._native._aur",
    '#include <stdint.h>\n#include "aur.h"\n' + gil_preamble(_CDEF),
    sources=[str(HERE / "aur.c")],
    include_dirs=[str(HERE)],
    define_macros=[("AUR_VERSION", '"' + _read_version() + '"')],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
