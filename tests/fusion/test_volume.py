"""Volumes are fused slice by slice with the right channel layout, and a study end to end."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from pipeline.errors import InputError
from pipeline.fusion import FusionNetwork, fuse_volume, get_fuser
from pipeline.fusion import streaming as study_module
from pipeline.fusion.selection import build_fusers
from pipeline.fusion.streaming import StudySink, fuse_study
from pipeline.fusion.writers import NiftiSink
from pipeline.io.nifti import load_nifti


def test_channels_are_window_major_and_match_each_fuser():
    fusers = {"average": get_fuser("average"), "max": get_fuser("max")}
    network = FusionNetwork(fusers, ["lung", "mediastinal"])
    assert network.channels == [("lung", "average"), ("lung", "max"), ("mediastinal", "average"), ("mediastinal", "max")]
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


@pytest.mark.parametrize("slab", [1, 3, 64])
def test_streamed_study_equals_fusing_the_whole_volume(tiny_datalist, whole_volume_fusion, slab, monkeypatch):
    monkeypatch.setattr(study_module, "SLAB_VOXELS", slab * 64 * 64 * 4)  # 4 channels of 64 x 64
    fusers = build_fusers(["average", "laplacian"])
    result = fuse_study(tiny_datalist[0], fusers, windows=["lung", "mediastinal"])
    expected = whole_volume_fusion(tiny_datalist[0], fusers, ["lung", "mediastinal"])
    assert result.names == list(expected)
    starts, streamed = [], {name: [] for name in result.names}
    for piece in result.slabs():  # the default size, from the (patched) voxel budget
        starts.append(piece.start)
        for channel, name in enumerate(result.names):
            streamed[name].append(piece.fused[channel : channel + 1])
    assert starts == list(range(0, result.shape[-1], slab))
    for name, volume in expected.items():
        torch.testing.assert_close(torch.cat(streamed[name], dim=-1), volume, atol=0, rtol=0)


def test_a_slab_is_released_before_the_next_is_made(tiny_datalist, monkeypatch):
    """Streaming holds one slab at a time: nothing keeps a slab alive once its sinks are done with it."""
    monkeypatch.setattr(study_module, "SLAB_VOXELS", 2 * 64 * 64)  # 2 slices of 64 x 64, one channel
    result = fuse_study(tiny_datalist[0], build_fusers(["max"]), windows=["lung"])
    made: list[weakref.ref] = []
    alive_when_made = []
    original = study_module.fuse_volume

    def watched(*args, **kwargs):
        gc.collect()
        alive_when_made.append(sum(ref() is not None for ref in made))  # earlier slabs still referenced
        fused = original(*args, **kwargs)
        made.append(weakref.ref(fused))
        return fused

    monkeypatch.setattr(study_module, "fuse_volume", watched)

    class Looker(StudySink):
        def add(self, slab):
            assert slab.fused is made[-1]()

    result.stream([Looker()])
    assert len(alive_when_made) == -(-result.shape[-1] // 2) > 2
    assert alive_when_made == [0] * len(alive_when_made)


def test_fuse_study_lies_on_the_ct_geometry_and_times_its_stages(tiny_datalist, tmp_path):
    result = fuse_study(tiny_datalist[0], build_fusers(["average", "max"]), windows=["lung"])
    assert result.names == [("lung", "average"), ("lung", "max")]
    ct = result.data["ct"]
    assert result.shape == tuple(ct.shape[1:]) and result.study_key == tiny_datalist[0]["study_key"]
    assert set(result.timings) == {"load", "suv", "resample", "window"}
    volumes = NiftiSink(result, tmp_path)
    result.stream([volumes])
    assert set(result.timings) == {"load", "suv", "resample", "window", "fuse", "write"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    written = load_nifti(tmp_path / "fused_max_lung.nii.gz", "fused")
    assert written.shape == ct.shape and [path.name for path in volumes.paths] == [
        "fused_average_lung.nii.gz", "fused_max_lung.nii.gz"]
    torch.testing.assert_close(written.affine, ct.affine)


def test_unknown_window_is_refused_before_anything_is_read():
    with pytest.raises(InputError, match="unknown CT window"):
        fuse_study({"ct": "/nonexistent/ct", "pet": "/nonexistent/pet"}, build_fusers(["max"]), windows=["bone"])
