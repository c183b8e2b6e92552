"""Benchmark one DCIF-GAN training iteration (D step then G step) of the engine against earlier ways.

Each cell runs ``FusionGANTrainer`` for a few iterations on random crops, with the bundle's loss
recipe (content + saliency detail term, alpha 100, detail weight 8), in its own process and
reports the median seconds per iteration: at least ``--iterations`` after a warm-up and as many more as
fill ``--seconds`` (at most :data:`MAX_ITERATIONS`), so a small cell on a busy CPU gets enough samples. With
``--rounds N`` the layouts of a row run N times in turn and each keeps its fastest median, so a slow spell of a
shared machine does not fall on one layout alone. Layouts: ``fast`` is the product (window order, one
generator forward, the CPU attention kernel); ``sdpa`` the same with the kernel off; ``before`` the
engine before the fast path: MONAI's own Swin blocks (tests/networks/monai_reference.py) and two
generator forwards per iteration; ``baseline`` (``--baseline DIR``) the ``pipeline`` package of
another checkout (``git worktree add /tmp/base <commit>``; 03cd885 is the code issue 12 was filed against).
Each "x" column is that layout's time over ``fast``'s, measured in the same run. Each row also counts one
iteration's FLOPs (torch's counter, for which the kernels step aside) and sets the fast layout's rate,
and the rate an iteration five times faster than ``before`` would need, against a float32 matmul measured in the
same run: how close to the hardware a training step runs. A benchmark, not a test: nothing asserts a time.

    .venv/bin/python tools/bench_training.py                         # CPU, batch 8, 64 and 128 crops
    .venv/bin/python tools/bench_training.py --layouts fast sdpa baseline --baseline /tmp/base
    .venv/bin/python tools/bench_training.py --devices cuda --amp --batch 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # after PYTHONPATH, so a --baseline checkout's package wins
sys.path.append(str(REPO / "tools"))

from bench_network import CONFIGS, _network, matmul_rate, run_cell  # noqa: E402
from machine import device_name  # noqa: E402

LAYOUTS = ("fast", "sdpa", "before", "baseline")
MAX_ITERATIONS = 40


def _before_iteration(engine, batchdata):
    """The engine's iteration before the fast path: a no-grad forward for D, another for G."""
    ct, pet = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
    streams, d1, d2 = engine.players
    with torch.no_grad(), engine._autocast():
        f_ct, f_pet = streams(ct, pet)
    engine.d_optimizer.zero_grad(set_to_none=True)
    with engine._autocast():
        d_terms = engine.d_loss_function(ct, pet, f_ct.float(), f_pet.float(), d1, d2)
    d_terms["total"].backward()
    engine.d_optimizer.step()
    engine.g_optimizer.zero_grad(set_to_none=True)
    with engine._autocast():
        f_ct, f_pet = streams(ct, pet)
        g_terms = engine.g_loss_function(ct, pet, f_ct.float(), f_pet.float(), d1, d2)
    g_terms["total"].backward()
    engine.g_optimizer.step()
    return {"loss": g_terms["total"].item()}


def _generator_loss():
    """The bundle's loss recipe. A --baseline checkout from before the detail loss was wired as an object takes its
    settings as keywords; one from before its target was a choice (the code issue 12 was filed against) has a
    fixed detail term, which it then runs."""
    from pipeline.losses import GeneratorLoss

    try:
        from pipeline.losses import DetailLoss

        return GeneratorLoss(alpha=100.0, mu=1.0, detail_weight=8.0, detail=DetailLoss("saliency", 1.0))
    except (ImportError, TypeError):
        pass
    try:
        return GeneratorLoss(alpha=100.0, mu=1.0, detail_weight=8.0, detail_target="saliency", detail_mu=1.0)
    except TypeError:
        return GeneratorLoss(alpha=100.0, mu=1.0, detail_weight=8.0)


def _discriminator_parameters(gan: torch.nn.Module):
    """The model's own ``discriminator_parameters``; a --baseline checkout that predates it gets D1's and D2's
    parameters once each, as that method gives them."""
    if hasattr(gan, "discriminator_parameters"):
        return gan.discriminator_parameters()
    return torch.nn.ModuleList([gan.d1, gan.d2]).parameters()


