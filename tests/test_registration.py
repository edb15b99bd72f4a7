"""Registration of the anyio backend "uring", the way users will try it.

Each test runs a fresh interpreter of a *real, fresh* virtual environment (created once per test
session in a temporary directory) into which a copy of this project was installed with
``pip install <dir>`` -- or ``pip install -e <dir>`` for the editable-install tests -- so that the
start-up ``.pth`` hook, the wheel contents and the import finder are exercised exactly as
installed, not as they happen to be in the development environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import run_captured

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".hypothesis", "_cache", "results",
)  # fmt: skip


@dataclass(frozen=True)
class Env:
    """A virtual environment with the project installed."""

    root: Path
    source: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        out = self.run("import sysconfig; print(sysconfig.get_paths()['purelib'])")
        return Path(out.stdout.strip())

    def run(
        self, code: str, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = run_captured(
            [str(self.python), *args, "-c", textwrap.dedent(code)], env=_clean_env(env), cwd=self.root
        )
        if check and proc.returncode != 0:
            pytest.fail(f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without this test run's Python settings (no PYTHONPATH into the dev
    checkout, no pytest plugins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST", "VIRTUAL_ENV"))}
    env.update(extra or {})
    return env


def _pip(env_root: Path, *args: str) -> None:
    python = str(env_root / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    proc = run_captured(pip, timeout=600, env=_clean_env())
    if proc.returncode != 0:
        pytest.fail(f"pip install {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _make_env(base: Path, *, editable: bool) -> Env:
    source = base / "src-copy"
    shutil.copytree(REPO, source, ignore=_IGNORE)
    root = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    _pip(root, "pytest")
    _pip(root, *(["-e", str(source)] if editable else [str(source)]))
    return Env(root, source)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """``pip install <project>`` into a fresh venv."""
    return _make_env(tmp_path_factory.mktemp("installed"), editable=False)


@pytest.fixture(scope="session")
def editable(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """``pip install -e <project>`` into a fresh venv."""
    return _make_env(tmp_path_factory.mktemp("editable"), editable=True)


PLAIN_RUN = """
    import sys, sniffio, anyio
    assert "anyio_uring" not in sys.modules

    async def main():
        from anyio._core._eventloop import get_async_backend
        return sniffio.current_async_library(), get_async_backend().__module__, sniffio.thread_local.name

    print(anyio.run(main, backend="uring"))
    print(sniffio.thread_local.name, "anyio_uring.backend" in sys.modules)
