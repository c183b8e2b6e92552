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


def test_the_table_has_the_columns_its_layouts_give(load_tool):
    table = load_tool("bench_training")._table
    row = {"config": "shipped", "device": "cpu", "crop": 64, "gflop": 15.0, "seconds": {"fast": 0.2, "before": 1.0}}
    full = table([row], ["fast", "before"], {"cpu": 150.0}).splitlines()
    assert full[0] == ("| config | device | crop | fast ms/iter | before ms/iter | x before | GFLOP/iter "
                       "| fast GFLOP/s | fast/matmul | 5x before/matmul |")
    # 15 GFLOP in 0.2 s is 75 GFLOP/s, half the matmul; five times faster than 1.0 s is 75 GFLOP/s too.
    assert full[2] == "| shipped | cpu | 64 | 200 | 1000 | 5.00 | 15.0 | 75.0 | 0.50 | 0.50 |"
    alone = table([{**row, "seconds": {"fast": 0.2}}], ["fast"], {"cpu": 150.0}).splitlines()
    assert alone[0] == "| config | device | crop | fast ms/iter | GFLOP/iter | fast GFLOP/s | fast/matmul |"
    assert alone[2] == "| shipped | cpu | 64 | 200 | 15.0 | 75.0 | 0.50 |"
    assert "None" not in "\n".join(alone) and "5x" not in alone[-1]
    before = table([{**row, "seconds": {"before": 1.0}}], ["before"], {"cpu": 150.0}).splitlines()
    assert before[2] == "| shipped | cpu | 64 | 1000 | 15.0 | 0.50 |"
    assert all(line.count("|") == before[0].count("|") for line in before[:3])
