"""The dcif_gan fuser: loads a checkpoint into its network, checks the card, refuses to run without weights.

A stand-in generator (a learned 1x1 convolution over [CT, PET]) keeps these tests independent of
the real network, except those of the shipped model's TorchScript export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import save_net_with_metadata
from torch import nn

from pipeline.bundle_model import CHECKOUT_BUNDLE, bundled_checkpoint, bundled_network
from pipeline.errors import CheckpointError
from pipeline.fusion import ModelFuser, get_fuser
from pipeline.networks import DCIFGenerator


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


def save_model(path: Path, card: dict) -> Path:
    """The stand-in with trained weights as a checkpoint (``.pt``) or a TorchScript export with ``metadata.json``
    (``.ts``), each carrying ``card`` the way its format does (an empty card is no card)."""
    if path.suffix == ".pt":
        torch.save({"model": channel_mean_state(), "card": card}, path)
    else:
        network = StandInGenerator()
        network.load_state_dict(channel_mean_state())
        save_net_with_metadata(torch.jit.script(network), str(path), include_config_vals=False,
                               meta_values={"card": card})
    return path


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
    assert "evaluate: --methods \"['laplacian']\"" in message  # evaluate reads --methods, not --method


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


@pytest.mark.parametrize(("content", "problem"), [
    ("root:x:0:0:root:/root:/bin/bash\n", "not a PyTorch checkpoint file"),  # torch said only "IndexError"
    ("not a checkpoint", "not a PyTorch checkpoint file"),
    ("", "empty file (0 bytes)"),  # torch said only "EOFError"
    (nn.Linear(1, 1), "a PyTorch file holding Python objects besides tensors (a whole network saved?)"),
])
def test_unreadable_checkpoint_is_one_line_saying_what_is_wrong(tmp_path: Path, content: object, problem: str):
    path = tmp_path / "generator.pt"
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError) as caught:
        ModelFuser(checkpoint=path, network=StandInGenerator())
    assert str(caught.value).startswith(f"cannot read checkpoint {path}: {problem}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("suffix", [".pt", ".ts"])
def test_the_card_s_suv_ceiling_and_windows_are_checked_where_inputs_are_scaled(tmp_path, suffix):
    from pipeline.fusion import FusionNetwork

    path = save_model(tmp_path / f"model{suffix}", {"suv_max": 15.0, "windows": ["lung", "mediastinal"]})
    fuser = ModelFuser(checkpoint=path, network=StandInGenerator())
    FusionNetwork({"dcif_gan": fuser}, ["lung"], suv_max=15.0)  # as trained: accepted
    with pytest.raises(CheckpointError, match="trained with PET scaled at SUV ceiling 15, this run scales it at 10"):
        FusionNetwork({"dcif_gan": fuser}, ["lung"], suv_max=10.0)
    with pytest.raises(CheckpointError, match="trained on the CT windows lung, mediastinal, not bone"):
        fuser.check_inputs(["bone"], 15.0)
    # Classical methods and cardless checkpoints take any scaling.
    FusionNetwork({"laplacian": get_fuser("laplacian")}, ["lung"], suv_max=10.0)
    save_model(path, {})
    ModelFuser(checkpoint=path, network=StandInGenerator()).check_inputs(["lung"], 10.0)


def test_a_torchscript_model_needs_no_network(tmp_path, pair):
    path = save_model(tmp_path / "model.ts", {"suv_max": 15.0})
    ct, pet = pair
    fuser = get_fuser("dcif_gan", checkpoint=path)
    assert torch.allclose(fuser(ct, pet), (ct + pet) / 2, atol=1e-6) and fuser.card == {"suv_max": 15.0}
    with pytest.raises(ValueError, match="needs a network, or a TorchScript"):
        ModelFuser(checkpoint=tmp_path / "model.pt")


def test_unreadable_or_missing_torchscript_model_is_rejected(tmp_path: Path):
    path = tmp_path / "model.ts"
    with pytest.raises(CheckpointError, match=f"no dcif_gan checkpoint found at {path}"):
        ModelFuser(checkpoint=path)
    path.write_text("not a model")
    with pytest.raises(CheckpointError, match=f"^cannot read TorchScript model {path}: not a TorchScript file$"):
        ModelFuser(checkpoint=path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^cannot read TorchScript model {path}: empty file \(0 bytes\)$"):
        ModelFuser(checkpoint=path)


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped checkpoint exported by MONAI's ``ckpt_export``, as the bundle's README runs it."""
    from monai.bundle import ckpt_export

    path = tmp_path_factory.mktemp("export") / "model.ts"
    configs = CHECKOUT_BUNDLE / "configs"
    ckpt_export("network_def", filepath=str(path), ckpt_file=str(bundled_checkpoint()),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                key_in_ckpt="model", bundle_root=str(CHECKOUT_BUNDLE))
    return path


