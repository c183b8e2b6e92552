"""The synthetic thorax PET/CT phantom: readable DICOM, designed values, geometry, determinism."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

from pipeline.errors import InputError
from pipeline.phantom import PhantomStudy, make_phantom

# Small but anatomically complete: a 384 x 384 x 192 mm field of view in coarse voxels.
SMALL = dict(ct_shape=(64, 64, 16), ct_spacing=(6.0, 6.0, 12.0), pet_shape=(48, 48, 24), pet_spacing=(8.0, 8.0, 8.0))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudy:
    return make_phantom(tmp_path_factory.mktemp("seed0"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def truth(study: PhantomStudy) -> dict:
    return json.loads(study.truth_json.read_text())


def read_series(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Physical values (x, y, z) and the datasets of a series, ordered by slice position, read strictly."""
    datasets = sorted((pydicom.dcmread(path) for path in folder.glob("*.dcm")),
                      key=lambda ds: float(ds.ImagePositionPatient[2]))
    slices = [ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets]
    return np.stack(slices, axis=-1), datasets


def lps_to_index(point_lps: np.ndarray, first: pydicom.Dataset, slice_step: float) -> np.ndarray:
    """Continuous voxel index of an LPS point, from the DICOM geometry of the first slice."""
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.array([float(v) for v in first.ImagePositionPatient])
    return (point_lps - origin) / np.array([column_spacing, row_spacing, slice_step])


def test_series_are_part10_files_with_consistent_identity(study: PhantomStudy) -> None:
    ct_files, pet_files = sorted(study.ct_dir.glob("ct_*.dcm")), sorted(study.pet_dir.glob("pet_*.dcm"))
    assert (len(ct_files), len(pet_files)) == (16, 24)
    for path, modality, sop_class in [(ct_files[0], "CT", pydicom.uid.CTImageStorage),
                                      (pet_files[0], "PT", pydicom.uid.PositronEmissionTomographyImageStorage)]:
        assert path.read_bytes()[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.Modality, ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID) == (modality, sop_class, sop_class)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.PatientName, ds.PatientID, ds.Manufacturer) == ("PHANTOM^THORAX", "PHANTOM-0", "DCIF phantom")
        assert ds.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
        assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("MONOCHROME2", 1, 16)
    ct, pet = pydicom.dcmread(ct_files[0]), pydicom.dcmread(pet_files[0])
    assert ct.StudyInstanceUID == pet.StudyInstanceUID
    assert ct.FrameOfReferenceUID == pet.FrameOfReferenceUID
    assert ct.SeriesInstanceUID != pet.SeriesInstanceUID
    all_sop_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in ct_files + pet_files}
    assert len(all_sop_uids) == len(ct_files) + len(pet_files)


def test_simpleitk_reads_series_with_the_designed_geometry(study: PhantomStudy, truth: dict) -> None:
    for folder, grid in [(study.ct_dir, truth["grids"]["ct"]), (study.pet_dir, truth["grids"]["pet"])]:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        assert list(image.GetSize()) == grid["shape"]
        np.testing.assert_allclose(image.GetSpacing(), grid["spacing_mm"])
        np.testing.assert_allclose(image.GetOrigin(), grid["origin_lps_mm"])
        values, _ = read_series(folder)
        # SimpleITK's array is (z, y, x); both readers must decode the same physical values.
        np.testing.assert_allclose(sitk.GetArrayFromImage(image).T, values, rtol=1e-5, atol=1e-3)


def test_ct_shows_each_tissue_at_its_designed_hu(study: PhantomStudy, truth: dict) -> None:
    hu, _ = read_series(study.ct_dir)
    labels = np.asarray(nib.load(study.labels_nifti).dataobj)
    tissues = truth["tissues"]
    for name in ("air", "fat", "soft_tissue", "lung", "liver", "cortical_bone", "blood_pool"):
        inside = labels == tissues[name]["label"]
        assert inside.sum() > 20, name
        assert abs(np.median(hu[inside]) - tissues[name]["hu"]) < 25, name
    soft_core = binary_erosion(labels == tissues["soft_tissue"]["label"], iterations=2)
    assert 10.0 < hu[soft_core].std() < 20.0


