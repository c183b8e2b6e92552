"""What ``--method`` means: the default fuser, and the fusers a run names."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import DcifError
from pipeline.fusion import selection
from pipeline.fusion.selection import BASELINE_FALLBACK, MODEL_METHOD, build_fusers, check_device, default_method


def test_the_default_is_the_model_only_while_it_is_the_best_fuser_and_its_weights_are_there(tmp_path, monkeypatch,
                                                                                          caplog):
    checkpoint = tmp_path / "model.pt"
    monkeypatch.setattr(selection, "MODEL_IS_DEFAULT", True)
    with caplog.at_level("WARNING", logger=selection.__name__):
        assert default_method(checkpoint) == BASELINE_FALLBACK  # never the network without trained weights
    assert [record.getMessage() for record in caplog.records] == [
        f"no trained {MODEL_METHOD} checkpoint at {checkpoint}: fusing with the {BASELINE_FALLBACK} baseline"]
    checkpoint.write_bytes(b"weights")
    assert default_method(checkpoint) == MODEL_METHOD
    monkeypatch.setattr(selection, "MODEL_IS_DEFAULT", False)
    assert default_method(checkpoint) == BASELINE_FALLBACK


def test_named_fusers_come_once_in_the_order_given_and_streams_need_the_model():
    assert list(build_fusers(["max", "laplacian", "max"])) == ["max", "laplacian"]
    with pytest.raises(ValueError, match="streams"):
        build_fusers(["laplacian"], streams=True)


def test_a_cuda_device_is_refused_in_one_line_where_there_is_none(monkeypatch):
    """Every door (fuse-batch, the bundle) says it so, instead of torch's ``Torch not compiled with CUDA enabled``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("cpu") == torch.device("cpu")
    for device in ("cuda", torch.device("cuda")):
        with pytest.raises(DcifError, match="^--device cuda: no CUDA device is available on this machine$"):
            check_device(device)
