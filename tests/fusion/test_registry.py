"""The fuser registry: every method by name, one contract, one-line errors."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import DcifError
from pipeline.fusion import AverageFuser, Fuser, available_fusers, get_fuser, register_fuser

BASELINES = ["average", "dwt", "laplacian", "max", "saliency"]


def test_registry_lists_every_method():
    assert available_fusers() == sorted([*BASELINES, "dcif_gan"])


@pytest.mark.parametrize("name", BASELINES)
def test_get_fuser_builds_a_fuser(name):
    assert isinstance(get_fuser(name), Fuser)


def test_get_fuser_passes_keyword_arguments():
    assert get_fuser("laplacian", levels=2).levels == 2


def test_an_unknown_setting_is_a_one_line_project_error_naming_the_settings():
    settings = "levels, low, high, radius, ct_keep, pet_gain"
    with pytest.raises(DcifError, match=rf"'saliency' has no setting 'radus'; its settings: {settings}$"):
        get_fuser("saliency", radus=4)


def test_unknown_name_is_a_one_line_project_error_listing_the_methods():
    with pytest.raises(DcifError) as caught:
        get_fuser("pca")
    message = str(caught.value)
    assert "\n" not in message
    assert "'pca'" in message and "available: average, dcif_gan, dwt, laplacian, max" in message
    assert isinstance(caught.value, ValueError)


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_fuser("average")(AverageFuser)


@pytest.mark.parametrize(("ct_shape", "pet_shape"), [((1, 1, 8, 8), (1, 1, 8, 9)), ((1, 2, 8, 8), (1, 2, 8, 8)),
                                                    ((2, 1, 8, 8), (1, 1, 8, 8)), ((1, 0, 8, 8), (1, 1, 8, 8))])
def test_fusers_reject_inputs_that_are_not_ct_windows_and_one_pet_of_one_size(ct_shape, pet_shape):
    with pytest.raises(ValueError, match=r"CT windows \(B, W, H, W'\) and a PET \(B, 1, H, W'\)"):
        get_fuser("average")(torch.zeros(ct_shape), torch.zeros(pet_shape))


def test_a_fuser_fuses_each_ct_window_with_the_pet():
    generator = torch.Generator().manual_seed(0)
    ct, pet = torch.rand(2, 3, 8, 10, generator=generator), torch.rand(2, 1, 8, 10, generator=generator)
    fuser = get_fuser("laplacian")
    fused = fuser(ct, pet)
    assert fused.shape == ct.shape
    for window in range(3):
        assert torch.equal(fused[:, window : window + 1], fuser(ct[:, window : window + 1], pet))
