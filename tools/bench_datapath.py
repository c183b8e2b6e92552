"""Time and memory of the data path (discover, load, SUV, resample, window) on a large phantom study.

Usage: ``python tools/bench_datapath.py [--study DIR] [--out DIR] [--ct-shape 512,512,300]``.
Without ``--study`` a phantom is made (or reused when ``--out`` already holds one). The stages run in
a fresh subprocess so its peak resident memory (VmHWM, reset per stage through /proc/self/clear_refs)
reflects the data path alone, measured above the resident size after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine import cpu_model, status_kib

GIB = 1024**3


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_stages(study: Path) -> dict[str, object]:
    """Run each stage once, keeping the outputs a real run keeps; returns timings and peak RSS."""
    from pipeline.io.dicom import load_series
    from pipeline.io.discovery import discover_studies
    from pipeline.transforms.resample import ResampleToReference
    from pipeline.transforms.suv import PETToSUV
    from pipeline.transforms.windowing import CTWindow

    baseline_kib = status_kib("VmRSS")
    per_stage_peaks = _reset_peak()
    rows: list[dict[str, object]] = []
    state: dict[str, object] = {}

    def stage(name: str, action: Callable[[], None]) -> None:
        _reset_peak()
        start = time.perf_counter()
        action()
        rows.append({"stage": name, "seconds": time.perf_counter() - start,
                     "peak_kib": status_kib("VmHWM") - baseline_kib})

    def discover() -> None:
        result = discover_studies(study)
        (state["pair"],) = result.pairs
        state["files"] = state["pair"].ct.n_slices + state["pair"].pet.n_slices

    stage("discover", discover)
    stage("load CT", lambda: state.update(ct=load_series(state["pair"].ct)))
    stage("load PET", lambda: state.update(pet=load_series(state["pair"].pet)))
    pet_shape = list(state["pet"].shape[1:])
    stage("SUV", lambda: state.update(pet=PETToSUV()(state["pet"])))
    stage("resample PET onto CT", lambda: state.update(pet=ResampleToReference()(state["pet"], state["ct"])))
    stage("window (lung)", lambda: state.update(ct_lung=CTWindow("lung")(state["ct"])))
    return {"rows": rows, "per_stage_peaks": per_stage_peaks, "ct_shape": list(state["ct"].shape[1:]),
            "pet_shape": pet_shape, "files": state["files"], "peak_kib": max(row["peak_kib"] for row in rows)}


def markdown(report: dict[str, object]) -> str:
    x, y, z = report["ct_shape"]
    raw_gib = x * y * z * 4 / GIB
    lines = [
        f"Device: {cpu_model()} ({len(os.sched_getaffinity(0))} cores available)  ",
        f"CT {x}x{y}x{z} (raw float32 {raw_gib:.2f} GiB), PET {'x'.join(map(str, report['pet_shape']))}, "
        f"{report['files']} DICOM files",
        "",
        "| stage | time (s) | peak RSS above baseline (GiB) | peak / raw CT |",
        "|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        peak = row["peak_kib"] * 1024 / GIB
        lines.append(f"| {row['stage']} | {row['seconds']:.2f} | {peak:.2f} | {peak / raw_gib:.2f}x |")
    total = sum(row["seconds"] for row in report["rows"])
    peak = report["peak_kib"] * 1024 / GIB
    lines.append(f"| **total** | **{total:.2f}** | **{peak:.2f}** | **{peak / raw_gib:.2f}x** |")
    if not report["per_stage_peaks"]:
        lines.append("\n(per-stage peaks unavailable: /proc/self/clear_refs refused; peaks are cumulative)")
    return "\n".join(lines)


def ensure_study(args: argparse.Namespace) -> Path:
    if args.study:
        return args.study
    out = args.out or Path(tempfile.gettempdir()) / "dcif_bench_phantom"
    if (out / "truth.json").is_file():
        print(f"reusing phantom in {out}", file=sys.stderr)
        return out
    from pipeline.phantom import make_phantom

    shape = tuple(int(v) for v in args.ct_shape.split(","))
    spacing = tuple(float(v) for v in args.ct_spacing.split(","))
    start = time.perf_counter()
    make_phantom(out, ct_shape=shape, ct_spacing=spacing, seed=0)
    print(f"made phantom {shape} in {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, help="existing study folder (skips making a phantom)")
    parser.add_argument("--out", type=Path, help="where to make or reuse the phantom")
    parser.add_argument("--ct-shape", default="512,512,300")
    parser.add_argument("--ct-spacing", default="0.9765625,0.9765625,1.0")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_stages(args.study)))
        return
    study = ensure_study(args)
    worker = subprocess.run([sys.executable, __file__, "--worker", "--study", str(study)],
                            check=True, capture_output=True, text=True)
    print(markdown(json.loads(worker.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
