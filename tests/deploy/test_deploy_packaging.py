"""The container recipe and the packager's files, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.bundle_model import BUNDLE_ENV
from pipeline.deploy import sdk_installed

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DEPLOY_DIR = REPO_ROOT / "pipeline" / "deploy"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines
            if line and not line.startswith("#")]


APP_DIR = "/opt/holoscan/app"  # where the MAP packager puts the application folder


def _copies() -> dict[str, str]:
    """Destination -> source of the Dockerfile's single-source COPY instructions."""
    pairs = [[w for w in shlex.split(args) if not w.startswith("--")]
             for name, args in _instructions() if name == "COPY"]
    return {words[-1]: words[0] for words in pairs if len(words) == 2}


def test_image_runs_the_app_folder_as_the_packager_lays_it_out():
    (entrypoint,) = [json.loads(args) for name, args in _instructions() if name == "ENTRYPOINT"]
    copies = _copies()
    assert entrypoint == ["python", APP_DIR]
    assert copies[f"{APP_DIR}/__main__.py"] == "pipeline/deploy/__main__.py"
    assert copies[f"{APP_DIR}/pipeline"] == "pipeline"
    assert copies["/opt/holoscan/models/dcif_gan"] == "bundles/dcif_gan"  # one bundle folder per model
    assert copies["/var/holoscan/app.yaml"] == "pipeline/deploy/app.yaml"


def test_every_copied_path_exists():
    copies = [shlex.split(args) for name, args in _instructions() if name == "COPY"]
    sources = [source for words in copies for source in [w for w in words if not w.startswith("--")][:-1]]
    assert "pipeline" in sources and "bundles/dcif_gan" in sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which the repository lacks"


def test_image_is_cuda_runs_as_non_root_and_bakes_the_bundle():
    instructions = _instructions()
    assert "cuda" in next(args for name, args in instructions if name == "FROM")
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(name == "RUN" and "torch==2.13.0" in args for name, args in instructions)
    assert any(name == "RUN" and f"-r {APP_DIR}/requirements.txt" in args for name, args in instructions)
    env = " ".join(args for name, args in instructions if name == "ENV")
    for variable in ("HOLOSCAN_MODEL_PATH=/opt/holoscan/models", f"HOLOSCAN_APPLICATION={APP_DIR}",
                     "HOLOSCAN_INPUT_PATH=/var/holoscan/input", "HOLOSCAN_OUTPUT_PATH=/var/holoscan/output"):
        assert variable in env


def test_image_loads_checkpoint_files_into_the_bundle_it_ships():
    """``-m <checkpoint file>`` builds the network of ``$DCIF_GAN_BUNDLE``'s bundle: the image names the one it copies
    (the default, a source checkout's bundles/dcif_gan, is not in it)."""
    (bundle,) = [destination for destination, source in _copies().items() if source == "bundles/dcif_gan"]
    env = " ".join(args for name, args in _instructions() if name == "ENV").split()
    assert f"{BUNDLE_ENV}={bundle}" in env


def test_packager_requirements_are_the_core_plus_the_deploy_extra():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    expected = set(project["dependencies"]) | set(project["optional-dependencies"]["deploy"])
    lines = (DEPLOY_DIR / "requirements.txt").read_text().splitlines()
    assert {line for line in lines if line and not line.startswith("#")} == expected


def test_app_manifest_names_the_application_and_its_resources():
    manifest = yaml.safe_load((DEPLOY_DIR / "app.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert str(manifest["application"]["version"]) == project["version"] == pipeline.__version__
    assert manifest["application"]["inputFormats"] == ["file"]
    assert {"cpu", "memory"} <= set(manifest["resources"])


def test_core_package_never_imports_the_sdk():
    offenders = [path.relative_to(REPO_ROOT) for path in (REPO_ROOT / "pipeline").rglob("*.py")
                 if DEPLOY_DIR not in path.parents and "monai.deploy" in path.read_text()]
    assert not offenders, f"only pipeline/deploy may import the MONAI Deploy SDK: {offenders}"


@pytest.mark.skipif(sdk_installed(), reason="this environment has the MONAI Deploy SDK")
def test_entrypoint_without_the_sdk_names_the_missing_extra():
    done = subprocess.run([sys.executable, "-m", "pipeline.deploy", "-i", "in", "-o", "out"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip() == ("dcif-deploy: error: monai-deploy-app-sdk is missing: install the deploy extra, "
                                   "pip install -e '.[deploy]'")


def test_entrypoint_imports_and_finds_the_model_where_the_packager_puts_it(deploy_python, tmp_path):
    """In the deploy venv the image's ``__main__`` module is there, its app is an SDK Application, and the
    model is found in the packager's ``models/<name>`` layout; a bundle given without weights is no model (not the
    default bundle's), and only no folder at all means the default bundle (one interpreter: the SDK takes ~10 s to
    import)."""
    bundle = tmp_path / "models" / "dcif_gan"
    shutil.copytree(REPO_ROOT / "bundles" / "dcif_gan" / "configs", bundle / "configs")
    weightless = tmp_path / "weightless" / "dcif_gan"
    shutil.copytree(bundle / "configs", weightless / "configs")
    checkpoint = bundle / "models" / "model.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    code = ("import importlib.util; assert importlib.util.find_spec('pipeline.deploy.__main__'); "
            "from monai.deploy.core import Application; "
            "from pipeline.deploy.app import DcifFusionApp, find_model; "
            "assert issubclass(DcifFusionApp, Application); "
            f"print(find_model({str(tmp_path / 'models')!r})[1]); "
            f"print(find_model({str(weightless)!r}), find_model({str(weightless.parent)!r})); "
            f"found = find_model({str(tmp_path / 'absent')!r}); print(found and found[0])")
    done = subprocess.run([str(deploy_python), "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()[-3:]
    assert lines[:2] == [str(checkpoint), "None None"]
    default = REPO_ROOT / "bundles" / "dcif_gan"
    assert lines[2] == (str(default) if (default / "models" / "model.pt").is_file() else "None")
