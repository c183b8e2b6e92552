"""Every front door builds the bundle's model: its network_def with its checkpoint, read from inference.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.bundle_model import BUNDLE_ENV, CHECKOUT_BUNDLE, bundle_root, bundled_checkpoint, bundled_network
from pipeline.errors import CheckpointError
from pipeline.fusion.selection import MODEL_METHOD, build_fusers


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """The shipped bundle copied elsewhere, configs and weights, to be edited."""
    copy = tmp_path / "dcif_gan"
    shutil.copytree(CHECKOUT_BUNDLE / "configs", copy / "configs")
    (copy / "models").mkdir()
    shutil.copy(CHECKOUT_BUNDLE / "models" / "model.pt", copy / "models" / "model.pt")
    return copy


def _edit_network_def(bundle: Path, **values: object) -> None:
    config = bundle / "configs" / "inference.json"
    parsed = json.loads(config.read_text())
    parsed["network_def"].update(values)
    config.write_text(json.dumps(parsed))


def test_the_environment_names_the_bundle_and_its_paths_are_its_own(bundle_copy, monkeypatch):
    monkeypatch.setenv(BUNDLE_ENV, str(bundle_copy))
    assert bundle_root() == bundle_copy
    assert bundled_checkpoint() == bundle_copy / "models" / "model.pt"


def test_the_front_doors_model_is_the_bundles_network_def(bundle_copy, monkeypatch):
    monkeypatch.setenv(BUNDLE_ENV, str(bundle_copy))
    network = build_fusers([MODEL_METHOD])[MODEL_METHOD].network
    assert network.hyper_parameters == bundled_network().hyper_parameters
    assert network.hyper_parameters["width"] == json.loads(
        (bundle_copy / "configs" / "inference.json").read_text())["network_def"]["width"]


def test_an_override_of_network_def_reaches_the_front_doors(bundle_copy, monkeypatch):
    """Four heads leave every weight's shape alone; the card, trained with two, refuses them in one line."""
    _edit_network_def(bundle_copy, num_heads=4)
    monkeypatch.setenv(BUNDLE_ENV, str(bundle_copy))
    with pytest.raises(CheckpointError, match=r"was trained as num_heads=2, the network is built with num_heads=4$"):
        build_fusers([MODEL_METHOD])


def test_a_folder_that_is_not_a_bundle_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    with pytest.raises(CheckpointError) as caught:
        build_fusers([MODEL_METHOD])
    assert "\n" not in str(caught.value)
    assert f"{tmp_path}: not a DCIF-GAN bundle (no configs/inference.json)" in str(caught.value)
    assert build_fusers(["laplacian"])  # baselines need no bundle
