"""Benchmark ``dcif fuse-batch``: studies per minute, seconds per study by stage, and peak memory.

Makes phantom PET/CT studies (default two 512 x 512 x 300 CTs at 0.977 x 0.977 x 1.0 mm, cached in
the work folder), then runs the local executor with each worker count on each device and prints a
markdown table naming the CPU (and GPU). Peak memory is the largest resident set of the batch (this
process and its workers together, sampled), also as a multiple of one raw CT in float32. A benchmark,
not a test: nothing here asserts a time.

    .venv/bin/python tools/bench_batch.py                      # full size, CPU (and CUDA if present)
    .venv/bin/python tools/bench_batch.py --size 128,128,64    # a quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch
from machine import device_name

from pipeline.batch import BatchOptions, LocalExecutor, run_batch
from pipeline.batch.report import STAGES, BatchReport
from pipeline.phantom import make_phantom
from pipeline.wording import counted


def _numbers(text: str, kind: type) -> tuple:
    return tuple(kind(part) for part in text.split(","))


def make_studies(root: Path, count: int, size: tuple[int, ...], spacing: tuple[float, ...]) -> Path:
    """``count`` phantom studies in one export folder, made once (truth.json marks a finished one)."""
    export = root / f"export_{'x'.join(map(str, size))}"
    for seed in range(count):
        study = export / f"study_{seed}"
        if not (study / "truth.json").is_file():
            print(f"making phantom study {seed} ({'x'.join(map(str, size))})", flush=True)
            make_phantom(study, ct_shape=size, ct_spacing=spacing, seed=seed, write_nifti=False, progress=True)
    return export


def _resident_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc; 0 where it cannot be read)."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return 0
    return rss + sum(map(_resident_bytes, children))


class PeakMemory:
    """Samples the resident memory of this process tree in a thread while the block runs."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s, self.peak, self._done = interval_s, 0, threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(self.interval_s):
            self.peak = max(self.peak, _resident_bytes(os.getpid()))

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def mean_stages(report: BatchReport) -> dict[str, float]:
    """Seconds per study by stage, averaged over the studies that ran."""
    ran = [result for result in report.studies if result.status == "ok"]
    return {stage: sum(result.timings.get(stage, 0.0) for result in ran) / max(1, len(ran)) for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512,512,300", help="CT columns,rows,slices (default 512,512,300)")
    parser.add_argument("--spacing", default="0.977,0.977,1.0", help="CT spacing in mm (default 0.977,0.977,1.0)")
    parser.add_argument("--studies", type=int, default=2, help="phantom studies (default 2)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    parser.add_argument("--windows", default="lung,mediastinal", help="CT windows (default lung,mediastinal)")
    parser.add_argument("--method", default="laplacian",
                        help="fusers, comma-separated (default laplacian; e.g. average,max,laplacian,dwt,saliency,dcif_gan)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="dcif_gan weights (default: the bundle's checkpoint)")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                        help="devices to run on (default cpu, plus cuda when available)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "dcif_bench_batch",
                        help="where phantoms (kept for re-runs) and outputs (removed) go")
    args = parser.parse_args()

    size, spacing = _numbers(args.size, int), _numbers(args.spacing, float)
    export = make_studies(args.work_dir, args.studies, size, spacing)
    rows = []
    for device in args.devices.split(","):
        options = BatchOptions(methods=tuple(args.method.split(",")), windows=tuple(args.windows.split(",")),
                               device=device, checkpoint=args.checkpoint and str(args.checkpoint))
        for workers in _numbers(args.workers, int):
            out = args.work_dir / f"out_{device}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            with PeakMemory() as memory:
                report = run_batch(export, out, options, executor=LocalExecutor(workers), progress=False)
            wall = time.perf_counter() - start
            shutil.rmtree(out)
            counts = report.counts()
            print(f"{device}, {workers} worker(s): {counts} in {wall:.1f} s", flush=True)
            rows.append((device, workers, counts["ok"] * 60.0 / wall, memory.peak, mean_stages(report)))

    print(f"\n{counted(args.studies, 'phantom study', 'phantom studies')}, CT {args.size} at {args.spacing} mm, "
          f"{args.method}, windows {args.windows}; wall time includes worker start-up\n")
    for device in dict.fromkeys(row[0] for row in rows):
        print(f"- {device}: {device_name(device, torch.get_num_threads())}")
    print()
    raw_ct = 4 * size[0] * size[1] * size[2]  # one CT in float32
    print("| device | workers | studies/min | peak memory GB | x raw CT | "
          + " | ".join(f"{stage} s" for stage in STAGES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(STAGES))
    for device, workers, per_minute, peak, stages in rows:
        print(f"| {device} | {workers} | {per_minute:.2f} | {peak / 1e9:.2f} | {peak / raw_ct:.1f} | "
              + " | ".join(f"{stages[s]:.2f}" for s in STAGES) + " |")


if __name__ == "__main__":
    main()