def measure(config: str, layout: str, device: str, batch: int, crop: int, iterations: int, seconds: float,
            threads: int, amp: bool, count: bool = False) -> dict:
    """Median seconds per iteration; with ``count``, the FLOPs of one iteration instead (the CPU kernels step aside
    for torch's counter, so it sees every op)."""
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.engines import FusionGANTrainer
    from pipeline.losses import DiscriminatorLoss
    from pipeline.networks import DCIFGAN

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gan = DCIFGAN("network4", window_size=8, mlp_ratio=2.0, **CONFIGS[config]).to(device)
    if layout == "before":
        gan.generator = _network(config, "monai", device).train()
    items = [{"ct": torch.rand(1, crop, crop), "pet": torch.rand(1, crop, crop)}
             for _ in range(batch * (MAX_ITERATIONS + 1))]
    times: list[float] = []
    # The bundle's optimisers are fused Adam (one kernel per step instead of a dozen ops per parameter); the code
    # before the fast path had the default one.
    adam = {"lr": 1e-4, "fused": layout in ("fast", "sdpa")}
    trainer = FusionGANTrainer(
        device=device, max_epochs=1, train_data_loader=DataLoader(Dataset(items), batch_size=batch), model=gan,
        g_optimizer=torch.optim.Adam(gan.generator.parameters(), **adam),
        d_optimizer=torch.optim.Adam(_discriminator_parameters(gan), **adam),
        g_loss_function=_generator_loss(),
        d_loss_function=DiscriminatorLoss(), amp=amp,
    )
    if layout == "before":
        trainer._process_function = _before_iteration  # ignite calls it as (engine, batch)
    clock = {}

    @trainer.on(Events.ITERATION_STARTED)
    def _start(_) -> None:
        clock["start"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(_) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - clock["start"])
        if count or (len(times) > iterations and sum(times[1:]) >= seconds):
            trainer.terminate()

    if count:
        with FlopCounterMode(display=False) as counter:
            trainer.run()
        return {"gflop": counter.get_total_flops() / 1e9}
    trainer.run()
    return {"seconds": median(times[1:]), "iterations": len(times) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["shipped", "paper"])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--crops", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations at least, after one warm-up")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help=f"then more until their times add up to this (at most {MAX_ITERATIONS} in all)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run a row's layouts this many times in turn; each keeps its best")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["fast", "sdpa", "before"])
    parser.add_argument("--baseline", help="a checkout whose pipeline package the baseline layout runs")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(measure(**json.loads(args.cell))))
        return
    torch.set_num_threads(args.threads)  # the rate the cells' threads can reach, not this process's default
    rates = {device: matmul_rate(device) for device in args.devices}
    rows = []
    for device in args.devices:
        for config in args.configs:
            for crop in args.crops:
                request = {"config": config, "device": device, "batch": args.batch, "crop": crop,
                           "iterations": args.iterations, "seconds": args.seconds, "threads": args.threads,
                           "amp": args.amp}
                cells: dict[str, float] = {}
                for layout in [layout for _ in range(args.rounds) for layout in args.layouts]:
                    result = run_cell(__file__, {**request, "layout": layout}, args.baseline)
                    cells[layout] = min(result["seconds"], cells.get(layout, float("inf")))
                    print(f"measured {config} {crop} {layout} on {device}: {result['seconds']:.3f} s over "
                          f"{result['iterations']} iterations", file=sys.stderr, flush=True)
                gflop = run_cell(__file__, {**request, "layout": "fast", "count": True}, None)["gflop"]
                rows.append({"config": config, "device": device, "crop": crop, "seconds": cells, "gflop": gflop})
    devices = "; ".join(f"{d} = {device_name(d, args.threads)}, matmul {rates[d]:.0f} GFLOP/s" for d in args.devices)
    print(f"DCIF-GAN training iteration (D step + G step, Adam), median of at least {args.iterations} after a warm-up "
          f"(more up to {args.seconds:g} s), best of {args.rounds} round(s); amp {args.amp}, batch {args.batch}. "
          f"{devices}.\n")
    print(_table(rows, args.layouts, rates))


def _table(rows: list[dict], layouts: list[str], rates: dict[str, float]) -> str:
    """The rows as a Markdown table, with its legend. A column that needs the fast layout, or a layout to count 5x
    against (``before``, else ``baseline``), is left out when the run has none."""
    fast = "fast" in layouts
    others = [layout for layout in layouts if layout != "fast"] if fast else []
    reference = next((layout for layout in ("before", "baseline") if layout in layouts), None)
    header = ["config", "device", "crop", *(f"{layout} ms/iter" for layout in layouts),
              *(f"x {layout}" for layout in others), "GFLOP/iter"]
    header += ["fast GFLOP/s", "fast/matmul"] if fast else []
    header += [f"5x {reference}/matmul"] if reference else []
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        seconds, rate = row["seconds"], rates[row["device"]]
        cells = [row["config"], row["device"], str(row["crop"]),
                 *(f"{1e3 * seconds[layout]:.0f}" for layout in layouts),
                 *(f"{seconds[layout] / seconds['fast']:.2f}" for layout in others), f"{row['gflop']:.1f}"]
        if fast:
            cells += [f"{row['gflop'] / seconds['fast']:.1f}", f"{row['gflop'] / seconds['fast'] / rate:.2f}"]
        if reference:
            cells.append(f"{5 * row['gflop'] / seconds[reference] / rate:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    legend = ["GFLOP/iter is torch's count of one iteration."]
    if others:
        legend.append("Each x column is that layout's time over fast's.")
    if fast:
        legend.append("fast/matmul is the fast layout's rate over the float32 matmul rate measured in this run.")
    if reference:
        legend.append(f"5x {reference}/matmul is the rate an iteration 5x faster than {reference}'s would need.")
    return "\n".join([*lines, "", " ".join(legend)])

if __name__ == "__main__":
    main()
