"""Drive the deploy app in its own virtual environment: the SDK is never installed in the main one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TIMEOUT_S = 300  # start-up is ~10 s; a hang must fail the test, not the CI run
APP_MODULE = "pipeline.deploy"


def deploy_python_path() -> Path:
    """The deploy venv's python (``DCIF_DEPLOY_PYTHON`` overrides ``.venv-deploy``)."""
    return Path(os.environ.get("DCIF_DEPLOY_PYTHON", REPO_ROOT / ".venv-deploy" / "bin" / "python"))


@pytest.fixture(scope="session")
def deploy_python() -> Path:
    """The deploy venv's python, or a skip saying how to make it."""
    python = deploy_python_path()
    if not python.is_file():
        pytest.skip(f"deploy virtualenv not found at {python} (create .venv-deploy with the deploy extra "
                    "or set DCIF_DEPLOY_PYTHON)")
    return python


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment without the SDK's path variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HOLOSCAN_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class AppRun:
    """One finished run of the app; prints as its exit status and output tail, for assertion messages."""

    returncode: int
    stderr: str

    @property
    def last_line(self) -> str:
        return self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""

    def __str__(self) -> str:
        return f"exit {self.returncode}\n{self.stderr[-3000:]}"


def _entry(preamble: str) -> list[str]:
    """The interpreter's arguments that run the app's entry point, after ``preamble`` (Python code) when given."""
    if not preamble:
        return ["-m", APP_MODULE]
    return ["-c", f"{preamble}\nimport runpy\nrunpy.run_module({APP_MODULE!r}, run_name='__main__')"]


class AppProcess:
    """``python -m pipeline.deploy *args`` started in the deploy venv from ``workdir``; :meth:`wait` gives its run.

    ``preamble``: Python code run in the app's process first (to inject a failure). Its stderr goes to a file in
    ``workdir``, not a pipe, so that several can run at once without filling one.
    """

    def __init__(self, python: Path, workdir: Path, args: tuple[str | Path, ...], env: dict[str, str] | None,
                 preamble: str = "") -> None:
        self.stderr_file = workdir / "stderr.txt"
        with self.stderr_file.open("w") as stderr:
            self.process = subprocess.Popen([str(python), *_entry(preamble), *map(str, args)], cwd=workdir,
                                            env=_clean_env(env or {}), stdout=subprocess.DEVNULL, stderr=stderr,
                                            stdin=subprocess.DEVNULL)

    def wait(self) -> AppRun:
        try:
            returncode = self.process.wait(timeout=APP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return AppRun(returncode, self.stderr_file.read_text())


def wait_all(started: dict[str, AppProcess]) -> dict[str, AppRun]:
    """The runs of apps started together, by name; if one cannot be waited for, the others are killed too."""
    try:
        return {name: process.wait() for name, process in started.items()}
    finally:
        for process in started.values():
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait()


@pytest.fixture(scope="session")
def start_app(deploy_python: Path) -> Callable[..., AppProcess]:
    """``start_app(workdir, *args, env={}, preamble="")``: the app started from ``workdir`` (made here, with no
    ``models`` folder, so only ``-m``/``HOLOSCAN_MODEL_PATH`` or the bundle's checkpoint can give it a model)."""

    def start(workdir: Path, *args: str | Path, env: dict[str, str] | None = None, preamble: str = "") -> AppProcess:
        workdir.mkdir(parents=True)
        return AppProcess(deploy_python, workdir, args, env, preamble)

    return start


@pytest.fixture
def run_app(start_app: Callable[..., AppProcess], tmp_path: Path) -> Callable[..., AppRun]:
    """``run_app(*args, env={})``: the app run to its end from a scratch folder of the test's (see ``start_app``)."""

    def run(*args: str | Path, env: dict[str, str] | None = None) -> AppRun:
        return start_app(tmp_path / "app_cwd", *args, env=env).wait()

    return run
