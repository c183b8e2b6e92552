"""Benchmark the DCIF-GAN generator: forward time, peak memory and parameter counts.

Each (variant, device, dtype, batch) cell runs in a fresh subprocess, so its peak memory is its
own: on CPU the rise of the process high-water mark VmHWM (reset through /proc/self/clear_refs)
over the resident size before the first full-size forward (Python-level tracers cannot see torch's
buffers), on CUDA ``torch.cuda.max_memory_allocated`` over the allocation before it. That first call
is also the warm-up; the timed calls follow it. Forward passes run the generator's single-tensor call (what inference
uses) under ``torch.inference_mode``; bf16 uses autocast. The ratio column compares time per slice
with the first variant's float32 batch-1 cell on the same device (by default network1, CNN only).

    .venv/bin/python tools/bench_network.py                       # CPU, plus CUDA when present
    .venv/bin/python tools/bench_network.py --variants network4 --batches 1 --repeats 1 --threads 1

On a CPU shared with other jobs, ``--threads 1`` gives steadier numbers: with more threads than
free cores, every small kernel waits on the busiest one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch

from pipeline.networks import DCIFGAN, count_parameters

DTYPES = {"float32": None, "bf16": torch.bfloat16}


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def measure(
    variant: str, device: str, dtype: str, batch: int, size: int, repeats: int, threads: int | None, model_kwargs: dict
) -> dict:
    """Median seconds per forward call and peak memory (MiB) of one cell; run in its own process."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    generator = DCIFGAN(variant, **model_kwargs).generator.to(device).eval()
    cuda = device.startswith("cuda")

    def forward(x: torch.Tensor) -> None:
        autocast = torch.autocast(device.split(":")[0], DTYPES[dtype], enabled=dtype != "float32")
        with torch.inference_mode(), autocast:
            generator(x)
        if cuda:
            torch.cuda.synchronize()

    forward(torch.rand(1, 2, 16, 16, device=device))  # load kernels and libraries outside the measurement
    x = torch.rand(batch, 2, size, size, device=device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current RSS
    forward(x)  # first full-size call: its peak is the one reported; also the timing warm-up
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    return {"seconds": median(times), "peak_mib": (peak - baseline) / 2**20}


def _run_cell(args: argparse.Namespace, variant: str, device: str, dtype: str, batch: int) -> dict:
    cell = {"variant": variant, "device": device, "dtype": dtype, "batch": batch}
    request = {**cell, "size": args.size, "repeats": args.repeats, "threads": args.threads}
    request["model_kwargs"] = _model_kwargs(args)
    done = subprocess.run(
        [sys.executable, __file__, "--cell", json.dumps(request)], capture_output=True, text=True, check=True
    )
    return {**cell, **json.loads(done.stdout.strip().splitlines()[-1])}


def _model_kwargs(args: argparse.Namespace) -> dict:
    return {
        "width": args.width,
        "num_heads": args.heads,
        "window_size": args.window,
        "mlp_ratio": args.mlp_ratio,
    }


def _device_name(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {threads} torch threads, load average {os.getloadavg()[0]:.1f}"


def _table(args: argparse.Namespace, cells: list[dict]) -> str:
    params = {}
    for variant in args.variants:
        model = DCIFGAN(variant, **_model_kwargs(args))
        params[variant] = (count_parameters(model.generator), count_parameters(model.d1, model.d2))
    baselines = {}
    for c in cells:
        if c["variant"] == args.variants[0] and c["dtype"] == "float32" and c["batch"] == 1:
            baselines.setdefault(c["device"], c["seconds"])
    threads = args.threads or torch.get_num_threads()
    devices = "; ".join(f"{d} = {_device_name(d, threads)}" for d in dict.fromkeys(c["device"] for c in cells))
    lines = [
        f"DCIF-GAN generator forward, {args.size}x{args.size} slice pairs, width {args.width}, "
        f"{args.heads} heads, window {args.window}, MLP ratio {args.mlp_ratio}; median of {args.repeats} "
        f"after 1 warm-up. Devices: {devices}.",
        "",
        "| variant | device | dtype | batch | ms / call | ms / slice | x baseline | peak MiB "
        "| G params | D params | total |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        g, d = params[c["variant"]]
        per_slice = c["seconds"] / c["batch"]
        ratio = per_slice / baselines[c["device"]] if c["device"] in baselines else float("nan")
        lines.append(
            f"| {c['variant']} | {c['device']} | {c['dtype']} | {c['batch']} | {1e3 * c['seconds']:.0f} | "
            f"{1e3 * per_slice:.0f} | {ratio:.2f} | {c['peak_mib']:.0f} | {g:,} | {d:,} | {g + d:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["network1", "network4"])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="default: float32 on CPU, both on CUDA")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=356)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--mlp-ratio", type=float, default=2.0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU (default: torch's choice)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: measure one cell in this process
    args = parser.parse_args()

    if args.cell:
        print(json.dumps(measure(**json.loads(args.cell))))
        return
    cells = []
    for device in args.devices:
        dtypes = args.dtypes or (["float32", "bf16"] if device.startswith("cuda") else ["float32"])
        for variant in args.variants:
            for dtype in dtypes:
                for batch in args.batches:
                    cells.append(_run_cell(args, variant, device, dtype, batch))
                    print(f"measured {cells[-1]}", file=sys.stderr)
    print(_table(args, cells))


if __name__ == "__main__":
    main()
