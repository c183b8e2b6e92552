"""Shipping a checkpoint: the card gains the evaluation's metric means and lesion ratios, the training
state is dropped, and the shipped file still loads into the generator it was trained as."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.handlers.lesion_report import ratio_summary
from pipeline.fusion import ModelFuser
from pipeline.metrics import METRIC_NAMES
from pipeline.networks import DCIFGenerator

CONFIG = {"variant": "network4", "width": 8, "num_heads": 2, "window_size": 4, "mlp_ratio": 2.0, "depths": [1, 1, 1]}


@pytest.fixture(scope="module")
def package(load_tool):
    return load_tool("package_model")


@pytest.fixture()
def evaluation(tmp_path: Path) -> Path:
    """What ``evaluate`` writes for two studies: per-study metrics and the lesion report."""
    folder = tmp_path / "eval"
    folder.mkdir()
    header = "study_index,study_key,window,method,slices," + ",".join(METRIC_NAMES)
    lines = [header]
    for index, (key, qabf) in enumerate((("aaa", 0.6), ("bbb", 0.8))):
        for window in ("lung", "mediastinal"):
            values = ",".join(str(qabf if name == "QABF" else 1.0) for name in METRIC_NAMES)
            lines.append(f"{index},{key},{window},dcif_gan,5,{values}")
            lines.append(f"{index},{key},{window},max,5,{values}")
    (folder / "metrics_per_study.csv").write_text("\n".join(lines) + "\n")
    rows = [{"study_key": key, "window": window, "method": "dcif_gan", "ratio": ratio}
            for key, ratio in (("aaa", 0.2), ("bbb", 0.4)) for window in ("lung", "mediastinal")]
    (folder / "lesion_contrast.json").write_text(json.dumps({"rows": rows, "summary": ratio_summary(rows)}))
    return folder


def test_the_shipped_card_holds_the_evaluation_and_the_file_loads_into_the_generator(package, evaluation, tmp_path):
    generator = DCIFGenerator(**CONFIG)
    trained = tmp_path / "model.pt"
    torch.save({"model": generator.state_dict(), "card": {"seed": 0, "network": CONFIG},
                "d1": {"weights": torch.zeros(3)}}, trained)
    shipped = tmp_path / "models" / "model.pt"
    metadata = tmp_path / "configs" / "metadata.json"
    metadata.parent.mkdir()
    metadata.write_text(json.dumps({"version": "0.1.0", "eval_metrics": {"QABF_lung": 0.1}}))
    assert package.main([str(trained), "--evaluation", str(evaluation), "--out", str(shipped),
                         "--evaluated-on", "two studies", "--trained", "1 epoch, CPU"]) == 0

    saved = torch.load(shipped, weights_only=True)
    assert set(saved) == {"model", "card"}
    card = saved["card"]
    assert card["seed"] == 0 and card["evaluated_on"] == "two studies" and card["trained"] == "1 epoch, CPU"
    assert card["metrics"]["lung"]["QABF"] == pytest.approx(0.7) and card["metrics"]["lung"]["studies"] == 2
    assert card["lesion_contrast_ratio"] == {"lung": pytest.approx(0.3), "mediastinal": pytest.approx(0.3)}
    fused = ModelFuser(DCIFGenerator(**CONFIG), checkpoint=shipped)(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    assert fused.shape == (1, 1, 16, 16)
    updated = json.loads(metadata.read_text())  # the bundle's metadata summarises the card it now ships
    assert updated["version"] == "0.1.0" and updated["eval_metrics"] == package.summary_metrics(card)
    assert updated["eval_metrics"]["QABF_lung"] == pytest.approx(0.7)
    assert updated["eval_metrics"]["lesion_contrast_ratio_mediastinal"] == pytest.approx(0.3)


def test_the_bundle_metadata_summarises_the_shipped_model_card(package):
    """metadata.json's eval_metrics were three releases older than the weights the bundle ships."""
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "dcif_gan"
    card = torch.load(bundle / "models" / "model.pt", weights_only=True)["card"]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["eval_metrics"] == package.summary_metrics(card)


def test_an_evaluation_without_model_rows_is_refused(package, evaluation, tmp_path):
    (evaluation / "metrics_per_study.csv").write_text("study_index,study_key,window,method\n")
    with pytest.raises(SystemExit, match="no 'dcif_gan' rows"):
        package.main([str(tmp_path / "absent.pt"), "--evaluation", str(evaluation), "--out", str(tmp_path / "m.pt")])


def test_a_missing_checkpoint_is_named(package, evaluation, tmp_path):
    with pytest.raises(SystemExit, match="absent.pt: no such checkpoint"):
        package.main([str(tmp_path / "absent.pt"), "--evaluation", str(evaluation), "--out", str(tmp_path / "m.pt")])
