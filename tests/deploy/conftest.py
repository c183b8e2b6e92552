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


@pytest.fixture
def run_app(deploy_python: Path, tmp_path: Path) -> Callable[..., AppRun]:
    """``run_app(*args, env={})``: ``python -m pipeline.deploy *args`` in the deploy venv, from a scratch folder.

    The scratch working directory holds no ``models`` folder, so only ``-m``/``HOLOSCAN_MODEL_PATH`` or the
    bundle's checkpoint can give the app a model.
    """
    workdir = tmp_path / "app_cwd"
    workdir.mkdir()

    def run(*args: str | Path, env: dict[str, str] | None = None) -> AppRun:
        done = subprocess.run([str(deploy_python), "-m", "pipeline.deploy", *map(str, args)], cwd=workdir,
                              env=_clean_env(env or {}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=APP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        return AppRun(done.returncode, done.stderr)

    return run


