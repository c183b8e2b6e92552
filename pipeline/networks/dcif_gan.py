"""DCIF-GAN: coupled generators and coupled discriminators, and the paper's four ablation variants.

Choices where the paper is silent (see the project's ``shared/docs/dcif_gan_spec.md``):

- Defaults width 48, 6 heads (head dim 8), window 8, MLP ratio 2, depths (4, 4, 2): the paper's
  block counts at a SwinFusion-like size, narrowed from SwinFusion's width 60 for CPU speed.
- Inputs of any H x W are reflect-padded at the bottom/right to a window multiple and cropped back.
- H_SR narrows width -> width / 2 -> 1 (as SwinFusion's reconstruction); each CMIFM stream ends
  in a plain 3x3 conv (H_conv); every conv block uses LeakyReLU slope 0.2.
- The extractor (CC-TFEM) is one module applied to both modalities, as the paper states. The
  reconstructors (C-TFRM) are *not* shared by default: as in CoGAN, the output layers carry the
  domain-specific detail, and G1 (CT texture) and G2 (PET function) are judged against different
  real images; ``share_reconstruction=True`` ties them too.
- The last H_SR conv block ends in a sigmoid instead of LeakyReLU: the output lies in [0, 1] like
  the inputs, with gradients everywhere (a clamp would stop them outside the range).
- Discriminators give a raw score (no sigmoid: both adversarial forms are least squares) and pool
  globally before the Linear layer, so one model serves any input size.
- Ablation ladder: Network1 is one CNN generator on the stacked (CT, PET) pair and one
  discriminator; Network2 adds the coupled pairs with CNN stages; Network3 puts Swin stages in
  extraction *and* reconstruction (CC-TFEM and C-TFRM), so that Network4 = Network3 + CMIFM is the
  full model, as the paper's ladder states. CNN-only variants replace each Swin stage by a residual
  conv stage of the same depth and CMIFM by a concat-and-conv fusion per stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import DcifError
from pipeline.networks.cpu_allocator import keep_freed_memory
from pipeline.networks.blocks.conv import ConvStage, conv_block
from pipeline.networks.blocks.cross_modal import ConcatFusion, CrossModalFusion
from pipeline.networks.blocks.swin import SwinStage, pad_to_multiple
from pipeline.networks.blocks.windows import CPU_PIXELS_PER_FORWARD


@dataclass(frozen=True)
class Variant:
    """What one rung of the ablation ladder switches on."""

    coupled: bool
    """Two generators and two discriminators, coupled by weight sharing (else one of each)."""
    transformer: bool
    """Swin stages in extraction and reconstruction (CC-TFEM, C-TFRM), else residual conv stages."""
    cross_modal: bool
    """CMIFM between the streams, else concat-and-conv fusion."""


VARIANTS: dict[str, Variant] = {
    "network1": Variant(coupled=False, transformer=False, cross_modal=False),
    "network2": Variant(coupled=True, transformer=False, cross_modal=False),
    "network3": Variant(coupled=True, transformer=True, cross_modal=False),
    "network4": Variant(coupled=True, transformer=True, cross_modal=True),
}

DISCRIMINATOR_CHANNELS = (32, 64, 128, 256)


def lookup_variant(name: str) -> Variant:
    """The ablation variant called ``name``, or a one-line error listing the valid names."""
    if name not in VARIANTS:
        raise DcifError(f"unknown DCIF-GAN variant {name!r}: expected one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


class FeatureExtractor(nn.Module):
    """H_SE (two 3x3 conv blocks) then the deep stage H_DE; returns (F_SF, F_DF).

    With a ``SwinStage`` as ``deep`` this is CC-TFEM.
    """

    def __init__(self, in_channels: int, width: int, deep: nn.Module) -> None:
        super().__init__()
        self.shallow = nn.Sequential(conv_block(in_channels, width), conv_block(width, width))
        self.deep = deep

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shallow = self.shallow(x)
        return shallow, self.deep(shallow)


class FeatureReconstructor(nn.Module):
    """H_DR on F_FDF + F_SF (long skip), then H_SR: two 3x3 conv blocks down to one channel in [0, 1].

    With a ``SwinStage`` as ``deep`` this is C-TFRM.
    """

    def __init__(self, width: int, deep: nn.Module) -> None:
        super().__init__()
        self.deep = deep
        self.head = nn.Sequential(conv_block(width, width // 2), conv_block(width // 2, 1, act="sigmoid"))

    def forward(self, fused: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return self.head(self.deep(fused + shallow))


def _one_or_two(make: Callable[[], nn.Module], shared: bool) -> tuple[nn.Module, nn.Module]:
    """The CT- and PET-stream modules: one object used twice when shared, else two independent ones."""
    first = make()
    return first, first if shared else make()


class DCIFGenerator(nn.Module):
    """The coupled generators G1 (CT stream -> F_CT) and G2 (PET stream -> F_PET) of one variant.

    ``forward(x)`` takes x = (B, 2, H, W) (channel 0 CT, channel 1 PET, both in [0, 1]) and returns the
    fused F = (F_CT + F_PET) / 2, (B, 1, H, W): the single-tensor call of MONAI inferers and
    ``verify_net_in_out``; with several CT windows before the PET, (B, W + 1, H, W), it fuses each with the PET,
    whose features it extracts once, into (B, W, H, W). Training uses :meth:`streams`. Network1 has one generator:
    it reads the stacked pair and its output serves as both streams (``extractor_ct is extractor_pet``, no fusion).

    Args:
        variant: ``network1`` .. ``network4`` (see :data:`VARIANTS`).
        width: channels of every feature map (embedding dim C); a multiple of ``num_heads``.
        num_heads: attention heads of the Swin and fusion blocks.
        window_size: attention window side M; inputs are padded to a multiple of it.
        mlp_ratio: hidden width of the feed-forward layers, relative to ``width``.
        depths: blocks in extraction H_DE, fusion CMIFM and reconstruction H_DR.
        share_extraction: one extractor for both modalities (the paper's coupling); two-stream variants.
        share_reconstruction: one reconstructor for both streams; two-stream variants.
    """

    def __init__(
        self,
        variant: str = "network4",
        width: int = 48,
        num_heads: int = 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        depths: Sequence[int] = (4, 4, 2),
        share_extraction: bool = True,
        share_reconstruction: bool = False,
    ) -> None:
        super().__init__()
        spec = lookup_variant(variant)
        attention = spec.transformer or spec.cross_modal
        if width < 2 or (attention and width % num_heads):
            raise DcifError(f"DCIF-GAN width {width} must be at least 2 and a multiple of num_heads {num_heads}")
        extract_depth, fuse_depth, reconstruct_depth = depths
        self.variant = variant
        # What a checkpoint's card records, so a network built otherwise is refused at load.
        self.hyper_parameters = {"variant": variant, "width": width, "num_heads": num_heads,
                                 "window_size": window_size, "mlp_ratio": mlp_ratio, "depths": list(depths),
                                 "share_extraction": share_extraction, "share_reconstruction": share_reconstruction}
        self.pad_multiple = window_size if attention else 1
        self.cpu_pixels_per_forward = CPU_PIXELS_PER_FORWARD  # an attribute: TorchScript reads no global number

        def deep(depth: int) -> nn.Module:
            if spec.transformer:
                return SwinStage(width, depth, num_heads, window_size, mlp_ratio)
            return ConvStage(width, depth)

        in_channels = 1 if spec.coupled else 2
        self.extractor_ct, self.extractor_pet = _one_or_two(
            lambda: FeatureExtractor(in_channels, width, deep(extract_depth)), share_extraction or not spec.coupled
        )
        self.reconstructor_ct, self.reconstructor_pet = _one_or_two(
            lambda: FeatureReconstructor(width, deep(reconstruct_depth)), share_reconstruction or not spec.coupled
        )
        self.one_extractor = self.extractor_ct is self.extractor_pet  # TorchScript cannot compare modules
        self.fusion: nn.Module | None = None
        if spec.coupled:
            self.fusion = (
                CrossModalFusion(width, fuse_depth, num_heads, window_size, mlp_ratio)
                if spec.cross_modal
                else ConcatFusion(width)
            )
        # Channels-last convolution weights make every convolution run channels-last, the one-channel inputs
        # included (whose layout alone is ambiguous): the Swin stages read and write that layout without a copy,
        # and oneDNN's 3x3 convolutions at 16 channels run 1.6x faster in it (about 5 % of a 512 x 512 forward).
        self.to(memory_format=torch.channels_last)

    def streams(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_CT, F_PET), each (B, W, H, W') in [0, 1], from W CT windows (B, W, H, W') and the PET (B, 1, H, W'), all
        in [0, 1]: channel w of each is the pair of window w (W = 1: one CT slice's). The PET's features are
        extracted once for all windows, a fifth of a 512 x 512 forward (shipped and paper-depth models) that each
        window after the first does not repeat."""
        if ct.shape[0] == 0:  # no slices (the windows' reshapes cannot infer a size from nothing)
            return ct.new_zeros(ct.shape), ct.new_zeros(ct.shape)
        if not torch.jit.is_scripting() and ct.device.type == "cpu":
            keep_freed_memory()  # once per process; see pipeline.networks.cpu_allocator
        h, w = ct.shape[-2:]
        ct, pet = pad_to_multiple(ct, self.pad_multiple), pad_to_multiple(pet, self.pad_multiple)
        f_cts: list[torch.Tensor] = []
        f_pets: list[torch.Tensor] = []
        if self.fusion is None:  # one generator on each stacked pair
            for window in ct.split(1, dim=1):
                shallow, deep = self.extractor_ct(torch.cat([window, pet], dim=1))
                f_cts.append(self.reconstructor_ct(deep, shallow)[..., :h, :w])
            fused = _channels(f_cts)
            return fused, fused
        shallow_cts, shallow_pet, fused = self._extract_and_fuse(ct, pet)
        for shallow_ct, (fused_ct, fused_pet) in zip(shallow_cts, fused):
            f_cts.append(self.reconstructor_ct(fused_ct, shallow_ct)[..., :h, :w])
            f_pets.append(self.reconstructor_pet(fused_pet, shallow_pet)[..., :h, :w])
        return _channels(f_cts), _channels(f_pets)

    def _extract_and_fuse(
        self, ct: torch.Tensor, pet: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """F_SF of each CT window and of the PET, and the fused F_FDF pair of each window; the deep features are freed
        here, before reconstruction."""
        images = list(ct.split(1, dim=1))
        if self.one_extractor:  # one pass of the shared extractor over every window and the PET
            shallow, deep = self.extractor_ct(torch.cat(images + [pet]))
            shallows, deeps = shallow.chunk(len(images) + 1), deep.chunk(len(images) + 1)
            shallow_cts, deep_cts, shallow_pet, deep_pet = shallows[:-1], deeps[:-1], shallows[-1], deeps[-1]
        else:
            shallow, deep = self.extractor_ct(torch.cat(images))
            shallow_cts, deep_cts = shallow.chunk(len(images)), deep.chunk(len(images))
            shallow_pet, deep_pet = self.extractor_pet(pet)
        return shallow_cts, shallow_pet, [self.fusion(deep_ct, deep_pet) for deep_ct in deep_cts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F = (F_CT + F_PET) / 2 of each CT window with the PET: x = (B, W + 1, H, W'), W >= 1 CT windows then the
        PET, gives (B, W, H, W') (the pair (B, 2, H, W') gives (B, 1, H, W'))."""
        if x.ndim != 4 or x.shape[1] < 2:
            raise ValueError(f"DCIF generator expects (B, W + 1, H, W): W CT windows then the PET, got {list(x.shape)}")
        per_forward = max(1, self.cpu_pixels_per_forward // (x.shape[-2] * x.shape[-1]))
        if x.device.type == "cpu" and not torch.is_grad_enabled() and x.shape[0] > per_forward:
            return torch.cat([self._fused(part) for part in x.split(per_forward)])
        return self._fused(x)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        f_ct, f_pet = self.streams(x[:, :-1], x[:, -1:])
        return 0.5 * (f_ct + f_pet)


def _channels(images: list[torch.Tensor]) -> torch.Tensor:
    """One window's image as it is (no copy under autograd), several stacked as channels."""
    return images[0] if len(images) == 1 else torch.cat(images, dim=1)


class Discriminator(nn.Module):
    """C(x): conv blocks 1-2 (``low_level``), then blocks 3-4 + pool + Linear (``high_level``) -> (B, 1).

    Coupled discriminators hold the same ``high_level`` object.
    """

    def __init__(self, low_level: nn.Module, high_level: nn.Module) -> None:
        super().__init__()
        self.low_level = low_level
        self.high_level = high_level
        # Channels-last, as the generator: oneDNN's strided 3x3 convolutions and their backward run 9-17 % faster
        # in it at 64 x 64 and 128 x 128 crops (2-3 % of a training iteration).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.high_level(self.low_level(x))


class GlobalAveragePool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a pool over the whole map, whose gradient keeps the channels-last layout.

    AdaptiveAvgPool2d's backward returns a contiguous (NCHW) gradient, and the LeakyReLU backward before it, reading
    that against its channels-last output, ran 20x slower (0.12 ms a call at 64 x 64 crops, 6 calls an iteration).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, x.shape[-2:])


def _strided_blocks(channels: Sequence[int]) -> list[nn.Module]:
    """Conv 3x3 stride 2 + BatchNorm + LeakyReLU from ``channels[i]`` to ``channels[i + 1]``."""
    return [conv_block(cin, cout, stride=2, norm="batch") for cin, cout in zip(channels, channels[1:])]


def _low_level() -> nn.Module:
    return nn.Sequential(*_strided_blocks((1, *DISCRIMINATOR_CHANNELS[:2])))


def _high_level() -> nn.Module:
    return nn.Sequential(
        *_strided_blocks(DISCRIMINATOR_CHANNELS[1:]),
        GlobalAveragePool(),
        nn.Flatten(),
        nn.Linear(DISCRIMINATOR_CHANNELS[-1], 1),
    )


def build_discriminators(coupled: bool = True, share_high_level: bool = True) -> tuple[Discriminator, Discriminator]:
    """(D1, D2): coupled ones share blocks 3-4 and the Linear; uncoupled means one D (``d1 is d2``)."""
    if not coupled:
        single = Discriminator(_low_level(), _high_level())
        return single, single
    high_level = _high_level()
    return Discriminator(_low_level(), high_level), Discriminator(
        _low_level(), high_level if share_high_level else _high_level()
    )


class DCIFGAN(nn.Module):
    """Everything one training run optimises: ``generator``, ``d1`` (PET vs F_CT), ``d2`` (CT vs F_PET).

    Every variant has this interface, so one training loop serves the whole ablation ladder.
    ``share_discriminators=False`` gives coupled variants two independent discriminators; other
    keyword arguments go to :class:`DCIFGenerator`.
    """

    def __init__(self, variant: str = "network4", share_discriminators: bool = True, **generator_kwargs) -> None:
        super().__init__()
        self.variant = variant
        self.generator = DCIFGenerator(variant, **generator_kwargs)
        self.d1, self.d2 = build_discriminators(lookup_variant(variant).coupled, share_discriminators)

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """D1's and D2's parameters, once each when they are one shared module: what D's optimiser steps."""
        return nn.ModuleList([self.d1, self.d2]).parameters()