def test_pet_headers_carry_everything_body_weight_suv_needs(study: PhantomStudy, truth: dict) -> None:
    _, datasets = read_series(study.pet_dir)
    ds = datasets[0]
    assert (ds.Units, ds.DecayCorrection, ds.RescaleIntercept) == ("BQML", "START", 0)
    assert {"ATTN", "DECY"} <= set(ds.CorrectedImage)
    assert float(ds.PatientWeight) == truth["pet"]["patient_weight_kg"]
    for keyword in ("SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "StudyDate", "StudyTime",
                    "PatientSex", "PatientAge", "SeriesNumber", "InstanceNumber", "SliceThickness",
                    "SpacingBetweenSlices", "WindowCenter", "WindowWidth", "SeriesDescription", "HighBit",
                    "BitsStored", "PixelRepresentation", "Rows", "Columns", "PixelSpacing"):
        assert keyword in ds, keyword
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    assert drug.Radiopharmaceutical == "Fluorodeoxyglucose"
    assert float(drug.RadionuclideHalfLife) == 6586.2
    assert float(drug.RadionuclideTotalDose) == truth["pet"]["injected_dose_bq"]
    assert drug.RadiopharmaceuticalStartDateTime.startswith(ds.SeriesDate + drug.RadiopharmaceuticalStartTime[:6])
    assert len({float(d.RescaleSlope) for d in datasets}) > len(datasets) // 2


def test_pet_slices_fall_between_ct_slices(study: PhantomStudy) -> None:
    _, ct = read_series(study.ct_dir)
    _, pet = read_series(study.pet_dir)
    ct_z = np.array([float(ds.ImagePositionPatient[2]) for ds in ct])
    pet_z = np.array([float(ds.ImagePositionPatient[2]) for ds in pet])
    assert np.abs(pet_z[:, None] - ct_z[None, :]).min() > 1.0
    assert pet_z.min() <= ct_z.min() + 8.0 and pet_z.max() >= ct_z.max() - 8.0


def test_nifti_copies_match_dicom_values_and_geometry(study: PhantomStudy, truth: dict) -> None:
    tumour_lps = np.array(truth["tumour"]["centre_lps_mm"])
    for folder, nifti in [(study.ct_dir, study.ct_nifti), (study.pet_dir, study.pet_nifti)]:
        values, datasets = read_series(folder)
        image = nib.load(nifti)
        np.testing.assert_allclose(image.get_fdata(), values, rtol=1e-5, atol=1e-3)
        first_lps = np.array([float(v) for v in datasets[0].ImagePositionPatient])
        np.testing.assert_allclose(image.affine @ [0, 0, 0, 1], [-first_lps[0], -first_lps[1], first_lps[2], 1])
        step = float(datasets[1].ImagePositionPatient[2]) - first_lps[2]
        tumour_index = lps_to_index(tumour_lps, datasets[0], step)
        np.testing.assert_allclose((image.affine @ [*tumour_index, 1])[:3], truth["tumour"]["centre_ras_mm"])


def test_tumour_suvmax_from_headers_matches_truth(study: PhantomStudy, truth: dict) -> None:
    bqml, datasets = read_series(study.pet_dir)
    ds, drug = datasets[0], datasets[0].RadiopharmaceuticalInformationSequence[0]
    injected = datetime.strptime(ds.SeriesDate + drug.RadiopharmaceuticalStartTime, "%Y%m%d%H%M%S.%f")
    series_start = datetime.strptime(ds.SeriesDate + ds.SeriesTime, "%Y%m%d%H%M%S.%f")
    decayed_dose = float(drug.RadionuclideTotalDose) * 0.5 ** (
        (series_start - injected).total_seconds() / float(drug.RadionuclideHalfLife))
    suv = bqml * float(ds.PatientWeight) * 1000.0 / decayed_dose

    tumour = truth["tumour"]
    step = float(datasets[1].ImagePositionPatient[2]) - float(ds.ImagePositionPatient[2])
    centre = lps_to_index(np.array(tumour["centre_lps_mm"]), ds, step)
    spacing = np.array(truth["grids"]["pet"]["spacing_mm"])
    grid = np.indices(suv.shape, dtype=float)
    distance = np.sqrt(sum(((grid[d] - centre[d]) * spacing[d]) ** 2 for d in range(3)))
    near_tumour_max = suv[distance <= tumour["radius_mm"] + 8.0].max()

    assert near_tumour_max == pytest.approx(tumour["expected_image_suvmax"], rel=0.05)
    assert 0.5 * tumour["designed_suv"] < tumour["expected_image_suvmax"] <= tumour["designed_suv"]
    assert near_tumour_max == pytest.approx(suv.max(), rel=1e-6)  # nothing else is as hot
    lung = truth["tissues"]["lung"]["suv"]
    assert np.median(suv[(distance > tumour["radius_mm"] + 12.0) & (distance < tumour["radius_mm"] + 20.0)]) < 4 * lung


