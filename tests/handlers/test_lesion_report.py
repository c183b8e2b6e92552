"""LesionContrastReport: rows per study and (window, method), and the JSON and markdown reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, list_data_collate
from monai.data.utils import affine_to_spacing

from pipeline.fusion import FusionNetwork
from pipeline.handlers import LesionContrastReport, read_lesion_ratios
from pipeline.metrics import lesion_contrast, phantom_lesion_mask, ring_mask
from pipeline.provenance import BASELINE_VERSION
from pipeline.transforms.data_path import study_preprocessing
from pipeline.transforms.lesion import KnownLesiond
from tests.io.conftest import write_rtstruct

AFFINE = torch.diag(torch.tensor([-2.0, -2.0, 3.0, 1.0], dtype=torch.float64))


def synthetic_study(key: str, hot: float) -> dict:
    """One CT window (flat) and a PET with a hot cube, on a 2 x 2 x 3 mm grid."""
    pet = torch.full((16, 16, 8), 0.1)
    pet[6:10, 6:10, 3:5] = hot
    image = MetaTensor(torch.stack([torch.full_like(pet, 0.5), pet]), affine=AFFINE)
    return {"image": image, "study_key": key}


def fuse_copy_and_flat(engine: Engine, batch: dict) -> dict:
    """Two 'methods' on one window: a copy of the PET and the flat CT."""
    image = batch["image"]
    return {"image": image, "pred": torch.cat([image[:, 1:2], image[:, 0:1]], dim=1).as_tensor()}


def run_report(tmp_path, batches, process=fuse_copy_and_flat, windows=("lung",), methods=("copy", "flat"),
               **report) -> Engine:
    engine = Engine(process)
    engine.network = FusionNetwork(dict.fromkeys(methods), list(windows))  # the layout it reads; fusing happens in process
    LesionContrastReport(tmp_path, **report).attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def test_rows_and_reports_from_the_pet_threshold(tmp_path):
    batches = [list_data_collate([synthetic_study(key, hot)]) for key, hot in (("aaa", 0.9), ("bbb", 0.6))]
    engine = run_report(tmp_path, batches, suv_max=12.5)

    rows = {(row["study_key"], row["method"]): row for row in engine.state.lesion_rows}
    assert len(engine.state.lesion_rows) == 4 and set(rows) == {(k, m) for k in ("aaa", "bbb") for m in ("copy", "flat")}
    assert rows["aaa", "copy"]["contrast_pet"] == pytest.approx(0.8 / 1.0)
    assert rows["aaa", "copy"]["ratio"] == pytest.approx(1.0) and rows["bbb", "flat"]["ratio"] == pytest.approx(0.0)

    report = json.loads((tmp_path / "lesion_contrast.json").read_text())
    assert report["rows"] == json.loads(json.dumps(engine.state.lesion_rows))
    # The ratios are of the PET clipped at its ceiling, so the report says which one.
    assert report["suv_max"] == 12.5 and report["fraction"] == 0.4
    assert report["model_version"] == {"copy": BASELINE_VERSION, "flat": BASELINE_VERSION}  # what scored each method
    summary = {entry["method"]: entry for entry in report["summary"]}
    assert summary["copy"]["mean_ratio"] == pytest.approx(1.0) and summary["flat"]["studies"] == 2
    table = (tmp_path / "lesion_contrast.md").read_text()
    assert "PET SUV ceiling 12.5; studies" in table
    assert "| window | method | mean ratio | median ratio | min ratio | studies |" in table
    assert "| lung | copy | 1.0000 | 1.0000 | 1.0000 | 2 |" in table
    assert summary["flat"]["median_ratio"] == pytest.approx(0.0)
    assert not list(tmp_path.glob(".*partial*"))


def test_a_panel_per_study_and_window_shows_the_largest_lesion_slice(tmp_path):
    from PIL import Image

    run_report(tmp_path, [list_data_collate([synthetic_study("aaa", 0.9)])])
    (panel,) = (tmp_path / "lesion_panels").glob("*.png")
    assert panel.name == "aaa_lung.png"
    labelled = np.asarray(Image.open(panel))
    band = labelled.shape[0] - 16  # the band naming the tiles: CT lung | PET | copy lung | flat lung
    picture = labelled[band:]
    assert band > 0 and picture.shape == (16, 4 * 16 + 3 * 4, 3)  # CT | PET | copy | flat, 4-pixel gaps
    ink = np.flatnonzero((labelled[:band] < 128).all(axis=2).any(axis=0))
    assert {int(column) // 20 for column in ink} == {0, 1, 2, 3}
    pet_tile, copy_tile = picture[:, 20:36], picture[:, 40:56]
    assert np.array_equal(pet_tile, copy_tile) and pet_tile.max() == round(0.9 * 255)  # slice 3 or 4: the hot cube


def test_a_study_stored_with_rows_flipped_gets_the_panel_of_its_dicom_ordered_copy(tmp_path):
    from PIL import Image

    study = synthetic_study("aaa", 0.9)
    study["image"][0, :, :4] = 1.0  # the CT's front rows bright (Y runs to the back in AFFINE)
    front_first = AFFINE.clone()
    front_first[1, 1] = 2.0  # Y runs to the front, as dcm2niix stores an axial CT
    flipped = {"image": MetaTensor(study["image"].as_tensor().flip(2), affine=front_first), "study_key": "aaa"}
    pictures = []
    for name, each in (("stored", study), ("flipped", flipped)):
        run_report(tmp_path / name, [list_data_collate([each])])
        pictures.append(np.asarray(Image.open(tmp_path / name / "lesion_panels" / "aaa_lung.png")))
    assert np.array_equal(pictures[0], pictures[1])
    tiles = pictures[1][-16:]  # below the band naming them
    assert (tiles[:4, :16] == 255).all() and (tiles[4:, :16] == 128).all()  # the front at the top


def test_undefined_ratios_are_null_in_json_and_left_out_of_the_summary(tmp_path):
    blank = synthetic_study("ccc", 0.1)  # PET without a lesion: no contrast to keep
    engine = run_report(tmp_path, [list_data_collate([blank])])
    report = json.loads((tmp_path / "lesion_contrast.json").read_text())
    assert all(row["ratio"] is None for row in report["rows"]) and len(engine.state.lesion_rows) == 2
    assert report["summary"][0]["studies"] == 0


def test_a_written_report_reads_back_as_mean_ratio_per_window(tmp_path):
    run_report(tmp_path, [list_data_collate([synthetic_study("aaa", 0.9)])])
    assert read_lesion_ratios(tmp_path, "copy") == {"lung": pytest.approx(1.0)}
    assert read_lesion_ratios(tmp_path, "flat") == {"lung": pytest.approx(0.0)}
    assert read_lesion_ratios(tmp_path, "absent_method") == {}
    assert read_lesion_ratios(tmp_path / "no_report", "copy") == {}


def test_a_window_without_a_defined_ratio_is_left_out_when_read_back(tmp_path):
    run_report(tmp_path, [list_data_collate([synthetic_study("ccc", 0.1)])])
    assert read_lesion_ratios(tmp_path, "copy") == {}


def test_phantom_truth_gives_the_lesion(tmp_path, tiny_datalist, tiny_phantom_root):
    truth_path = tiny_phantom_root / "seed_000" / "truth.json"
    study = study_preprocessing(["lung", "mediastinal"])({**tiny_datalist[0], "truth": str(truth_path)})
    batch = list_data_collate([{key: study[key] for key in ("image", "study_key", "label", "lesion_source")}])

    def fuse_pet(engine: Engine, batch: dict) -> dict:
        return {"image": batch["image"], "pred": batch["image"][:, [2, 2]].as_tensor()}

    engine = run_report(tmp_path, [batch], process=fuse_pet, windows=("lung", "mediastinal"), methods=("pet",))
    pet = study["image"][-1].numpy()
    lesion = phantom_lesion_mask(json.loads(truth_path.read_text()), study["image"].affine, pet.shape)
    expected = lesion_contrast(pet, lesion, ring_mask(lesion, np.asarray(affine_to_spacing(study["image"].affine))))
    assert [row["window"] for row in engine.state.lesion_rows] == ["lung", "mediastinal"]
    assert all(row["contrast_pet"] == pytest.approx(expected) and row["ratio"] == pytest.approx(1.0)
               for row in engine.state.lesion_rows)
    assert "PHANTOM" not in (tmp_path / "lesion_contrast.json").read_text()


def test_the_studys_tumour_contour_gives_the_lesion_where_the_datalist_names_one(tmp_path):
    # A contour twice the hot cube's width: the whole tumour, not only its hot core (LPS = 2 i, 2 j, 3 k here).
    corners = [(4, 4), (11, 4), (11, 11), (4, 11)]
    contours = [np.array([[2 * i, 2 * j, 3 * k] for i, j in corners], dtype=float) for k in (3, 4)]
    mask_path = write_rtstruct(tmp_path / "mask" / "rs.dcm", contours={"GTV": contours})
    study = KnownLesiond()({**synthetic_study("aaa", 0.9), "lesion_mask": str(mask_path)})
    engine = run_report(tmp_path / "out", [list_data_collate([study])])
    rows = {row["method"]: row for row in engine.state.lesion_rows}
    assert {row["lesion"] for row in rows.values()} == {"contour"}
    assert rows["copy"]["contrast_pet"] == pytest.approx((0.9 - 0.1) * 16 / 64)  # the hot core is a quarter of it
    assert rows["copy"]["ratio"] == pytest.approx(1.0) and rows["flat"]["ratio"] == pytest.approx(0.0)
    threshold = run_report(tmp_path / "threshold", [list_data_collate([synthetic_study("aaa", 0.9)])])
    assert threshold.state.lesion_rows[0]["lesion"] == "pet_threshold"
    assert threshold.state.lesion_rows[0]["contrast_pet"] == pytest.approx(0.8)


def test_a_cached_studys_label_gives_the_lesion(tmp_path):
    """A study cache keeps the known tumour as ``label`` and no datalist fields: the report measures that, as
    validation does, not the PET threshold."""
    study = synthetic_study("ccc", 0.9)
    label = torch.zeros(1, 16, 16, 8)
    label[0, 4:12, 4:12, 3:5] = 1.0  # the whole tumour, four times the hot core
    engine = run_report(tmp_path, [list_data_collate([{**study, "label": MetaTensor(label, affine=AFFINE)}])])
    rows = {row["method"]: row for row in engine.state.lesion_rows}
    assert {row["lesion"] for row in rows.values()} == {"cache"}
    assert rows["copy"]["contrast_pet"] == pytest.approx((0.9 - 0.1) * 16 / 64)  # not the threshold's 0.8

def test_channel_count_must_match_windows_and_methods(tmp_path):
    with pytest.raises(ValueError, match="1 windows x 3 methods"):
        run_report(tmp_path, [list_data_collate([synthetic_study("eee", 0.9)])], methods=("a", "b", "c"))
