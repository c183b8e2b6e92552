"""Benchmark the DCIF-GAN generator against the hardware: GFLOP/s, efficiency, scaling, memory.

For each network configuration, slice size, batch and device, one fresh subprocess measures the
generator's forward (inference mode, the single-tensor call inference uses): GFLOP per slice
(``torch.utils.flop_counter``, which counts convolutions and linear layers but not the attention
kernel, so attention time is pure overhead in these rates), ms per slice, achieved GFLOP/s, peak
memory, and the float32 2048 x 2048 matmul rate measured right before and after the cell in the
same process: the efficiency column is achieved / matmul. A cell of several slices also times one of them, the
two alternating in its process, for the per-slice cost of batching (across processes a busy machine's drift reads as
one). The pixel average is the floor every fuser pays. Besides the product's layout (``fast``, with the CPU
attention kernel where it applies) each cell can be measured as ``sdpa`` (the same code with the kernel switched
off), ``monai`` (MONAI's own Swin blocks, slow) and ``baseline`` (``--baseline DIR``: the ``pipeline``
package of another checkout, e.g. ``git worktree add /tmp/base <commit>``); the "x slower" column
of those rows is their time over ``fast``'s. A benchmark, not a test: nothing asserts a time.

    .venv/bin/python tools/bench_network.py                                   # CPU, 2 threads
    .venv/bin/python tools/bench_network.py --configs paper --sizes 512 --batches 1 --layouts fast monai
    .venv/bin/python tools/bench_network.py --layouts fast sdpa baseline --baseline /tmp/base
    .venv/bin/python tools/bench_network.py --devices cuda --dtypes float32 bf16 --batches 1 32

Configurations: ``shipped`` (the bundle's ``network_def``: width 16, 2 heads, depths 2/2/1), ``paper`` (width 32,
4 heads, depths 4/4/2, the paper's block counts), ``swinfusion`` (width 60, 6 heads, depths 4/4/2, SwinFusion's size
built from our blocks); all Network4, window 8, MLP ratio 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch
from machine import device_name, status_kib

REPO = Path(__file__).resolve().parents[1]
_SHIPPED = json.loads((REPO / "bundles" / "dcif_gan" / "configs" / "inference.json").read_text())["network_def"]
CONFIGS = {
    "shipped": {key: _SHIPPED[key] for key in ("width", "num_heads", "depths")},  # the bundle's network_def
    "paper": {"width": 32, "num_heads": 4, "depths": (4, 4, 2)},
    "swinfusion": {"width": 60, "num_heads": 6, "depths": (4, 4, 2)},
}
DTYPES = {"float32": None, "bf16": torch.bfloat16}


def matmul_rate(device: str) -> float:
    """float32 GFLOP/s of a 2048 x 2048 matmul on ``device`` (median of 3 after a warm-up)."""
    a = torch.rand(2048, 2048, device=device)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        a @ a
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / median(times[1:]) / 1e9


LAYOUTS = ("fast", "sdpa", "monai", "baseline")


def cell_environment(layout: str, baseline: str | None) -> dict[str, str]:
    """The environment a cell of ``layout`` runs in: the kernels off for ``sdpa``, another checkout for ``baseline``,
    and glibc's default allocator for the layouts that stand for the code before the fast path (``monai``,
    ``before``), which kept no freed memory (:mod:`pipeline.networks.cpu_allocator`)."""
    env = dict(os.environ)
    if layout == "sdpa":
        env["DCIF_CPU_KERNELS"] = "0"
    if layout in ("monai", "before"):
        env["DCIF_KEEP_FREED_MEMORY"] = "0"
    if layout == "baseline":
        if not baseline:
            raise SystemExit("the baseline layout needs --baseline DIR (a checkout holding the pipeline package)")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(baseline).resolve()), env.get("PYTHONPATH"))))
    return env


def _network(config: str, layout: str, device: str) -> torch.nn.Module:
    from pipeline.networks import DCIFGAN

    torch.manual_seed(0)
    generator = DCIFGAN("network4", window_size=8, mlp_ratio=2.0, **CONFIGS[config]).generator
    if layout == "monai":
        sys.path.insert(0, str(REPO))
        from tests.networks.monai_reference import reference_generator

        generator = reference_generator(generator)
    return generator.to(device).eval()


def _addmm_flops(self_shape: torch.Size, mat1_shape: torch.Size, mat2_shape: torch.Size, *args, **kwargs) -> int:
    """FLOPs of ``addmm_``: those of its product, as torch counts ``addmm``."""
    return 2 * mat1_shape[0] * mat1_shape[1] * mat2_shape[1]


def measure(config: str, layout: str, device: str, dtype: str, batch: int, size: int, repeats: int,
            threads: int | None, compile: bool) -> dict:
    """One cell, in its own process so its peak memory is its own."""
    from torch.utils import flop_counter
    from torch.utils.flop_counter import FlopCounterMode

    if torch.ops.aten.addmm_ not in flop_counter.flop_registry:
        # The blocks fold their output projections into the residual with in-place addmm_ (no autograd): count it
        # as the addmm it is, or the fast layout would show fewer GFLOP than the same network elsewhere.
        flop_counter.register_flop_formula(torch.ops.aten.addmm_)(_addmm_flops)

    if threads:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    if layout == "average":
        network = eager = lambda x: x.mean(1, keepdim=True)  # noqa: E731 - the pixel-average fuser's whole cost
    else:
        network = eager = _network(config, layout, device)
        if compile:
            network = torch.compile(network)

    def forward(x: torch.Tensor) -> None:
        autocast = torch.autocast(device.split(":")[0], DTYPES[dtype], enabled=dtype != "float32")
        with torch.inference_mode(), autocast:
            network(x)
        if cuda:
            torch.cuda.synchronize()

    x = torch.rand(batch, 2, size, size, device=device)
    # Counted on the fast layout, so every layout shares it, and eager: a compiled network would compile again for the
    # count's single slice.
    with FlopCounterMode(display=False) as counter:
        counted = eager if layout != "monai" else _network(config, "fast", device)
        with torch.inference_mode():
            counted(x[:1])
    rate_before = matmul_rate(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = status_kib("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # restart VmHWM from the current RSS
    forward(x)  # warm-up at full size (and compilation); its peak is the one reported
    peak = torch.cuda.max_memory_allocated() if cuda else status_kib("VmHWM") * 1024
    # A batch's per-slice time against one slice's is read in this process, the two alternating: across processes
    # (cells of their own) a busy machine's drift reads as a batch effect. Not for a compiled network, which would
    # compile again for the second shape (the device check's compile cell has a minute).
    inputs = {"seconds": x}
    if batch > 1 and not compile:
        inputs["single_seconds"] = x[:1]
        forward(x[:1])
    times: dict[str, list[float]] = {key: [] for key in inputs}
    for _ in range(repeats):
        for key, images in inputs.items():
            start = time.perf_counter()
            forward(images)
            times[key].append(time.perf_counter() - start)
    rate = (rate_before + matmul_rate(device)) / 2
    return {**{key: median(values) for key, values in times.items()}, "peak_mib": (peak - baseline) / 2**20,
            "gflop": counter.get_total_flops() / 1e9, "matmul": rate}


def run_cell(script: str, request: dict, baseline: str | None) -> dict:
    """``script --cell REQUEST`` in a process of its own, in its layout's environment (see ``cell_environment``): the
    JSON its last line prints."""
    done = subprocess.run([sys.executable, script, "--cell", json.dumps(request)], capture_output=True, text=True,
                          env=cell_environment(request["layout"], baseline))
    if done.returncode:
        raise SystemExit(f"cell {request} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(cells: list[dict], args: argparse.Namespace) -> str:
    fast = {(c["config"], c["device"], c["dtype"], c["batch"], c["size"]): c["seconds"]
            for c in cells if c["layout"] == "fast"}
    devices = "; ".join(f"{d} = {device_name(d, args.threads)}" for d in dict.fromkeys(c["device"] for c in cells))
    lines = [
        f"DCIF-GAN generator forward (Network4, window 8), median of {args.repeats} after a warm-up. {devices}. "
        "Efficiency = achieved GFLOP/s / float32 matmul GFLOP/s measured in the same process. "
        "x slower = this layout's time / the fast layout's time. x batch 1 = per-slice time / one slice's time, "
        "measured in the same process, alternating.",
        "",
        "| config | layout | device | dtype | size | batch | GFLOP/slice | ms/slice | GFLOP/s | matmul GFLOP/s "
        "| efficiency | x slower | x batch 1 | peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        per_slice = c["seconds"] / c["batch"]
        gflop_s = c["gflop"] / per_slice
        ref = fast.get((c["config"], c["device"], c["dtype"], c["batch"], c["size"]))
        speedup = f"{c['seconds'] / ref:.2f}" if ref and c["layout"] not in ("fast", "average") else ""
        batch_ratio = f"{per_slice / c['single_seconds']:.2f}" if "single_seconds" in c else ""
        lines.append(
            f"| {c['config'] if c['layout'] != 'average' else '-'} | {c['layout']} | {c['device']} | {c['dtype']} "
            f"| {c['size']} | {c['batch']} | {c['gflop']:.2f} | {1e3 * per_slice:.1f} | {gflop_s:.1f} "
            f"| {c['matmul']:.0f} | {gflop_s / c['matmul']:.3f} | {speedup} | {batch_ratio} | {c['peak_mib']:.0f} |"
        )
    for (config, device, dtype, batch, size), seconds in fast.items():
        if size == 512 and (config, device, dtype, batch, 256) in fast:
            lines.append(f"\n{config} {device} {dtype} batch {batch}: 512x512 time / 256x256 time = "
                         f"{seconds / fast[(config, device, dtype, batch, 256)]:.2f} (4.00 is linear in pixels)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["shipped", "paper", "swinfusion"])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 356, 512])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["fast", "sdpa"],
                        help="fast: the product; sdpa: the kernel off; monai: MONAI's blocks; baseline: --baseline")
    parser.add_argument("--baseline", help="a checkout whose pipeline package the baseline layout runs")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast network")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: measure one cell in this process
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(measure(**json.loads(args.cell))))
        return

    layouts = list(dict.fromkeys(args.layouts))
    cells = []
    for device in args.devices:
        for dtype in args.dtypes:
            for size in args.sizes:
                for batch in args.batches:
                    jobs = [("-", "average")] + [(config, layout) for config in args.configs for layout in layouts]
                    for config, layout in jobs:
                        request = {"config": config, "layout": layout, "device": device, "dtype": dtype,
                                   "batch": batch, "size": size, "repeats": args.repeats,
                                   "threads": args.threads, "compile": args.compile}
                        cells.append({**request, **run_cell(__file__, request, args.baseline)})
                        print(f"measured {cells[-1]}", file=sys.stderr, flush=True)
    print(_table(cells, args))


if __name__ == "__main__":
    main()
