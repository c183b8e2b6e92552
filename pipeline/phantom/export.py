"""``make_phantom``: one synthetic thorax PET/CT study on disk, with the truth needed to test against it.

Layout under ``out_dir``::

    dicom/CT/ct_0000.dcm ...     CT series (HU)
    dicom/PET/pet_0000.dcm ...   PET series (Bq/ml, decay-corrected to series start)
    nifti/ct.nii.gz, pet.nii.gz  the same images in NIfTI (RAS affine)
    nifti/labels.nii.gz          the tissue labels on the CT grid (see ``tissues.Tissue``)
    truth.json                   designed values: tumour, SUVs, dose and timing, grids

truth.json is written last, so its presence means the study is complete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write, output_folder
from pipeline.io.patient_space import LPS_TO_RAS
from pipeline.phantom.ct_image import NOISE_STD_HU, simulate_ct
from pipeline.phantom.dicom_writer import (
    SeriesHeader,
    StudyHeader,
    bed_positions,
    write_ct_series,
    write_pet_series,
)
from pipeline.phantom.grid import Grid
from pipeline.phantom.injection import Injection
from pipeline.phantom.nifti_writer import save_grid_nifti
from pipeline.phantom.pet_image import PSF_FWHM_MM, PetImage, simulate_pet
from pipeline.phantom.rescale import StoredVolume
from pipeline.phantom.thorax import Thorax, Tumour, build_thorax, place_tumour
from pipeline.phantom.tissues import HU, suv_table

#: Fixed clock of the synthetic study, so that files are byte-identical between runs.
INJECTED_AT = datetime(2024, 1, 15, 9, 0, 0)
#: The CT is acquired this long before the PET series starts.
CT_LEAD_S = 120.0
#: Axial field of view of one PET bed position and the overlap of consecutive beds (mm).
PET_BED_MM = 150.0
PET_BED_OVERLAP_MM = 40.0
#: Smallest PET in-plane matrix (a common clinical reconstruction size).
PET_MATRIX = 128
#: Default tumour radius (mm) and the relative jitter the seed applies to it.
TUMOUR_RADIUS_MM = 12.0
TUMOUR_RADIUS_JITTER = 0.15


@dataclass(frozen=True)
class PhantomStudy:
    """Where a phantom study was written; NIfTI paths are None when NIfTI was not requested."""

    root: Path
    ct_dir: Path
    pet_dir: Path
    ct_nifti: Path | None
    pet_nifti: Path | None
    labels_nifti: Path | None
    truth_json: Path


def make_phantom(
    out_dir: str | Path,
    *,
    ct_shape: Sequence[int] = (256, 256, 64),
    ct_spacing: Sequence[float] = (1.5, 1.5, 3.0),
    pet_shape: Sequence[int] | None = None,
    pet_spacing: Sequence[float] = (4.0, 4.0, 4.0),
    seed: int = 0,
    tumour_centre_lps: Sequence[float] | None = None,
    tumour_radius_mm: float | None = None,
    tumour_suv: float = 10.0,
    noise: float = 1.0,
    patient_weight_kg: float = 75.0,
    injected_dose_bq: float = 3.7e8,
    uptake_delay_s: float = 3600.0,
    write_nifti: bool = True,
    progress: bool = False,
    bed_mm: float = PET_BED_MM,
) -> PhantomStudy:
    """Write a synthetic thorax FDG-PET/CT study (DICOM, optional NIfTI, truth.json) under ``out_dir``.

    Shapes are (x, y, z) = (columns, rows, slices); spacings in mm. The CT is centred on the
    patient-coordinate origin; the PET, by default at least 128x128 in-plane, covers the CT's
    extent with slices staggered against the CT's. The seed varies the anatomy, the tumour
    (a random lung, a radius of 12 mm +-15%) and the noise; ``tumour_centre_lps`` (mm) and
    ``tumour_radius_mm`` pin the tumour. ``noise`` scales the CT and PET noise (0: noise-free). The PET
    is one series merged from bed positions ``bed_mm`` long overlapping by ``PET_BED_OVERLAP_MM``, head
    first, each slice with its bed's acquisition time and its own RescaleSlope, as whole-body scans are.
    """
    root = Path(out_dir)
    ct_grid = Grid.centred(_shape(root, "ct_shape", ct_shape), _spacing(root, "ct_spacing", ct_spacing), (0, 0, 0))
    pet_grid = _pet_grid(ct_grid, None if pet_shape is None else _shape(root, "pet_shape", pet_shape),
                         _spacing(root, "pet_spacing", pet_spacing))
    _require(isinstance(seed, (int, np.integer)) and seed >= 0, root, f"seed must be an integer >= 0, got {seed}")
    for name, value in (("tumour_suv", tumour_suv), ("patient_weight_kg", patient_weight_kg),
                        ("injected_dose_bq", injected_dose_bq)):
        _require(value > 0, root, f"{name} must be positive, got {value}")
    _require(noise >= 0 and uptake_delay_s >= 0, root, "noise and uptake_delay_s must not be negative")
    _require(bed_mm > 0, root, f"bed_mm must be positive, got {bed_mm}")
    _require(tumour_radius_mm is None or tumour_radius_mm > 0, root, "tumour_radius_mm must be positive")

    anatomy_rng, ct_rng, pet_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    thorax = build_thorax(anatomy_rng)
    tumour = _tumour(root, thorax, anatomy_rng, tumour_centre_lps, tumour_radius_mm, ct_grid, pet_grid)
    anatomy = thorax.anatomy.plus(tumour.structure())
    injection = Injection(injected_dose_bq, patient_weight_kg, INJECTED_AT, uptake_delay_s)
    ct_start = injection.scan_start - timedelta(seconds=CT_LEAD_S)
    study = StudyHeader(
        uid_seed=repr(("dcif-phantom", seed, ct_grid, pet_grid, tumour, tumour_suv, noise,
                       patient_weight_kg, injected_dose_bq, uptake_delay_s)),
        patient_id=f"PHANTOM-{seed}",
        patient_weight_kg=patient_weight_kg,
        study_start=ct_start,
    )
    nifti = root / "nifti"
    paths = PhantomStudy(
        root=root,
        ct_dir=root / "dicom" / "CT",
        pet_dir=root / "dicom" / "PET",
        ct_nifti=nifti / "ct.nii.gz" if write_nifti else None,
        pet_nifti=nifti / "pet.nii.gz" if write_nifti else None,
        labels_nifti=nifti / "labels.nii.gz" if write_nifti else None,
        truth_json=root / "truth.json",
    )
    # A truth file left by an earlier run must not vouch for a study this run fails to finish.
    output_folder(root)
    paths.truth_json.unlink(missing_ok=True)

    with tqdm(total=ct_grid.shape[2] + pet_grid.shape[2], desc="phantom", unit="slice", disable=not progress) as bar:
        labels = anatomy.labels(ct_grid)
        ct = simulate_ct(labels, ct_grid, ct_rng, noise)
        ct_series = SeriesHeader("ct", 2, "CT thorax (synthetic phantom)", ct_start, (40.0, 400.0))
        write_ct_series(paths.ct_dir, ct, ct_grid, study, ct_series, bar.update)
        if write_nifti:
            save_grid_nifti(paths.ct_nifti, ct, ct_grid)
            save_grid_nifti(paths.labels_nifti, labels, ct_grid)
        del labels, ct  # the CT's full-size arrays are not needed while the PET is made

        pet = simulate_pet(anatomy, pet_grid, suv_table(tumour_suv), tumour, pet_rng, noise)
        activity = StoredVolume.with_slope_per_slice(pet.suv * injection.bqml_per_suv)
        suv_0_to_6 = (3.0 * injection.bqml_per_suv, 6.0 * injection.bqml_per_suv)
        pet_series = SeriesHeader("pet", 3, "PET FDG AC (synthetic phantom)", injection.scan_start, suv_0_to_6)
        beds = bed_positions(pet_grid.axis(2), bed_mm, min(PET_BED_OVERLAP_MM, bed_mm / 2))
        write_pet_series(paths.pet_dir, activity, pet_grid, study, pet_series, injection, bar.update, beds)
        if write_nifti:
            save_grid_nifti(paths.pet_nifti, activity, pet_grid)

    truth = _truth(seed, tumour, tumour_suv, pet, injection, ct_start, noise, ct_grid, pet_grid, paths)
    with atomic_write(paths.truth_json) as temporary:
        temporary.write_text(json.dumps(truth, indent=2) + "\n")
    return paths


def _require(condition: bool, root: Path, problem: str) -> None:
    if not condition:
        raise InputError(f"phantom {root}: {problem}")


def _shape(root: Path, name: str, value: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(value)
    _require(len(shape) == 3 and all(isinstance(n, (int, np.integer)) and 0 < n <= 65535 for n in shape), root,
             f"{name} must be 3 integers between 1 and 65535, got {shape}")
    return tuple(int(n) for n in shape)


def _spacing(root: Path, name: str, value: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(value)
    _require(len(spacing) == 3 and all(math.isfinite(s) and s > 0 for s in spacing), root,
             f"{name} must be 3 positive millimetre values, got {spacing}")
    return tuple(float(s) for s in spacing)


def _pet_grid(ct: Grid, shape: tuple[int, int, int] | None, spacing: tuple[float, float, float]) -> Grid:
    """The PET grid: centred on the CT in-plane, covering its extent, slices placed between the CT's."""
    if shape is None:
        extent = [n * s for n, s in zip(ct.shape, ct.spacing)]
        in_plane = [max(PET_MATRIX, math.ceil(e / s)) for e, s in zip(extent[:2], spacing[:2])]
        shape = (*in_plane, math.ceil(extent[2] / spacing[2]))
    centre = (np.asarray(ct.extent[0]) + np.asarray(ct.extent[1])) / 2
    centred = Grid.centred(shape, spacing, tuple(centre))
    ct_z = ct.axis(2)
    # Shift by the fraction of a PET slice that keeps PET slice centres farthest from any CT one.
    shifts = spacing[2] * np.arange(16) / 16
    clearance = [np.abs((centred.axis(2) + shift)[:, None] - ct_z[None, :]).min() for shift in shifts]
    shift = float(shifts[int(np.argmax(clearance))])
    return Grid(centred.shape, centred.spacing, (*centred.origin[:2], centred.origin[2] + shift))