def test_ckpt_export_writes_the_shipped_model_with_its_card(shipped_export: Path):
    network = torch.jit.load(shipped_export)
    assert isinstance(network, torch.jit.ScriptModule)
    shipped = ModelFuser(bundled_network(), checkpoint=bundled_checkpoint())
    exported = ModelFuser(checkpoint=shipped_export)
    card = json.loads((CHECKOUT_BUNDLE / "configs" / "metadata.json").read_text())["card"]
    assert exported.card == card == {key: shipped.card[key] for key in ("windows", "suv_max")}


def test_the_shipped_model_fuses_alike_from_torchscript_and_from_its_checkpoint(shipped_export: Path):
    generator = torch.Generator().manual_seed(0)
    ct, pet = torch.rand(2, 1, 37, 53, generator=generator), torch.rand(2, 1, 37, 53, generator=generator)
    for output in ("fused", "f_pet"):  # the scripted forward keeps the streams it calls
        exported = get_fuser("dcif_gan", checkpoint=shipped_export, network=bundled_network(), output=output)
        shipped = get_fuser("dcif_gan", checkpoint=bundled_checkpoint(), network=bundled_network(), output=output)
        assert isinstance(exported.network, torch.jit.ScriptModule)
        assert (exported(ct, pet) - shipped(ct, pet)).abs().max() < 1e-5


def _counted(network: nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The input channels of each forward of ``network``."""
    forward, channels = network.forward, []
    monkeypatch.setattr(network, "forward", lambda x: channels.append(x.shape[1]) or forward(x))
    return channels


def test_the_generator_fuses_every_window_in_one_forward(monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(0)
    network = DCIFGenerator("network4", width=8, num_heads=2, depths=(1, 1, 1))
    fuser = ModelFuser(network=network)
    channels = _counted(network, monkeypatch)
    generator = torch.Generator().manual_seed(1)
    ct, pet = torch.rand(2, 2, 16, 24, generator=generator), torch.rand(2, 1, 16, 24, generator=generator)
    fused = fuser(ct, pet)
    assert channels == [3]  # two CT windows and the PET
    assert torch.equal(fused, torch.cat([fuser(ct[:, w : w + 1], pet) for w in range(2)], dim=1))


def test_another_network_fuses_a_window_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in, or a TorchScript export (which may predate several windows a forward), takes CT and PET pairs."""
    generator = torch.Generator().manual_seed(2)
    ct, pet = torch.rand(1, 2, 9, 11, generator=generator), torch.rand(1, 1, 9, 11, generator=generator)
    stand_in = StandInGenerator()
    channels = _counted(stand_in, monkeypatch)
    assert torch.allclose(ModelFuser(network=stand_in)(ct, pet), (0.9 * (ct + pet)).clamp(0, 1))
    assert channels == [2, 2]
    exported = ModelFuser(checkpoint=save_model(tmp_path / "model.ts", {}))
    assert torch.allclose(exported(ct, pet), (ct + pet) / 2, atol=1e-6)
