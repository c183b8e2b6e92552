"""DICOM series loading: ordering, rescale, geometry (matching MONAI's reader), meta and spacing checks."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage
from pydicom.pixels import apply_rescale

from pipeline.io.dicom import load_series
from pipeline.errors import InputError
from pipeline.io.discovery import discover_studies


def test_ct_values_and_order(dicom_factory):
    values = dicom_factory.ramp(base=-500.0)
    volume = load_series(dicom_factory.series("ct", values, modality="CT"))
    assert volume.shape == (1, 6, 5, 4) and volume.dtype == torch.int16  # whole HU, as scanners store them
    np.testing.assert_array_equal(volume[0].numpy(), values)


def _stored_as(stored: np.ndarray, slopes: list[float], intercept: float):
    """A series ``header`` hook: slice k stores ``stored[:, :, k]`` (X, Y) with ``slopes[k]`` and ``intercept``."""
    def header(ds, k):
        ds.RescaleSlope, ds.RescaleIntercept = f"{slopes[k]:g}", f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T, dtype=np.int16).tobytes()
    return header


def _float32_volume(folder) -> np.ndarray:
    """What a float32 volume of the series holds: each slice rescaled by pydicom, in float32, as (X, Y, Z)."""
    slices = sorted(map(pydicom.dcmread, folder.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([apply_rescale(ds.pixel_array, ds).astype(np.float32).T for ds in slices], axis=-1)


# 20 slices: two blocks of the loader, so a fractional slice in the second turns int16 slices already read into float32.
STORED = np.random.default_rng(0).integers(0, 3000, size=(6, 5, 20)) * 2  # even: whole numbers at slope 0.5 too


@pytest.mark.parametrize(("modality", "slopes", "dtype"), [
    ("CT", [1.0] * 20, torch.int16),  # as scanners store CT
    ("CT", [0.5] * 20, torch.int16),  # a fractional slope whose products are whole
    ("CT", [1.0] * 18 + [0.3, 1.0], torch.float32),  # one slice of fractional HU, in the second block
    ("CT", [12.0] * 20, torch.float32),  # whole HU beyond int16's range
    ("PT", [1.0] * 20, torch.float32),  # PET stays float32, whole or not
], ids=["whole", "whole-products", "one-fractional-slice", "beyond-int16", "pet"])
def test_the_loader_holds_whole_hu_as_int16_and_the_float32_values_to_the_bit(dicom_factory, modality, slopes, dtype):
    folder = dicom_factory.series("series", np.zeros(STORED.shape), modality=modality,
                                  header=_stored_as(STORED, slopes, -1024.0 if modality == "CT" else 0.0))
    volume = load_series(folder)
    assert volume.dtype == dtype
    held = volume[0].numpy().astype(np.float32)  # as the CT windows read it
    np.testing.assert_array_equal(held.view(np.int32), _float32_volume(folder).view(np.int32))


def test_pet_per_slice_slope(dicom_factory):
    values = dicom_factory.ramp(base=1000.0) * np.array([1.0, 3.0, 0.5, 7.0])  # a different slope per slice
    files = sorted(dicom_factory.series("pet", values, modality="PT").iterdir())
    volume = load_series(files)
    np.testing.assert_allclose(volume[0].numpy(), values, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_affine_and_data_match_monai_reader(dicom_factory):
    def in_order(ds, k):  # PydicomReader sorts by InstanceNumber, so give it a consistent one
        ds.InstanceNumber = k + 1

    folder = dicom_factory.series("ct", modality="CT", origin=(12.0, -7.5, 40.0), spacing=(0.8, 1.1, 2.5),
                                  header=in_order)
    ours = load_series(folder)
    monai = LoadImage(reader="PydicomReader", ensure_channel_first=True, image_only=True)(folder)
    np.testing.assert_allclose(ours.affine.numpy(), monai.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.numpy(), monai.numpy())


def test_affine_places_voxels_in_ras(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT", origin=(12.0, -7.5, 40.0), spacing=(0.8, 1.1, 2.5))
    affine = load_series(folder).affine.numpy()
    # voxel (i, j, k) lies at LPS origin + (0.8 i, 1.1 j, 2.5 k); RAS negates x and y
    expected_lps = np.array([12.0 + 0.8 * 5, -7.5 + 1.1 * 4, 40.0 + 2.5 * 3])
    world = affine @ np.array([5, 4, 3, 1.0])
    np.testing.assert_allclose(world[:3], expected_lps * [-1, -1, 1], atol=1e-4)


def test_orders_by_normal_for_coronal_slices(dicom_factory):
    values = dicom_factory.ramp()
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # rows run feet-ward, normal points anterior->posterior (+y LPS)
    folder = dicom_factory.series("cor", values, modality="CT", orientation=coronal, positions=[0, 3, 6, 9])
    volume = load_series(folder)
    np.testing.assert_array_equal(volume[0].numpy(), values)
    np.testing.assert_allclose(volume.affine.numpy()[:3, 2], [0.0, -3.0, 0.0], atol=1e-6)  # +y LPS = -y RAS
    np.testing.assert_allclose(volume.affine.numpy()[:3, 1], [0.0, 0.0, -1.5], atol=1e-6)


def test_meta_has_suv_fields_and_no_identifiers(dicom_factory):
    dicom_factory.series("ct", modality="CT")
    dicom_factory.series("pet", modality="PT")
    (pair,) = discover_studies(dicom_factory.root).pairs
    pet = load_series(pair.pet)
    meta = pet.meta
    assert meta["modality"] == "PT" and meta["Units"] == "BQML" and meta["DecayCorrection"] == "START"
    assert meta["PatientWeight"] == dicom_factory.pet_weight_kg
    assert meta["RadionuclideTotalDose"] == dicom_factory.pet_dose_bq
    assert (meta["RadionuclideHalfLife"], meta["RadiopharmaceuticalStartTime"]) == (6586.2, "090000")
    assert (meta["SeriesTime"], meta["AcquisitionTime"]) == ("100000", "100000")
    assert meta["FrameOfReferenceUID"] == dicom_factory.frame_uid
    assert meta["filename_or_obj"] == str(dicom_factory.root / "pet")
    flat = repr(dict(meta))
    for identifier in dicom_factory.identifiers:
        assert identifier not in flat


def test_earliest_acquisition_time(dicom_factory):
    def stagger(ds, k):
        ds.AcquisitionTime = f"10{3 - k:02d}00"

    meta = load_series(dicom_factory.series("pet", modality="PT", header=stagger)).meta
    assert meta["AcquisitionTime"] == "100000"


def test_per_slice_pet_timing_and_philips_factors_in_slice_order(dicom_factory):
    def per_slice(ds, k):
        ds.AcquisitionTime, ds.FrameReferenceTime, ds.ActualFrameDuration = f"10{k:02d}00", 1000.0 * k, 60000
        ds.add_new(0x70531000, "DS", f"{0.5 + k}")
        ds.add_new(0x0009100D, "DT", "20240105095000")

    meta = load_series(dicom_factory.series("pet", modality="PT", header=per_slice)).meta
    assert [s["AcquisitionTime"] for s in meta["pet_slices"]] == ["100000", "100100", "100200", "100300"]
    assert [s["FrameReferenceTime"] for s in meta["pet_slices"]] == [0.0, 1000.0, 2000.0, 3000.0]
    assert [s["PhilipsSUVScale"] for s in meta["pet_slices"]] == [0.5, 1.5, 2.5, 3.5]
    assert {s["ActualFrameDuration"] for s in meta["pet_slices"]} == {60000.0}
    assert meta["GEDecayDateTime"] == "20240105095000"


def test_a_private_decay_datetime_read_as_un_is_text(dicom_factory):
    """An export without the private creator leaves pydicom no VR for GE's tag: its bytes are still the datetime."""
    def per_slice(ds, k):
        ds.add_new(0x0009100D, "UN", b"20240105095000 ")

    meta = load_series(dicom_factory.series("pet", modality="PT", header=per_slice)).meta
    assert meta["GEDecayDateTime"] == "20240105095000"


