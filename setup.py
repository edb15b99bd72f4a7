"""Only here for what pyproject.toml cannot say: the cffi module, and the ``.pth`` start-up hook.

``anyio_uring.pth`` must land at the top of site-packages (not inside the package) for every way
of installing: a wheel / ``pip install .`` (copied into ``build_lib``, which becomes the wheel's
root) and an editable install (setuptools assembles the editable wheel from the ``install_lib``
directory; ``build_lib`` is a throw-away directory there).  Its one line imports
``_anyio_uring_hook`` (see that module) and can never break interpreter start-up.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "anyio_uring.pth"
PTH_LINE = 'import sys; exec("try:\\n import _anyio_uring_hook\\nexcept Exception:\\n pass")\n'


class build_py_with_pth(build_py):
    """build_py that also writes ``anyio_uring.pth`` next to the packages."""

    def run(self):
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        self.mkpath(target)
        path = os.path.join(target, PTH_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


setup(
    cffi_modules=["src/anyio_uring/_native/build.py:ffibuilder"],
    cmdclass={"build_py": build_py_with_pth},
)
