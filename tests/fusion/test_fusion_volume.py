"""Volumes are fused slice by slice with the right channel layout, and a study end to end."""

from __future__ import annotations

import pytest
import torch

from pipeline.fusion import FusionNetwork, fuse_volume, get_fuser
from pipeline.fusion.selection import build_fusers
from pipeline.fusion.study import fuse_study


def test_channels_are_window_major_and_match_each_fuser():
    fusers = {"average": get_fuser("average"), "max": get_fuser("max")}
    network = FusionNetwork(fusers, ["lung", "mediastinal"])
    assert network.channel_names == ["lung/average", "lung/max", "mediastinal/average", "mediastinal/max"]
    x = torch.rand(2, 3, 9, 7)
    out = network(x)
    assert out.shape == (2, 4, 9, 7)
    torch.testing.assert_close(out[:, 1:2], torch.maximum(x[:, 0:1], x[:, 2:3]))
    torch.testing.assert_close(out[:, 2:3], 0.5 * (x[:, 1:2] + x[:, 2:3]))


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="1 CT window channels"):
        FusionNetwork({"max": get_fuser("max")}, ["lung"])(torch.rand(1, 3, 8, 8))


def test_fuse_volume_equals_fusing_each_axial_slice():
    image = torch.rand(3, 12, 10, 5)
    network = FusionNetwork({"laplacian": get_fuser("laplacian")}, ["lung", "mediastinal"])
    fused = fuse_volume(network, image, sw_batch_size=2)
    assert fused.shape == (2, 12, 10, 5)
    for z in range(5):
        expected = network(image[None, ..., z])[0]
        torch.testing.assert_close(fused[..., z], expected)


def test_streams_need_the_model():
    with pytest.raises(ValueError, match="dcif_gan"):
        build_fusers(["max"], streams=True)


def test_fuse_study_returns_volumes_on_the_ct_geometry(tiny_datalist):
    result = fuse_study(tiny_datalist[0], build_fusers(["average", "max"]), windows=["lung"])
    assert set(result.fused) == {("lung", "average"), ("lung", "max")}
    volume = result.fused[("lung", "max")]
    ct = result.data["ct"]
    assert volume.shape == ct.shape
    torch.testing.assert_close(volume.affine, ct.affine)
    assert result.study_key == tiny_datalist[0]["study_key"]
    assert set(result.timings) == {"load", "suv", "resample", "window", "fuse"}
    assert all(seconds >= 0 for seconds in result.timings.values())
