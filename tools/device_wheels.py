"""Fetch, here, the wheels that ``tools/device_check.sh`` installs on a lent GPU machine, which reaches no index.

A device machine's image holds PyTorch, NumPy, SciPy, Pillow, tqdm, PyYAML and the like (the device tool's KINDS.md
lists them), not MONAI, ignite, pydicom, nibabel, PyWavelets or isal, which the benchmarks' imports need, and
nothing can be fetched there. This downloads those (:data:`KIT`, without their own needs, which the image has) at the
versions installed beside this script, for the device's Python (3.12, x86-64 Linux), into ``.whl/`` (git-ignored).
The device tool's ``run`` then carries that folder (``carry: [".whl"]``) and ``device_check.sh`` installs it with
``--no-index``; the device's own torch stays as it is.

    .venv/bin/python tools/device_wheels.py                     # then run "bash tools/device_check.sh", carry .whl
    .venv/bin/python tools/device_wheels.py --python-version 3.13 --dest /tmp/wheels
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KIT = ("monai", "pytorch-ignite", "pydicom", "nibabel", "PyWavelets", "isal")
"""Distributions the benchmarks import that the device image lacks (each pure Python but PyWavelets and isal)."""

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
"""pip matches a wheel's platform tag exactly: the tags a compiled wheel for the device's glibc may carry."""


def requirements() -> list[str]:
    """:data:`KIT` pinned to the versions installed here, the ones this checkout is tested with; a one-line error where
    one is not installed (run it with the README's venv)."""
    try:
        return [f"{name}=={version(name)}" for name in KIT]
    except PackageNotFoundError as missing:
        raise SystemExit(f"device_wheels: {missing.name} is not installed beside this Python; run it with "
                         ".venv/bin/python after the README's install") from None


def download(dest: Path, python_version: str) -> None:
    """The kit's wheels into ``dest`` for CPython ``python_version`` on x86-64 Linux; pip's own error where one is
    missing."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation",
                    "cp", "--python-version", python_version, *platforms, "--dest", str(dest), *requirements()],
                   check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPO / ".whl", help="folder of wheels (default: .whl/)")
    parser.add_argument("--python-version", default="3.12", help="the device's Python (default 3.12)")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    for wheel in list(args.dest.glob("*.whl")):  # one version of each: two stop the device's install
        wheel.unlink()
    download(args.dest, args.python_version)
    print(f"{len(list(args.dest.glob('*.whl')))} wheels in {args.dest}: carry it to the device and run "
          "bash tools/device_check.sh")


if __name__ == "__main__":
    main()
