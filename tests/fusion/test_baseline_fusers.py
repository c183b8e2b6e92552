"""The classical baselines: the fuser contract, exact pixel rules, and multi-scale fusion quality."""

from __future__ import annotations

import pytest
import torch

from pipeline.fusion import get_fuser
from pipeline.metrics import fusion_metrics

BASELINES = ["average", "max", "laplacian", "dwt", "saliency"]
MULTISCALE = ["laplacian", "dwt", "saliency"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def random_pair(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(shape, generator=generator, dtype=dtype).to(device) for _ in range(2))


def lesion_phantom(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """CT: a body with a bright bone bar (sharp edges); PET: one smooth hot blob, outside the bone."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ct = torch.zeros(size, size)
    ct[12:52, 12:52] = 0.5
    ct[24:40, 30:34] = 0.9
    pet = torch.exp(-((y - 40) ** 2 + (x - 20) ** 2) / (2 * 3.0**2))
    return ct[None, None], pet[None, None]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", BASELINES)
def test_contract_on_odd_sizes(name, dtype, device):
    ct, pet = random_pair(2, 1, 37, 53, dtype=dtype, device=device)
    fused = get_fuser(name)(ct, pet)
    assert fused.shape == ct.shape and fused.dtype == dtype and fused.device == ct.device
    assert fused.min() >= 0 and fused.max() <= 1
    assert torch.equal(fused, get_fuser(name)(ct, pet))


def test_average_and_max_are_exact():
    ct, pet = random_pair(1, 1, 5, 7)
    assert torch.equal(get_fuser("average")(ct, pet), (ct + pet) / 2)
    assert torch.equal(get_fuser("max")(ct, pet), torch.maximum(ct, pet))


@pytest.mark.parametrize("shape", [(2, 1, 37, 53), (1, 1, 3, 5), (1, 1, 1, 1)])
@pytest.mark.parametrize("name", MULTISCALE)
def test_fusing_an_image_with_itself_returns_it(name, shape):
    image, _ = random_pair(*shape)
    assert torch.allclose(get_fuser(name)(image, image), image, atol=1e-5)


@pytest.mark.parametrize("name", MULTISCALE)
def test_multiscale_fusion_keeps_ct_edges_and_the_pet_blob_better_than_averaging(name):
    ct, pet = lesion_phantom()
    fused, averaged = get_fuser(name)(ct, pet), get_fuser("average")(ct, pet)
    assert fused[0, 0, 40, 20] > averaged[0, 0, 40, 20] + 0.15
    assert fusion_metrics(fused, ct, pet)["QABF"] > fusion_metrics(averaged, ct, pet)["QABF"] + 0.1


@pytest.mark.parametrize("name", MULTISCALE)
def test_levels_must_be_positive(name):
    with pytest.raises(ValueError, match="at least 1"):
        get_fuser(name, levels=0)


def test_dwt_accepts_another_wavelet():
    ct, pet = lesion_phantom(32)
    haar = get_fuser("dwt", wavelet="haar", levels=2)(ct, pet)
    assert not torch.allclose(haar, get_fuser("dwt")(ct, pet))
    assert torch.allclose(get_fuser("dwt", wavelet="haar")(ct, ct), ct, atol=1e-6)
