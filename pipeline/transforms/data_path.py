"""The whole data path of one study as MONAI ``Compose`` objects: every front door uses these.

The bundle's inference and evaluation, the CLI, the batch job and the deploy app all build their
network input here, so the same study gives the same fused output whichever door it came in by.
It comes in two halves: :func:`study_loading` (the volumes, in SUV, with their slice flags) and
:func:`network_input` (the PET onto the CT grid, windows, PET scaling). The bundle runs both on the
whole volume (:func:`study_preprocessing`); :func:`pipeline.fusion.streaming.fuse_study` runs the
second axial slab by slab, so a whole-body study costs one CT and the PET on its own grid.
Output keys: ``ct`` (HU), ``pet`` (SUV on the CT grid), ``pet_scaled`` (SUV / ceiling in [0, 1]),
``ct_<window>`` (each window in [0, 1]), ``image``: the network input, one channel per CT window
followed by the scaled PET, ``(len(windows) + 1, X, Y, Z)`` on the CT's geometry, and
``pet_slices``: a bool ``(Z,)`` flag per axial CT slice the PET covers, and ``body_slices``: the same per
slice inside the body and covered by the PET (what is scored and shown); the whole-volume path adds ``label``
where the datalist knows the tumour.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.data import MetaTensor
from monai.transforms import Compose, ConcatItemsd

from pipeline.transforms.lesion import KnownLesiond
from pipeline.transforms.loading import LoadStudyd
from pipeline.transforms.resample import PETCoveraged, ResampleToReferenced
from pipeline.transforms.slicing import BodySlicesd
from pipeline.transforms.suv import PETToSUVd
from pipeline.transforms.windowing import DEFAULT_SUV_MAX, CTWindowd, SUVScaled, check_windows

DEFAULT_WINDOWS = ("lung", "mediastinal")


class StackItemsd(ConcatItemsd):
    """MONAI's ``ConcatItemsd`` whose inputs then become views of their channels in the stack.

    The windowed CTs and the scaled PET are otherwise kept twice (alone and in ``image``): at
    512 x 512 x 300 that is 0.3 GiB a copy.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = super().__call__(data)
        start = 0
        for key in self.key_iterator(d):
            alone, channels = d[key], d[key].shape[self.dim]
            d[key] = d[self.name].narrow(self.dim, start, channels)
            if isinstance(alone, MetaTensor):
                d[key].meta = alone.meta  # the view keeps its own item's meta (the stack has the first's)
            start += channels
        return d


def window_key(window: str) -> str:
    """Data key of the CT in ``window``."""
    return f"ct_{window}"


def study_loading(
    weight_kg: float | None = None,
    dose_bq: float | None = None,
    units: str | None = None,
    pet_factor: float | None = None,
    keep_headers: bool = False,
) -> Compose:
    """Load, SUV, coverage and body-slice flags: ``ct``, ``pet`` (SUV, on its own grid), ``pet_slices``, ``body_slices``.

    ``weight_kg`` / ``dose_bq`` override the PET header when it lacks or misstates them; ``units``
    (e.g. BQML) states the PET's units where no header does (NIfTI input); ``pet_factor`` (pixels x
    factor = SUVbw) replaces the units altogether, e.g. for PET in counts (else scaled relatively).
    ``keep_headers`` adds ``ct_headers`` and ``pet_headers`` (see :class:`~pipeline.transforms.LoadStudyd`).
    """
    return Compose(
        [
            LoadStudyd(keys=("ct", "pet"), keep_headers=keep_headers),
            PETToSUVd(keys="pet", weight_kg=weight_kg, dose_bq=dose_bq, units=units, factor=pet_factor),
            PETCoveraged(keys="pet", ref_key="ct", output_key="pet_slices"),
            BodySlicesd(keys="ct", output_key="body_slices", within_key="pet_slices"),
        ]
    )


def network_input(windows: Sequence[str] = DEFAULT_WINDOWS, suv_max: float = DEFAULT_SUV_MAX,
                  resample_mode: str = "linear") -> Compose:
    """PET onto the CT grid, CT windows, PET scaling, ``image``: for a whole CT or an axial slab of one.

    The CT's affine says where its voxels are, so a slab (:func:`pipeline.transforms.slicing.axial_slab`)
    gets the PET resampled onto just its slices.
    """
    windows = check_windows(windows)
    return Compose(
        [
            ResampleToReferenced(keys="pet", ref_key="ct", mode=resample_mode),
            SUVScaled(keys="pet", suv_max=suv_max, output_key="pet_scaled"),
            *(CTWindowd(keys="ct", window=window, output_key=window_key(window)) for window in windows),
            StackItemsd(keys=[*map(window_key, windows), "pet_scaled"], name="image", dim=0),
        ]
    )


def study_preprocessing(
    windows: Sequence[str] = DEFAULT_WINDOWS,
    suv_max: float = DEFAULT_SUV_MAX,
    weight_kg: float | None = None,
    dose_bq: float | None = None,
    resample_mode: str = "linear",
    units: str | None = None,
    pet_factor: float | None = None,
) -> Compose:
    """:func:`study_loading` then :func:`network_input` on the whole volume (arguments as theirs), and the tumour the
    study's datalist knows as ``label`` (:class:`~pipeline.transforms.lesion.KnownLesiond`), where it names one."""
    head = network_input(windows, suv_max, resample_mode)  # checks the windows before anything is read
    return Compose([*study_loading(weight_kg, dose_bq, units, pet_factor).transforms, *head.transforms, KnownLesiond()])