def _tumour(
    root: Path, thorax: Thorax, rng: np.random.Generator, centre: Sequence[float] | None, radius: float | None,
    ct: Grid, pet: Grid,
) -> Tumour:
    """The pinned tumour, or one drawn inside a lung within both fields of view."""
    if radius is None:
        radius = TUMOUR_RADIUS_MM * rng.uniform(1 - TUMOUR_RADIUS_JITTER, 1 + TUMOUR_RADIUS_JITTER)
    low = np.maximum(ct.extent[0], pet.extent[0])
    high = np.minimum(ct.extent[1], pet.extent[1])
    if centre is not None:
        point = np.asarray(centre, dtype=float)
        _require(point.shape == (3,) and bool(np.all((point >= low) & (point <= high))), root,
                 f"tumour centre {tuple(centre)} mm is not inside both the CT and the PET field of view")
        lung = next((side for side, shape in thorax.lungs.items() if shape.contains(*point)), "none")
        return Tumour(tuple(float(c) for c in point), float(radius), lung)
    tumour = place_tumour(thorax, rng, radius, (low, high))
    _require(tumour is not None, root,
             f"no lung region in the field of view fits a {radius:.1f} mm tumour; enlarge the CT size or spacing")
    return tumour


def _truth(
    seed: int, tumour: Tumour, tumour_suv: float, pet_image: PetImage, injection: Injection, ct_start: datetime,
    noise: float, ct: Grid, pet: Grid, paths: PhantomStudy,
) -> dict:
    """Everything a test needs to check a reader against the design, in JSON types."""
    centre_lps = np.asarray(tumour.centre)
    return {
        "synthetic": True,
        "note": "Synthetic thorax PET/CT phantom made by pipeline.phantom; no patient data.",
        "seed": seed,
        "coordinates": "LPS: x to patient left, y to posterior, z to head (DICOM); RAS negates x and y (NIfTI)",
        "tumour": {
            "centre_lps_mm": centre_lps.tolist(),
            "centre_ras_mm": (LPS_TO_RAS[:3, :3] @ centre_lps).tolist(),
            "radius_mm": tumour.radius,
            "lung": tumour.lung,
            "designed_suv": tumour_suv,
            "expected_image_suvmax": pet_image.expected_tumour_suvmax,
            "expected_image_suvmax_voxel_lps_mm": list(pet_image.expected_tumour_suvmax_lps),
        },
        "tissues": {
            tissue.name.lower(): {"label": int(tissue), "hu": HU[tissue], "suv": suv}
            for tissue, suv in suv_table(tumour_suv).items()
        },
        "pet": {
            "units": "BQML",
            "decay_correction": "START",
            "patient_weight_kg": injection.patient_weight_kg,
            "injected_dose_bq": injection.dose_bq,
            "injection_datetime": injection.injected_at.isoformat(),
            "series_datetime": injection.scan_start.isoformat(),
            "uptake_delay_s": injection.uptake_delay_s,
            "half_life_s": injection.half_life_s,
            "decay_factor_at_series_start": injection.decay_factor,
            "bqml_per_suv": injection.bqml_per_suv,
            "psf_fwhm_mm": PSF_FWHM_MM,
        },
        "ct": {"series_datetime": ct_start.isoformat(), "noise_std_hu": NOISE_STD_HU * noise},
        "noise_scale": noise,
        "grids": {"ct": ct.describe(), "pet": pet.describe()},
        "files": {
            name: path.relative_to(paths.root).as_posix()
            for name, path in (("ct_dicom", paths.ct_dir), ("pet_dicom", paths.pet_dir), ("ct_nifti", paths.ct_nifti),
                               ("pet_nifti", paths.pet_nifti), ("labels_nifti", paths.labels_nifti))
            if path is not None
        },
    }