def test_regular_spacing_report(dicom_factory):
    report = load_series(dicom_factory.series("ct", modality="CT")).meta["spacing_report"]
    assert report == {"n_slices": 4, "step_mm": pytest.approx(3.0), "min_step_mm": pytest.approx(3.0),
                      "max_step_mm": pytest.approx(3.0), "uneven": False}


def test_gap_fails_naming_the_slices_around_it(dicom_factory):
    folder = dicom_factory.series("ct", dicom_factory.ramp((6, 5, 5)), modality="CT", positions=[0, 3, 6, 12, 15])
    with pytest.raises(InputError, match=r"z002.dcm: 6.00 mm from the previous slice .*z003.dcm.* missing slices"):
        load_series(folder)


def test_uneven_without_gap(dicom_factory, caplog):
    folder = dicom_factory.series("ct", modality="CT", positions=[0, 3, 6.4, 9])
    with caplog.at_level(logging.WARNING, logger="pipeline.io.dicom"):
        report = load_series(folder).meta["spacing_report"]
    assert report["uneven"] and report["step_mm"] == pytest.approx(3.0)
    assert "uneven slice spacing" in caplog.text


def test_steps_that_put_a_slice_half_a_step_off_the_even_grid_are_refused_naming_it(dicom_factory):
    """Steps of 3 mm then 4 mm (each under 1.5 x the median): the even grid would place slices up to 11.7 mm off
    in a real series, and the PET with them."""
    positions = [0, 3, 6, 9, 12, 16, 20, 24, 28]  # mean step 3.5: the fifth slice (z005) at 12 belongs at 14
    folder = dicom_factory.series("ct", dicom_factory.ramp((6, 5, 9)), modality="CT", positions=positions)
    with pytest.raises(InputError, match=r"z005.dcm: 2.00 mm from its place on the series' even 3.50 mm grid "
                                         r"\(steps 3.00-4.00 mm\): resample the series to even spacing first"):
        load_series(folder)


