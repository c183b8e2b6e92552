"""Report tables: per-study means, best per column marked, non-finite values left out."""

from __future__ import annotations

import csv
import math

from ignite.engine import Engine, Events

from pipeline.fusion import FusionNetwork, ModelFuser, get_fuser
from pipeline.handlers import FusionReportWriter
from pipeline.handlers.metrics_report import markdown_summary, study_means, summary_metrics
from pipeline.metrics import METRIC_NAMES
from pipeline.networks import DCIFGenerator
from pipeline.provenance import BASELINE_VERSION, weights_digest


def _row(study: int, method: str, slice_index: int, value: float) -> dict:
    return {"study_index": study, "study_key": f"key{study}", "window": "lung", "method": method,
            "slice_index": slice_index, **{name: value for name in METRIC_NAMES}}


def test_study_means_skip_infinite_psnr():
    rows = [_row(0, "max", 0, 2.0), _row(0, "max", 1, 4.0), {**_row(0, "max", 2, 6.0), "PSNR": math.inf}]
    (mean,) = study_means(rows)
    assert mean["AG"] == 4.0 and mean["PSNR"] == 3.0 and mean["slices"] == 3
    # Each mean's spread over the study's slices and how many values it used, which an inf PSNR makes fewer.
    assert mean["AG_std"] == math.sqrt(8 / 3) and mean["AG_n"] == 3
    assert mean["PSNR_std"] == 1.0 and mean["PSNR_n"] == 2


def test_markdown_marks_the_best_method_per_metric():
    studies = study_means([_row(0, "average", 0, 1.0), _row(0, "laplacian", 0, 2.0), _row(1, "average", 0, 3.0),
                           _row(1, "laplacian", 0, 2.0)])
    table = markdown_summary(studies, suv_max=15)
    assert "CT window: lung, PET SUV ceiling 15 (2 studies, each the mean over its slices; mean ± population std" in table
    assert "one body slice in 2 scored (" in markdown_summary(studies, suv_max=15, every_k=2)
    assert "every body slice scored (" in markdown_summary(studies, every_k=1)
    average_line = next(line for line in table.splitlines() if line.startswith("| average"))
    laplacian_line = next(line for line in table.splitlines() if line.startswith("| laplacian"))
    assert "**2.0000 ± 1.0000**" in average_line and "**2.0000 ± 0.0000**" in laplacian_line
    assert summary_metrics(studies)["lung.average.QABF"] == 2.0


def _write_report(tmp_path, fusers: dict, rows: list[dict], suv_max: float | None = 10) -> Engine:
    """Run a :class:`FusionReportWriter` over ``rows``, as an evaluator whose network holds ``fusers`` leaves them."""
    engine = Engine(lambda e, b: None)
    engine.network = FusionNetwork(fusers, ["lung"])
    FusionReportWriter(tmp_path, suv_max=suv_max).attach(engine)

    @engine.on(Events.STARTED)
    def _rows(e):
        e.state.fusion_rows = rows

    engine.run([0], max_epochs=1)
    return engine


def test_writer_leaves_csvs_summary_and_engine_metrics(tmp_path):
    engine = _write_report(tmp_path, {"max": get_fuser("max")}, [_row(0, "max", 0, 1.0), _row(0, "max", 1, 3.0)])
    with open(tmp_path / "metrics_per_slice.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    with open(tmp_path / "metrics_per_study.csv") as handle:
        (study,) = list(csv.DictReader(handle))
    assert float(study["QABF"]) == 2.0 and float(study["QABF_std"]) == 1.0 and int(study["QABF_n"]) == 2
    assert "| max |" in (tmp_path / "metrics_summary.md").read_text()
    assert engine.state.metrics["lung.max.SSIM"] == 2.0
    assert not list(tmp_path.glob(".*partial*"))


def test_summary_counts_the_metrics_each_method_wins_against_each_other():
    rows = [_row(0, "average", 0, 1.0), {**_row(0, "model", 0, 2.0), "PSNR": 0.5, "MI": 0.5}]
    table = markdown_summary(study_means(rows))
    assert "| method | average | model |" in table
    assert "| model | 6 | - |" in table and "| average | - | 2 |" in table


def test_an_undefined_mean_never_decides_the_bold_one():
    for first, second in (("average", "max"), ("max", "average")):
        rows = [{**_row(0, first, 0, 1.0), "QABF": math.nan}, _row(0, second, 0, 0.5)]
        table = markdown_summary(study_means(rows))
        second_line = next(line for line in table.splitlines() if line.startswith(f"| {second}"))
        qabf = second_line.split("|")[2 + list(METRIC_NAMES).index("QABF")]
        assert "**0.5000" in qabf, (first, table)


def test_every_row_and_the_summary_say_which_weights_and_suv_ceiling_they_scored(tmp_path):
    """They said neither, so tools/package_model.py shipped a card with the metrics of any other checkpoint."""
    model = ModelFuser(DCIFGenerator(variant="network4", width=8, num_heads=2, window_size=4, depths=(1, 1, 1)))
    rows = [_row(0, "dcif_gan", 0, 1.0), _row(0, "max", 0, 2.0), _row(1, "dcif_gan", 0, 1.5), _row(1, "max", 0, 2.5)]
    _write_report(tmp_path, {"dcif_gan": model, "max": get_fuser("max")}, rows, suv_max=12.5)

    digest = weights_digest(model.network)
    for table in ("metrics_per_slice.csv", "metrics_per_study.csv"):
        with open(tmp_path / table) as handle:
            scored = {(row["method"], row["model_version"], float(row["suv_max"])) for row in csv.DictReader(handle)}
        assert scored == {("dcif_gan", digest, 12.5), ("max", BASELINE_VERSION, 12.5)}, table
    assert (tmp_path / "metrics_summary.md").read_text().splitlines()[0] == f"Weights scored: dcif_gan {digest}"
