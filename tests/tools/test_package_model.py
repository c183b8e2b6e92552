"""Shipping a checkpoint: the card gains the evaluation's metric means and lesion ratios, the training
state is dropped, and the shipped file still loads into the generator it was trained as; an evaluation of other
weights, windows or SUV ceiling, and a file that is not a model with a complete card, are refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from pipeline.fusion import ModelFuser
from pipeline.handlers.lesion_report import ratio_summary
from pipeline.metrics import METRIC_NAMES
from pipeline.networks import DCIFGenerator
from pipeline.provenance import BASELINE_VERSION, weights_digest

CONFIG = {"variant": "network4", "width": 8, "num_heads": 2, "window_size": 4, "mlp_ratio": 2.0, "depths": [1, 1, 1]}
CARD = {"seed": 0, "network": CONFIG, "windows": ["lung", "mediastinal"], "suv_max": 15.0}
CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "dcif_gan" / "configs"


@pytest.fixture(scope="module")
def package(load_tool):
    return load_tool("package_model")


def save_model(path: Path, seed: int = 0, **card) -> str:
    """A generator as training saves it (with a discriminator beside, which shipping drops); its weights digest."""
    torch.manual_seed(seed)
    generator = DCIFGenerator(**CONFIG)
    torch.save({"model": generator.state_dict(), "card": {**CARD, **card}, "d1": {"weights": torch.zeros(3)}}, path)
    return weights_digest(generator)


def write_evaluation(folder: Path, digest: str | None, windows=("lung", "mediastinal"), suv_max: float = 15.0,
                     lesion_digest: str | None = None) -> Path:
    """What ``evaluate`` writes for two studies: per-study metrics and the lesion report, each saying which weights
    (``digest``; None: the columns of an evaluation written before they were recorded) and SUV ceiling it scored."""
    folder.mkdir()
    provenance = {} if digest is None else {"dcif_gan": digest, "max": BASELINE_VERSION}
    rows = []
    for index, (key, qabf) in enumerate((("aaa", 0.6), ("bbb", 0.8))):
        for window in windows:
            for method in ("dcif_gan", "max"):
                rows.append({"study_index": index, "study_key": key, "window": window, "method": method, "slices": 5,
                             **{name: qabf if name == "QABF" else 1.0 for name in METRIC_NAMES},
                             **({"model_version": provenance[method], "suv_max": suv_max} if provenance else {})})
    with (folder / "metrics_per_study.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lesions = [{"study_key": key, "window": window, "method": "dcif_gan", "ratio": ratio}
               for key, ratio in (("aaa", 0.2), ("bbb", 0.4)) for window in windows]
    report = {"suv_max": suv_max, "rows": lesions, "summary": ratio_summary(lesions)}
    if provenance:
        report["model_version"] = {**provenance, "dcif_gan": lesion_digest or digest}
    (folder / "lesion_contrast.json").write_text(json.dumps(report))
    return folder


def test_the_shipped_card_holds_the_evaluation_and_the_file_loads_into_the_generator(package, tmp_path):
    trained = tmp_path / "model.pt"
    evaluation = write_evaluation(tmp_path / "eval", save_model(trained))
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


def refusal(package, checkpoint: Path, evaluation: Path, out: Path) -> str:
    """The one line ``package_model`` exits with (status 1), having written nothing."""
    with pytest.raises(SystemExit) as exited:
        package.main([str(checkpoint), "--evaluation", str(evaluation), "--out", str(out)])
    message = exited.value.code
    assert isinstance(message, str) and "\n" not in message, message  # SystemExit("...") prints it, exit status 1
    assert not out.exists()
    return message


def test_an_evaluation_without_model_rows_is_refused(package, tmp_path):
    evaluation = write_evaluation(tmp_path / "eval", None)
    (evaluation / "metrics_per_study.csv").write_text("study_index,study_key,window,method\n")
    assert "no 'dcif_gan' rows" in refusal(package, tmp_path / "absent.pt", evaluation, tmp_path / "m.pt")


def test_a_missing_checkpoint_is_named(package, tmp_path):
    evaluation = write_evaluation(tmp_path / "eval", "sha256:0123456789abcdef")
    assert refusal(package, tmp_path / "absent.pt", evaluation, tmp_path / "m.pt").endswith(
        "absent.pt: no such checkpoint")


def test_a_missing_evaluation_folder_is_one_line(package, tmp_path):
    """It ended in a traceback."""
    save_model(tmp_path / "model.pt")
    message = refusal(package, tmp_path / "model.pt", tmp_path / "absent", tmp_path / "m.pt")
    assert message.startswith(f"{tmp_path / 'absent' / 'metrics_per_study.csv'}: cannot read (No such file")


@pytest.mark.parametrize(("card", "evaluated", "problem"), [
    ({}, {"digest": "sha256:0123456789abcdef"}, "scored the weights sha256:0123456789abcdef, not those of"),
    ({}, {"lesion_digest": "sha256:0123456789abcdef"}, "scored the weights sha256:0123456789abcdef, not those of"),
    ({}, {"digest": None}, "records no weights digest (written before 0.9.9)"),
    ({"windows": ["lung"]}, {}, "scored the CT windows lung, mediastinal, "),
    ({}, {"windows": ("lung",)}, "scored the CT windows lung, "),
    ({"suv_max": 10.0}, {}, "scored at SUV ceiling 15, "),
], ids=["other weights", "lesion report of other weights", "no digest", "more windows", "fewer windows",
       "other ceiling"])
def test_an_evaluation_of_another_model_is_refused(package, tmp_path, card, evaluated, problem):
    """A lung-only checkpoint was shipped with another checkpoint's lung and mediastinal metrics."""
    checkpoint = tmp_path / "model.pt"
    digest = save_model(checkpoint, **card)
    evaluation = write_evaluation(tmp_path / "eval", **{"digest": digest, **evaluated})
    message = refusal(package, checkpoint, evaluation, tmp_path / "m.pt")
    assert problem in message and str(checkpoint) in message


