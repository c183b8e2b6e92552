"""The device kit: what device_check.sh runs imports nothing that a lent GPU machine's image and the kit lack."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Top-level modules of the device image (the device tool's KINDS.md) that the benchmarks may import, torch's own needs
# among them.
IMAGE_MODULES = frozenset({
    "torch", "torchgen", "functorch", "numpy", "scipy", "PIL", "tqdm", "yaml", "packaging", "typing_extensions",
    "sympy", "mpmath", "filelock", "fsspec", "jinja2", "markupsafe", "networkx", "requests", "urllib3", "idna",
    "certifi", "charset_normalizer", "psutil", "triton",
})

# Installed first in every Python process the benchmarks start (cells run in processes of their own): a top-level
# module that would come from site-packages but is neither the device image's nor the kit's is missing, as there.
BLOCKER = """
import sys
from importlib.machinery import PathFinder

ALLOWED = set({allowed!r})


class DeviceImage:
    def find_spec(self, name, path=None, target=None):
        if "." in name or name in sys.stdlib_module_names or name in ALLOWED:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is not None and "-packages" in (spec.origin or next(iter(spec.submodule_search_locations or []), "")):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the device image)", name=name)
        return None


sys.meta_path.insert(0, DeviceImage())
"""


def test_benchmarks_need_only_the_device_image_and_the_kit(load_tool, tmp_path: Path) -> None:
    """A cell of each benchmark device_check.sh runs, on the CPU, with every installed package but the image's and
    the kit's hidden: fails when an import that the kit does not carry enters their path (as pywt, pydicom and nibabel
    did through the losses' import of the fusers)."""
    wheels = load_tool("device_wheels")
    kit = {name.lower() for name in wheels.KIT}
    kit_modules = {top for top, dists in packages_distributions().items() if kit & {d.lower() for d in dists}}
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(allowed=sorted(IMAGE_MODULES | kit_modules)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tmp_path), str(REPO)))}
    hidden = subprocess.run([sys.executable, "-c", "import mlflow"], env=env, capture_output=True, text=True)
    assert "not on the device image" in hidden.stderr  # the blocker is in place
    commands = (["bench_network.py", "--configs", "shipped", "--sizes", "32", "--batches", "1", "--repeats", "1",
                 "--layouts", "fast", "monai"],
                ["bench_training.py", "--configs", "shipped", "--crops", "16", "--batch", "2", "--iterations", "1",
                 "--seconds", "0", "--layouts", "fast", "before"])
    # Both at once: each is mostly single-threaded imports, one process per cell.
    started = [subprocess.Popen([sys.executable, str(REPO / "tools" / command[0]), *command[1:]], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands]
    for process in started:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0 and "failed" not in stdout, stdout[-2000:] + stderr[-2000:]


def test_the_kit_is_pinned_to_what_this_checkout_runs(load_tool) -> None:
    wheels = load_tool("device_wheels")
    pinned = wheels.requirements()
    assert [spec.split("==")[0] for spec in pinned] == list(wheels.KIT)
    assert all(spec.split("==")[1] for spec in pinned)


def test_a_kit_package_missing_here_is_a_one_line_error(load_tool, monkeypatch) -> None:
    wheels = load_tool("device_wheels")
    monkeypatch.setattr(wheels, "KIT", ("monai", "no-such-distribution"))
    with pytest.raises(SystemExit, match="no-such-distribution is not installed beside this Python"):
        wheels.requirements()
