"""Only here for cffi_modules: everything else lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["src/anyio_uring/_native/build.py:ffibuilder"])
