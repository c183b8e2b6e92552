"""What ``--method`` means: the default fuser, and the fusers a run names."""

from __future__ import annotations

import pytest

from pipeline.fusion import selection
from pipeline.fusion.selection import BASELINE_FALLBACK, MODEL_METHOD, build_fusers, default_method


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
