"""The training benchmark counts what an iteration computes (the timings are not tested)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.networks import DCIFGAN


def test_an_iteration_counts_the_forward_backward_and_critics(load_tool):
    bench = load_tool("bench_training")
    crop, batch = 16, 2
    counted = bench.measure("shipped", "fast", "cpu", batch, crop, iterations=1, seconds=0.0,
                            threads=torch.get_num_threads(), amp=False, count=True)["gflop"]
    generator = DCIFGAN("network4", window_size=8, mlp_ratio=2.0, **bench.CONFIGS["shipped"]).generator
    with FlopCounterMode(display=False) as forward:
        generator.streams(torch.rand(batch, 1, crop, crop), torch.rand(batch, 1, crop, crop))
    # The G step's backward costs about twice its forward, and the critics add their own steps on top.
    assert counted > 3 * forward.get_total_flops() / 1e9