"""


# ------------------------------------------------------------------------------------------
# the files an install leaves
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["installed", "editable"])
def test_pth_lands_in_site_packages(kind: str, request: pytest.FixtureRequest) -> None:
    env: Env = request.getfixturevalue(kind)
    site = env.site_packages
    pth = site / "anyio_uring.pth"
    assert pth.is_file()
    assert "import _anyio_uring_hook" in pth.read_text()
    record = next(site.glob("anyio_uring-*.dist-info")) / "RECORD"
    assert "anyio_uring.pth," in record.read_text()  # so that pip uninstall removes it
    if kind == "installed":
        assert (site / "_anyio_uring_hook.py").is_file()


def test_wheel_contains_the_pth_and_the_hook(installed: Env, tmp_path: Path) -> None:
    wheel = [str(installed.python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path)]
    proc = run_captured([*wheel, str(installed.source)], timeout=600, env=_clean_env())
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("anyio_uring-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "anyio_uring.pth" in names
    assert "_anyio_uring_hook.py" in names


# ------------------------------------------------------------------------------------------
# the ways users will try it
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["installed", "editable"])
def test_plain_anyio_run_without_importing_anything(kind: str, request: pytest.FixtureRequest) -> None:
    env: Env = request.getfixturevalue(kind)
    lines = env.run(PLAIN_RUN).stdout.splitlines()
    assert lines == ["('uring', 'anyio_uring.backend', 'uring')", "None True"]


def test_import_anyio_uring_then_run(installed: Env) -> None:
    out = installed.run(
        """
        import anyio, anyio_uring
        from anyio._core._eventloop import loaded_backends
        from anyio_uring.backend import UringBackend
        assert loaded_backends["uring"] is UringBackend  # registered directly: anyio was loaded

        async def main():
            return anyio.get_current_task().name

        print(anyio.run(main, backend="uring"))
        """
    )
    assert out.stdout.strip() == "__main__.main"


def test_import_anyio_uring_before_anyio(installed: Env) -> None:
    out = installed.run(
        """
        import sys, anyio_uring
        assert "anyio" not in sys.modules  # importing anyio_uring does not import anyio
        import anyio

        async def main():
            return 42

        print(anyio.run(main, backend="uring"))
        """
    )
    assert out.stdout.strip() == "42"


def test_register_without_the_start_up_hook(installed: Env) -> None:
    """``python -S`` skips site-packages' ``.pth`` files: importing anyio_uring installs the
    finder instead (site-packages added by hand, as a user with an unusual set-up would)."""
    out = installed.run(
        f"""
        import sys
        sys.path.append({str(installed.site_packages)!r})
        assert "_anyio_uring_hook" not in sys.modules
        import anyio_uring  # before anyio: the backend is found through the import finder
        import anyio

        async def main():
            return "ok"

        print(anyio.run(main, backend="uring"))
        """,
        "-S",
    )
    assert out.stdout.strip() == "ok"


def test_start_up_imports_neither_anyio_nor_cffi(installed: Env) -> None:
    out = installed.run(
        """
        import sys
        print(sorted(m for m in ("_anyio_uring_hook", "anyio", "cffi", "anyio_uring") if m in sys.modules))
        """
    )
    assert out.stdout.strip() == "['_anyio_uring_hook']"


def test_a_broken_hook_cannot_break_start_up(installed: Env, tmp_path: Path) -> None:
    (tmp_path / "_anyio_uring_hook.py").write_text("raise RuntimeError('broken hook')\n")
    out = installed.run("print('started')", env={"PYTHONPATH": str(tmp_path)})
    assert out.stdout.strip() == "started"
    assert out.stderr == ""


def test_blocking_portal(installed: Env) -> None:
    out = installed.run(
        """
        import sniffio
        from anyio.from_thread import start_blocking_portal

        async def which(x):
            return sniffio.current_async_library(), x

        with start_blocking_portal(backend="uring") as portal:
            print(portal.call(which, 1))
        """
    )
    assert out.stdout.strip() == "('uring', 1)"


def test_anyio_pytest_plugin(installed: Env, tmp_path: Path) -> None:
    (tmp_path / "test_uses_uring.py").write_text(
        textwrap.dedent(
            """
            import pytest, sniffio, anyio

            @pytest.fixture(scope="module")
            def anyio_backend():
                return "uring"

            @pytest.fixture(scope="module")
            async def group():
                async with anyio.create_task_group() as tg:
                    done = anyio.Event()
                    tg.start_soon(done.wait)
                    yield tg, done
                    done.set()

            @pytest.mark.anyio
            async def test_one(group):
                assert sniffio.current_async_library() == "uring"
                await anyio.sleep(0)

            @pytest.mark.anyio
            async def test_two(group):
                assert not group[1].is_set()
            """
        )
    )
    proc = run_captured(
        [str(installed.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_uninstall_removes_the_hook(tmp_path: Path, installed: Env) -> None:
    """Runs last in this module (it uninstalls from the session's venv)."""
    site = installed.site_packages
    proc = run_captured(
        [str(installed.python), "-m", "pip", "uninstall", "--yes", "--quiet", "anyio_uring"], env=_clean_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert not (site / "anyio_uring.pth").exists()
    assert not (site / "_anyio_uring_hook.py").exists()
    assert installed.run("print('fine')").stdout.strip() == "fine"
    out = installed.run(
        """
        import anyio
        try:
            anyio.run(lambda: None, backend="uring")
        except LookupError as exc:
            print(exc)
        """
    )
    assert out.stdout.strip() == "No such backend: uring"
