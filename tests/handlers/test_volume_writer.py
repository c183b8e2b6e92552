"""The bundle's NIfTI writer: the files, headers, record and tidying of every other door."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from pipeline.fusion import FusionNetwork, fuse_volume
from pipeline.fusion.registry import Fuser, get_fuser
from pipeline.fusion.streaming import fuse_study, fused_filename
from pipeline.fusion.writers import MANIFEST_FILE, NiftiSink, nifti_description
from pipeline.handlers import FusedVolumeWriter
from pipeline.io.atomic import temporary_sibling
from tests.io.conftest import left_by_a_killed_run
from pipeline.provenance import BASELINE_VERSION, weights_digest
from pipeline.transforms.data_path import study_preprocessing
from pipeline.transforms.resample import blank_uncovered
from pipeline.transforms.windowing import DEFAULT_SUV_MAX

WINDOWS = ["lung"]


class _WeightedFuser(Fuser):
    """A fuser with weights, as the model is: what it writes must carry their digest."""

    def __init__(self) -> None:
        self.network = nn.Conv2d(2, 1, 1)

    def fuse(self, ct: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(torch.cat([ct, pet], dim=1)))


@pytest.fixture(scope="module")
def fusers() -> dict[str, Fuser]:
    return {"weighted": _WeightedFuser(), "laplacian": get_fuser("laplacian")}


@pytest.fixture(scope="module")
def evaluator(tiny_datalist, fusers) -> SimpleNamespace:
    """What the bundle's evaluator holds once it fused a study in one iteration (batch size 1)."""
    data = study_preprocessing(WINDOWS)(dict(tiny_datalist[0]))
    network = FusionNetwork(fusers, WINDOWS, DEFAULT_SUV_MAX)
    fused = blank_uncovered(fuse_volume(network, data["image"]), data["pet_slices"])
    state = SimpleNamespace(batch={"ct": [data["ct"]], "study_key": [data["study_key"]]},
                            output={"pred": [MetaTensor(fused)], "image": [data["image"]]})
    return SimpleNamespace(network=network, state=state)


def test_the_bundle_writes_the_headers_and_record_the_other_doors_write(tiny_datalist, fusers, evaluator, tmp_path):
    study = tiny_datalist[0]
    FusedVolumeWriter(tmp_path / "bundle")(evaluator)
    streamed = fuse_study(study, fusers, WINDOWS)
    streamed.stream([NiftiSink(streamed, tmp_path / "streamed" / study["study_key"])])

    versions = {"weighted": weights_digest(fusers["weighted"].network), "laplacian": BASELINE_VERSION}
    records = []
    for door in ("bundle", "streamed"):
        folder = tmp_path / door / study["study_key"]
        for window, method in streamed.names:
            header = nib.load(folder / fused_filename(window, method)).header
            assert header["descrip"].item().decode() == nifti_description(method, window, versions[method])
            assert header.binaryblock == nib.load(tmp_path / "streamed" / study["study_key"]
                                                  / fused_filename(window, method)).header.binaryblock
        record = json.loads((folder / MANIFEST_FILE).read_text())
        del record["created"]
        records.append(record)
    assert records[0] == records[1] and records[0]["methods"] == versions


def test_the_record_names_the_ceiling_the_bundles_network_was_built_at(tiny_datalist, fusers, evaluator, tmp_path):
    """A bundle run with --suv_max 12 records 12, from its network: the writer has no ceiling of its own to forget."""
    at_twelve = SimpleNamespace(network=FusionNetwork(fusers, WINDOWS, 12.0), state=evaluator.state)
    FusedVolumeWriter(tmp_path)(at_twelve)
    record = json.loads((tmp_path / tiny_datalist[0]["study_key"] / MANIFEST_FILE).read_text())
    assert record["suv_max"] == 12.0


def test_the_bundle_removes_a_killed_runs_temporaries(tiny_datalist, evaluator, tmp_path):
    folder = tmp_path / tiny_datalist[0]["study_key"]
    folder.mkdir()
    leftover = left_by_a_killed_run(temporary_sibling(folder / fused_filename("lung", "weighted")), b"\x1f\x8b")
    writer = FusedVolumeWriter(tmp_path)
    writer(evaluator)
    assert not leftover.exists()
    written = [path.name for path in writer.written]
    assert sorted(path.name for path in folder.iterdir()) == sorted([MANIFEST_FILE, *written])