def test_same_seed_writes_byte_identical_files(study: PhantomStudy, tmp_path: Path) -> None:
    again = make_phantom(tmp_path, seed=0, **SMALL)
    files = sorted(p.relative_to(study.root) for p in study.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert len(files) == 16 + 24 + 4
    for relative in files:
        assert (study.root / relative).read_bytes() == (again.root / relative).read_bytes(), relative


def test_another_seed_gives_another_study(study: PhantomStudy, truth: dict, tmp_path: Path) -> None:
    other = make_phantom(tmp_path, seed=1, write_nifti=False, **SMALL)
    other_truth = json.loads(other.truth_json.read_text())
    shift = np.subtract(other_truth["tumour"]["centre_lps_mm"], truth["tumour"]["centre_lps_mm"])
    assert np.linalg.norm(shift) > 5.0
    assert other.ct_nifti is None and not (tmp_path / "nifti").exists()
    assert _study_uid(other.ct_dir) != _study_uid(study.ct_dir)


def test_pinned_tumour_is_where_asked_and_noise_free_peak_is_exact(tmp_path: Path) -> None:
    stale = tmp_path / "dicom" / "CT" / "ct_0099.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from a longer study")
    centre = (-80.0, 10.0, 20.0)
    pinned = make_phantom(tmp_path, seed=5, tumour_centre_lps=centre, tumour_radius_mm=15.0, noise=0.0, **SMALL)
    tumour = json.loads(pinned.truth_json.read_text())["tumour"]
    assert (tumour["centre_lps_mm"], tumour["radius_mm"], tumour["lung"]) == (list(centre), 15.0, "right")
    assert not stale.exists()
    pet = nib.load(pinned.pet_nifti)
    suv_max = pet.get_fdata().max() / json.loads(pinned.truth_json.read_text())["pet"]["bqml_per_suv"]
    assert suv_max == pytest.approx(tumour["expected_image_suvmax"], rel=1e-3)
    peak_ras = pet.affine @ [*np.unravel_index(np.argmax(pet.get_fdata()), pet.shape), 1]
    assert np.linalg.norm(peak_ras[:3] - [80.0, -10.0, 20.0]) < 8.0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (dict(ct_shape=(64, 64)), "ct_shape"),
        (dict(ct_spacing=(1.0, 0.0, 1.0)), "ct_spacing"),
        (dict(noise=-1.0), "negative"),
        (dict(tumour_centre_lps=(0.0, 0.0, 5000.0)), "field of view"),
        (dict(ct_shape=(16, 16, 4), ct_spacing=(1.0, 1.0, 1.0)), "no lung region"),
    ],
)
def test_bad_options_raise_a_one_line_input_error(tmp_path: Path, options: dict, problem: str) -> None:
    with pytest.raises(InputError) as error:
        make_phantom(tmp_path / "out", **options)
    message = str(error.value)
    assert problem in message and str(tmp_path / "out") in message and "\n" not in message
    assert not (tmp_path / "out" / "truth.json").exists()


@pytest.mark.parametrize(("folder", "reason"), [("file", "not a folder"), ("file/study", "Not a directory")])
def test_an_output_folder_that_cannot_be_one_is_a_one_line_input_error(tmp_path: Path, folder: str,
                                                                        reason: str) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError) as error:
        make_phantom(tmp_path / folder, **SMALL)
    assert str(error.value) == f"{tmp_path / folder}: cannot use as output folder ({reason})"


def _study_uid(folder: Path) -> str:
    return pydicom.dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True).StudyInstanceUID


def test_pet_is_a_merged_multi_bed_series(study: PhantomStudy, truth: dict) -> None:
    """Several bed positions in one series: per-slice acquisition times and slopes; SUV still the design's."""
    from pipeline.io.dicom import load_series
    from pipeline.phantom.dicom_writer import bed_positions
    from pipeline.phantom.export import PET_BED_MM, PET_BED_OVERLAP_MM
    from pipeline.transforms.suv import PETToSUV

    bqml, datasets = read_series(study.pet_dir)
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
    beds = bed_positions(z, PET_BED_MM, PET_BED_OVERLAP_MM)
    times = [ds.AcquisitionTime for ds in datasets]
    assert len(set(times)) == len(set(beds.tolist())) >= 2
    assert min(times) == datasets[0].SeriesTime and len({ds.RescaleSlope for ds in datasets}) > 1
    top_bed = z > z.max() - (PET_BED_MM - PET_BED_OVERLAP_MM)  # the first bed, acquired at the series start
    assert {ds.AcquisitionTime for ds, first in zip(datasets, top_bed) if first} == {datasets[0].SeriesTime}
    suv = PETToSUV()(load_series(study.pet_dir))
    assert suv.meta["suv_factor"] == pytest.approx(1.0 / truth["pet"]["bqml_per_suv"], rel=1e-6)
