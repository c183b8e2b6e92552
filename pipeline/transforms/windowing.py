"""Map CT HU and PET SUV onto [0, 1]: display windows for CT, a fixed SUV ceiling for PET.

Both are ``clip((x - low) / width, 0, 1)``. MONAI's ``ScaleIntensityRange`` computes the same values but
allocates a full-volume temporary per arithmetic step; here the output is allocated once and updated
in place, which matters for 512x512x300 CTs held next to their resampled PET.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from pipeline.errors import InputError
from pipeline.transforms.suv import RELATIVE_UNITS, is_suv_units

# (width, level) in HU of the CT windows the method fuses with PET.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {"lung": (1500.0, -600.0), "mediastinal": (350.0, 40.0)}
# SUV mapped to 1: keeps FDG-avid tumours (phantom SUVmax 10, shared sarcomas up to ~22) mostly below
# saturation while normal tissue (SUV ~1) still spans several percent of the range.
DEFAULT_SUV_MAX = 15.0


def check_windows(windows: Sequence[str]) -> list[str]:
    """``windows`` as a list, or an InputError naming those that are not presets: the one place for the rule."""
    windows = list(windows)
    unknown = [window for window in windows if window not in WINDOW_PRESETS]
    if not windows or unknown:
        raise InputError(f"unknown CT window(s) {unknown or '(none given)'}; use {', '.join(sorted(WINDOW_PRESETS))}")
    return windows


class ClipScale(Transform):
    """``clip((x - low) / width, 0, 1)`` in float32, allocating the output once."""

    def __init__(self, low: float, width: float):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.low = float(low)
        self.width = float(width)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.to(torch.float32, copy=True).sub_(self.low).div_(self.width).clamp_(0.0, 1.0)


class CTWindow(ClipScale):
    """CT display window: ``"lung"`` (W1500/L-600), ``"mediastinal"`` (W350/L40) or ``(width, level)`` in HU."""

    def __init__(self, window: str | tuple[float, float] = "lung"):
        if isinstance(window, str):
            if window not in WINDOW_PRESETS:
                raise ValueError(f"unknown CT window {window!r}: use {sorted(WINDOW_PRESETS)} or (width, level)")
            window = WINDOW_PRESETS[window]
        width, level = (float(v) for v in window)
        super().__init__(low=level - width / 2.0, width=width)
        self.window = (width, level)


class SUVScale(ClipScale):
    """PET SUV onto [0, 1] with SUV ``suv_max`` (default 15) as the ceiling; refuses non-SUV input."""

    def __init__(self, suv_max: float = DEFAULT_SUV_MAX):
        super().__init__(low=0.0, width=suv_max)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        units = img.meta.get("Units") if isinstance(img, MetaTensor) else None
        if units and not (is_suv_units(units) or units == RELATIVE_UNITS):
            raise InputError(f"{img.meta.get('filename_or_obj', 'PET volume')}: PET is in {units}, not SUV "
                             "(apply PETToSUV first)")
        return super().__call__(img)


class _ScaleToKeyd(MapTransform):
    """Apply an array transform to ``keys``, writing in place or under ``output_key``."""

    def __init__(self, keys: KeysCollection, transform: ClipScale, output_key: str | None,
                 allow_missing_keys: bool):
        super().__init__(keys, allow_missing_keys)
        if output_key is not None and len(self.keys) != 1:
            raise ValueError("output_key needs exactly one input key")
        self.transform = transform
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key or key] = self.transform(d[key])
        return d


class CTWindowd(_ScaleToKeyd):
    """Dictionary twin of :class:`CTWindow`, e.g. ``CTWindowd("ct", "lung", output_key="ct_lung")``."""

    def __init__(self, keys: KeysCollection = "ct", window: str | tuple[float, float] = "lung",
                 output_key: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, CTWindow(window), output_key, allow_missing_keys)


class SUVScaled(_ScaleToKeyd):
    """Dictionary twin of :class:`SUVScale`."""

    def __init__(self, keys: KeysCollection = "pet", suv_max: float = DEFAULT_SUV_MAX,
                 output_key: str | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, SUVScale(suv_max), output_key, allow_missing_keys)