def test_single_file_is_a_one_slice_series(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT")
    volume = load_series(folder / "z001.dcm")
    assert volume.shape == (1, 6, 5, 1)
    assert volume.affine[2, 2] == pytest.approx(3.0)  # SliceThickness stands in for the step


def test_configs_load_series_through_load_imaged(dicom_factory):
    """``LoadImaged(reader=DicomSeriesReader())`` gives load_series's volume, meta and order: a config's way in."""
    from monai.transforms import LoadImaged

    from pipeline.io.dicom import DicomSeriesReader
    from pipeline.transforms import PETToSUVd

    values = dicom_factory.ramp(base=1000.0) * np.array([1.0, 3.0, 0.5, 7.0])
    folder = dicom_factory.series("pet", values, modality="PT", positions=[9, 0, 6, 3])  # files out of order
    loaded = LoadImaged("pet", reader=DicomSeriesReader(), ensure_channel_first=True, image_only=True)({"pet": folder})
    direct = load_series(folder)
    assert loaded["pet"].shape == direct.shape
    torch.testing.assert_close(loaded["pet"].as_tensor(), direct.as_tensor())
    torch.testing.assert_close(loaded["pet"].affine, direct.affine)
    flat = repr(dict(loaded["pet"].meta))
    assert not any(identifier in flat for identifier in dicom_factory.identifiers)
    torch.testing.assert_close(PETToSUVd("pet")(loaded)["pet"].as_tensor(), PETToSUVd("pet")({"pet": direct})["pet"].as_tensor())


def test_the_reader_takes_folders_and_dicom_files_only(dicom_factory):
    from pipeline.io.dicom import DicomSeriesReader

    folder = dicom_factory.series("ct", modality="CT")
    reader = DicomSeriesReader()
    assert reader.verify_suffix(folder) and reader.verify_suffix(sorted(folder.iterdir()))
    assert not reader.verify_suffix("study.nii.gz")


def test_the_loader_names_an_enhanced_image_multi_frame_before_its_missing_geometry(dicom_factory):
    folder = dicom_factory.series("ct", modality="CT")
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    ds.NumberOfFrames = 4
    del ds.ImagePositionPatient, ds.PixelSpacing  # an Enhanced image keeps them per frame
    ds.save_as(folder / "enhanced.dcm")
    with pytest.raises(InputError) as info:
        load_series(folder / "enhanced.dcm")
    assert str(info.value) == f"{folder / 'enhanced.dcm'}: multi-frame (Enhanced) images are not supported " \
                              "(NumberOfFrames 4)"


def test_a_jpeg_lossless_series_loads_as_its_uncompressed_twin(dicom_factory):
    """JPEG Lossless SV1, the usual syntax of PACS exports, decodes with the product's own dependencies."""
    values = dicom_factory.ramp(base=-500.0)
    plain = load_series(dicom_factory.series("plain", values, modality="CT"))
    compressed = load_series(dicom_factory.series("jpeg", values, modality="CT", header=dicom_factory.jpeg_lossless))
    np.testing.assert_array_equal(compressed.numpy(), plain.numpy())


def test_a_series_no_installed_decoder_reads_names_its_syntax_and_what_to_install(dicom_factory,
                                                                                 no_jpeg_lossless_decoder):
    folder = dicom_factory.series("jpeg", modality="CT", header=dicom_factory.jpeg_lossless)
    first = sorted(folder.iterdir())[0]
    with pytest.raises(InputError) as info:
        load_series(first)
    assert str(info.value) == (
        f"{first}: no decoder is installed for transfer syntax JPEG Lossless, Non-Hierarchical, First-Order "
        "Prediction (Process 14 [Selection Value 1]) (1.2.840.10008.1.2.4.70): install gdcm>=3.0.10, or "
        "pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1")
