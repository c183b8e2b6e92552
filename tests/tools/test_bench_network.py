"""The benchmark's layouts run in the environment that makes them what they say (the timings are not tested)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def bench(load_tool):
    return load_tool("bench_network")


def test_the_sdpa_layout_switches_the_kernel_off_and_fast_keeps_it(bench):
    assert bench.cell_environment("sdpa", None)["DCIF_CPU_KERNELS"] == "0"
    assert bench.cell_environment("fast", None).get("DCIF_CPU_KERNELS") == os.environ.get("DCIF_CPU_KERNELS")


def test_the_baseline_layout_puts_the_other_checkout_first_on_the_path(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    path = bench.cell_environment("baseline", str(tmp_path))["PYTHONPATH"].split(os.pathsep)
    assert path == [str(tmp_path.resolve()), "elsewhere"]
    with pytest.raises(SystemExit, match="--baseline"):
        bench.cell_environment("baseline", None)


@pytest.mark.parametrize("layout", ["monai", "before"])
def test_the_layouts_of_the_code_before_keep_the_default_allocator(bench, layout):
    assert bench.cell_environment(layout, None)["DCIF_KEEP_FREED_MEMORY"] == "0"
    assert bench.cell_environment("fast", None).get("DCIF_KEEP_FREED_MEMORY") == os.environ.get("DCIF_KEEP_FREED_MEMORY")


def test_a_batch_is_compared_with_one_of_its_slices_in_its_own_process(bench):
    request = {"config": "shipped", "layout": "fast", "device": "cpu", "dtype": "float32", "size": 32, "repeats": 1,
               "threads": 1, "compile": False}
    requests = [{**request, "batch": batch} for batch in (1, 2)]
    cells = [{**cell, **bench.run_cell(bench.__file__, cell, None)} for cell in requests]
    assert "single_seconds" not in cells[0] and cells[1]["single_seconds"] > 0
    rows = [line for line in bench._table(cells, SimpleNamespace(repeats=1, threads=1)).splitlines()
            if line.startswith("| shipped")]
    ratio = cells[1]["seconds"] / 2 / cells[1]["single_seconds"]
    assert [row.split("|")[13].strip() for row in rows] == ["", f"{ratio:.2f}"]


def test_a_compiled_network_is_not_timed_at_a_second_shape(bench, monkeypatch):
    shapes = []
    monkeypatch.setattr(bench.torch, "compile", lambda network: lambda x: shapes.append(tuple(x.shape)))
    bench.measure("shipped", "fast", "cpu", "float32", batch=2, size=16, repeats=1, threads=None, compile=True)
    assert set(shapes) == {(2, 2, 16, 16)}
