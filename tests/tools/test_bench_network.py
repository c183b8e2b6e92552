"""The benchmark's layouts run in the environment that makes them what they say (the timings are not tested)."""

from __future__ import annotations

import os

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