@pytest.mark.parametrize(("saved", "problem"), [
    ({"model": "generator", "d1": "generator", "g_optimizer": {"state": {}}}, "(no network, windows, suv_max)"),
    ({"model": "generator", "card": {"network": CONFIG, "suv_max": 15.0}}, "(no windows)"),
    ({"model": "generator", "card": {**CARD, "network": {**CONFIG, "window_size": 8}}}, "does not match DCIFGenerator"),
    ({"model": "generator", "card": {**CARD, "network": {**CONFIG, "heads": 2}}}, "network is not a DCIFGenerator's"),
], ids=["training state", "card without windows", "card of another network", "card of an unknown network"])
def test_a_file_that_is_not_a_model_with_a_complete_card_is_refused(package, tmp_path, saved, problem):
    """Packaging train/last.pt shipped a card without network, windows or SUV ceiling: nothing checked a run at load."""
    generator = DCIFGenerator(**CONFIG).state_dict()
    checkpoint = tmp_path / "last.pt"
    torch.save({key: generator if value == "generator" else value for key, value in saved.items()}, checkpoint)
    evaluation = write_evaluation(tmp_path / "eval", "sha256:0123456789abcdef")
    assert problem in refusal(package, checkpoint, evaluation, tmp_path / "m.pt")


def test_an_evaluation_the_bundle_wrote_ships_its_checkpoint_and_no_other(package, tmp_path, tiny_study_cache):
    """The digest evaluate records is the one package_model computes from the checkpoint, end to end."""
    checkpoint, other = tmp_path / "model.pt", tmp_path / "other.pt"
    save_model(checkpoint)
    save_model(other, seed=1)
    run("evaluate", config_file=[str(CONFIGS / "inference.json"), str(CONFIGS / "evaluate.json")],
        bundle_root=str(CONFIGS.parent), study_cache=str(tiny_study_cache), checkpoint=str(checkpoint),
        methods=["dcif_gan"], every_k=4, output_dir=str(tmp_path / "eval"),
        **{f"network_def#{key}": value for key, value in CONFIG.items()})

    assert "not those of" in refusal(package, other, tmp_path / "eval", tmp_path / "m.pt")
    assert package.main([str(checkpoint), "--evaluation", str(tmp_path / "eval"), "--out", str(tmp_path / "m.pt")]) == 0
