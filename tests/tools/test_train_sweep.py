"""The sweep driver's pieces: the commands it builds and the tables it reads back (the runs themselves are
the bundle's own workflows, tested in tests/bundle)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import pytest
from monai.bundle import ConfigParser

from pipeline.handlers.lesion_report import ratio_summary

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_sweep.py"


@pytest.fixture(scope="module")
def sweep(load_tool):
    return load_tool("train_sweep")


def test_each_run_is_the_bundle_training_with_its_overrides_on_top_of_the_common_ones(sweep, tmp_path):
    overrides = sweep.training_overrides({"alpha": 100.0, "detail_weight": 1.0}, {"detail_weight": 0.0},
                                        tmp_path / "n4", tmp_path / "cache", 300)
    command = sweep.bundle_command("training", ["train.json"], overrides)
    assert command[:5] == [sys.executable, "-m", "monai.bundle", "run", "training"]
    pairs = dict(zip(command[7::2], command[8::2]))
    assert pairs["--detail_weight"] == "0.0" and pairs["--alpha"] == "100.0"
    assert pairs["--model_dir"] == str(tmp_path / "n4") and pairs["--time_limit_s"] == "300"
    assert pairs["--study_cache"] == str(tmp_path / "cache")
    assert pairs["--bundle_root"] == str(sweep.CONFIGS.parent)  # the configs' "." is the caller's folder


def test_evaluation_layers_its_override_on_the_inference_config(sweep):
    """The command line's --config_file, as monai.bundle's fire parses it, merges evaluate.json over inference.json."""
    command = sweep.bundle_command("evaluate", sweep.EVALUATE_CONFIGS, {})
    files = fire.parser.DefaultParseValue(command[command.index("--config_file") + 1])
    assert [Path(file).name for file in files] == ["inference.json", "evaluate.json"]
    merged = ConfigParser.load_config_files(files)
    assert merged["run"] == "@evaluate" and merged["evaluator"]["_target_"] == "SupervisedEvaluator"
    assert merged["preprocessing"]["study_cache"] == merged["datalist"]["study_cache"] == "@study_cache"
    assert merged["fusers"]["methods"] == "@methods" and merged["dataset"]["data"] == "$@split['val']"
    assert merged["dataset"]["transform"] == "@preprocessing"


@pytest.mark.parametrize("name", ["dcif_gan.json", "ablation.json"])
def test_the_shipped_sweep_files_name_every_ablation_variant(sweep, name):
    spec = json.loads((TOOL.parent / "sweeps" / name).read_text())
    variants = {own.get("generator_config#variant", "network4") for own in spec["runs"].values()}
    assert variants == {"network1", "network2", "network3", "network4"}


def test_evaluation_rows_are_renamed_to_their_run(sweep, tmp_path):
    (tmp_path / "metrics_per_study.csv").write_text(
        "study_index,study_key,window,method,slices,AG,SF,SSIM,SD,MI,PSNR,IE,QABF,model_version,suv_max\n"
        "0,abc,lung,dcif_gan,3,1,2,0.5,4,1.5,10,5,0.6,sha256:0123456789abcdef,15.0\n")
    (row,) = sweep.study_rows(tmp_path, rename="n1")
    assert row["method"] == "n1" and row["QABF"] == 0.6 and row["study_key"] == "abc"
    assert row["model_version"] == "sha256:0123456789abcdef" and row["suv_max"] == 15.0  # what evaluate scored
    assert sweep.study_rows(tmp_path / "absent") == []


def test_a_run_summary_takes_the_best_validated_epoch(sweep, tmp_path):
    history = {"params": {}, "epochs": [{"epoch": 1, "val_QABF": 0.2, "val_MI": 1.0},
                                        {"epoch": 2, "val_QABF": 0.3, "val_MI": 0.9}, {"epoch": 3}]}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "history.json").write_text(json.dumps(history))
    summary = sweep.run_summary("n4", tmp_path, {"alpha": 20.0}, 0)
    assert (summary["epochs"], summary["best_epoch"], summary["val_QABF"]) == (3, 2, 0.3)


def test_the_runs_table_shows_a_failed_run_without_numbers(sweep):
    table = sweep.runs_table([
        {"run": "n4", "exit": 0, "epochs": 3, "best_epoch": 2, "val_QABF": 0.61, "lesion_lung": 0.3, "overrides": {}},
        {"run": "n1", "exit": 1, "epochs": 0, "best_epoch": None, "overrides": {"alpha": 20.0}},
    ], selected="n4")
    lines = table.splitlines()
    assert lines[2].startswith("| **n4** | 0 | 3 | 2 | 0.6100 |  |  | 0.3000 |  |")
    assert lines[3].startswith("| n1 | 1 | 0 | None |  |  |  |  |  |") and '`{"alpha": 20.0}`' in lines[3]


def _lesion_file(eval_dir: Path, ratios: dict[str, float]) -> None:
    """A lesion report as the evaluation writes it: rows and their summary (one study per window)."""
    eval_dir.mkdir(parents=True)
    rows = [{"study_key": "s0", "window": window, "method": "dcif_gan", "ratio": ratio}
            for window, ratio in ratios.items()]
    rows.append({"study_key": "s0", "window": "lung", "method": "max", "ratio": 0.9})
    (eval_dir / "lesion_contrast.json").write_text(json.dumps({"rows": rows, "summary": ratio_summary(rows)}))


def test_the_summary_carries_the_model_lesion_ratio_per_window(sweep, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "history.json").write_text(json.dumps({"params": {}, "epochs": [{"epoch": 1}]}))
    _lesion_file(tmp_path / "eval", {"lung": 0.2, "mediastinal": 0.5})
    summary = sweep.run_summary("n4", tmp_path, {}, 0)
    assert (summary["lesion_lung"], summary["lesion_mediastinal"]) == (0.2, 0.5)


def test_selection_skips_a_run_that_hides_the_lesion_however_well_it_scores(sweep):
    summaries = [
        {"run": "max_like", "val_QABF": 0.83, "lesion_lung": 0.04, "lesion_mediastinal": 0.23},
        {"run": "keeps_lesion", "val_QABF": 0.67, "lesion_lung": 0.31, "lesion_mediastinal": 0.43},
        {"run": "weaker", "val_QABF": 0.60, "lesion_lung": 0.35, "lesion_mediastinal": 0.50},
        {"run": "not_evaluated", "val_QABF": 0.90},
        {"run": "crashed", "lesion_lung": 0.9, "lesion_mediastinal": 0.9},
    ]
    assert sweep.select_run(summaries, 0.25) == "keeps_lesion"
    assert sweep.select_run(summaries, 0.0) == "max_like"
    assert sweep.select_run(summaries, 0.6) is None


def test_report_only_rebuilds_the_tables_from_runs_trained_elsewhere(sweep, tmp_path, capsys):
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"common": {}, "runs": {"a": {"alpha": 20.0}, "b": {}}}))
    for name, qabf, lung in (("a", 0.7, 0.1), ("b", 0.6, 0.3)):
        (tmp_path / "out" / name / "train").mkdir(parents=True)
        (tmp_path / "out" / name / "train" / "history.json").write_text(
            json.dumps({"params": {}, "epochs": [{"epoch": 4, "val_QABF": qabf}]}))
        _lesion_file(tmp_path / "out" / name / "eval", {"lung": lung, "mediastinal": 0.4})
    assert sweep.main([str(spec), "--out", str(tmp_path / "out"), "--report-only"]) == 0
    assert "selected (lesion ratio >= 0.25 in every window): b" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["selected"] == "b" and [run["epochs"] for run in saved["runs"]] == [4, 4]


def test_training_needs_a_cache(sweep, tmp_path):
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({"runs": {"a": {}}}))
    with pytest.raises(SystemExit):
        sweep.main([str(spec), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("path", sorted((TOOL.parent / "sweeps").glob("*.json")), ids=lambda p: p.name)
def test_every_sweep_override_is_a_training_config_id(path):
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(TOOL.parents[1] / "bundles" / "dcif_gan" / "configs" / "train.json")
    spec = json.loads(path.read_text())
    keys = set(spec.get("common", {})) | {key for own in spec["runs"].values() for key in own}
    assert keys and all(key in config for key in keys), sorted(k for k in keys if k not in config)


def test_the_best_epoch_is_the_training_key_metrics(sweep, tmp_path):
    """model.pt holds the best epoch by train.json's key metric, so the summary reports that epoch."""
    assert sweep.key_metric() == "val_selection"
    history = {"params": {}, "epochs": [{"epoch": 1, "val_QABF": 0.2, "val_selection": 0.6},
                                        {"epoch": 2, "val_QABF": 0.3, "val_selection": 0.5}]}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "history.json").write_text(json.dumps(history))
    assert sweep.run_summary("n4", tmp_path, {}, 0)["best_epoch"] == 1
