"""The dcif_gan fuser: loads a checkpoint into its network, checks the card, refuses to run without weights.

A stand-in generator (a learned 1x1 convolution over [CT, PET]) keeps these tests independent of
the real network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.errors import CheckpointError
from pipeline.fusion import ModelFuser, get_fuser


class StandInGenerator(nn.Module):
    """Maps (B, 2, H, W) to (B, 1, H, W) with a weighted channel sum, initialised away from the mean."""

    def __init__(self, bias: bool = False, heads: int = 1) -> None:
        super().__init__()
        self.hyper_parameters = {"bias": bias, "heads": heads}
        self.mix = nn.Conv2d(2, 1, kernel_size=1, bias=bias)
        nn.init.constant_(self.mix.weight, 0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)


def channel_mean_state(bias: bool = False) -> dict[str, torch.Tensor]:
    """Trained weights: the stand-in then averages CT and PET."""
    generator = StandInGenerator(bias=bias)
    nn.init.constant_(generator.mix.weight, 0.5)
    if bias:
        nn.init.zeros_(generator.mix.bias)
    return generator.state_dict()


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 9, 11, generator=generator), torch.rand(2, 1, 9, 11, generator=generator)


@pytest.mark.parametrize("wrap", [False, True], ids=["bare_state_dict", "model_key"])
def test_weights_from_the_checkpoint_are_used(tmp_path: Path, pair, wrap):
    path = tmp_path / "generator.pt"
    state = channel_mean_state()
    torch.save({"model": state, "card": {}} if wrap else state, path)
    ct, pet = pair
    fused = get_fuser("dcif_gan", checkpoint=path, network=StandInGenerator())(ct, pet)
    assert torch.allclose(fused, (ct + pet) / 2, atol=1e-6)


def test_monai_checkpoint_loader_reads_the_layout(tmp_path: Path):
    """Model-zoo tools load the weights with ``CheckpointLoader(load_dict={"model": net})``."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    path = tmp_path / "model.pt"
    torch.save({"model": channel_mean_state(), "card": {"suv_max": 15.0}}, path)
    network = StandInGenerator()
    CheckpointLoader(str(path), {"model": network})(Engine(lambda engine, batch: None))
    assert torch.equal(network.mix.weight, torch.full_like(network.mix.weight, 0.5))


def test_a_network_built_otherwise_than_the_card_says_is_rejected(tmp_path: Path):
    """Heads change no weight shape, so only the card can tell such a network from the trained one."""
    path = tmp_path / "model.pt"
    torch.save({"model": channel_mean_state(), "card": {"network": {"heads": 2, "bias": False}}}, path)
    with pytest.raises(CheckpointError, match=r"was trained as heads=2, the network is built with heads=1$"):
        ModelFuser(StandInGenerator(), checkpoint=path)
    ModelFuser(StandInGenerator(heads=2), checkpoint=path)  # as trained: accepted


def test_output_keeps_the_input_dtype_and_range(pair):
    ct, pet = (x.double() for x in pair)
    fused = ModelFuser(network=StandInGenerator())(ct, pet)  # 0.9 (CT + PET) exceeds 1 in places
    assert fused.dtype == torch.float64 and fused.max() == 1


def test_a_network_without_checkpoint_is_used_as_given(pair):
    network = StandInGenerator()
    ct, pet = pair
    assert torch.allclose(ModelFuser(network=network)(ct, pet), (0.9 * (ct + pet)).clamp(0, 1))


def test_no_checkpoint_is_a_one_line_error_naming_the_baselines(tmp_path: Path):
    path = tmp_path / "missing" / "generator.pt"
    with pytest.raises(CheckpointError) as caught:
        get_fuser("dcif_gan", checkpoint=path, network=StandInGenerator())
    message = str(caught.value)
    assert "\n" not in message
    assert f"no dcif_gan checkpoint found at {path}" in message
    assert "--method laplacian" in message and "average, dwt, laplacian, max" in message


def test_checkpoint_for_another_network_is_rejected(tmp_path: Path):
    path = tmp_path / "generator.pt"
    torch.save({"model": {"other.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="does not match StandInGenerator: 1 missing and 1 unexpected"):
        ModelFuser(checkpoint=path, network=StandInGenerator())


def test_checkpoint_with_other_shapes_is_rejected(tmp_path: Path):
    path = tmp_path / "generator.pt"
    torch.save({"mix.weight": torch.zeros(1, 3, 1, 1)}, path)
    with pytest.raises(CheckpointError, match="parameter shapes differ"):
        ModelFuser(checkpoint=path, network=StandInGenerator())


def test_unreadable_checkpoint_is_rejected(tmp_path: Path):
    path = tmp_path / "generator.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        ModelFuser(checkpoint=path, network=StandInGenerator())


def test_the_card_s_suv_ceiling_and_windows_are_checked_where_inputs_are_scaled(tmp_path, pair):
    from pipeline.fusion import FusionNetwork

    path = tmp_path / "model.pt"
    torch.save({"model": channel_mean_state(), "card": {"suv_max": 15.0, "windows": ["lung", "mediastinal"]}},
               path)
    fuser = ModelFuser(checkpoint=path, network=StandInGenerator())
    FusionNetwork({"dcif_gan": fuser}, ["lung"], suv_max=15.0)  # as trained: accepted
    with pytest.raises(CheckpointError, match="trained with PET scaled at SUV ceiling 15, this run scales it at 10"):
        FusionNetwork({"dcif_gan": fuser}, ["lung"], suv_max=10.0)
    with pytest.raises(CheckpointError, match="trained on the CT windows lung, mediastinal, not bone"):
        fuser.check_inputs(["bone"], 15.0)
    # Classical methods and cardless checkpoints take any scaling.
    FusionNetwork({"laplacian": get_fuser("laplacian")}, ["lung"], suv_max=10.0)
    torch.save({"model": channel_mean_state()}, path)
    ModelFuser(checkpoint=path, network=StandInGenerator()).check_inputs(["lung"], 10.0)
