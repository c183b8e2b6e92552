"""Discovery: grouping, pair choice, failures and problems on small synthetic trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from pipeline.errors import InputError
from pipeline.io.discovery import OUTPUT_MARK, NiftiPair, discover_studies, find_nifti_pair, missing_decoder
from pipeline.io.headers import read_dicom, study_key


def _pet_ct_study(factory, folder: str = "study", study_uid: str | None = None, frame_uid: str | None = None) -> None:
    study_uid = study_uid or factory.study_uid
    factory.series(f"{folder}/deep/ct", modality="CT", study_uid=study_uid, frame_uid=frame_uid or factory.frame_uid)
    factory.series(f"{folder}/pet", modality="PT", study_uid=study_uid, frame_uid=frame_uid or factory.frame_uid)


def test_finds_pair_in_messy_tree(dicom_factory):
    _pet_ct_study(dicom_factory)
    root = dicom_factory.root
    (root / "study" / "notes.txt").write_text("not dicom")
    (root / "study" / "empty.dcm").write_bytes(b"")
    dicom_factory.rtstruct("study/rt/RS.dcm")
    dicomdir = Dataset()  # a CD export's index: no Modality, no image
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "EXPORT"
    dicomdir.save_as(root / "DICOMDIR", enforce_file_format=True)

    result = discover_studies(root)

    assert len(result.pairs) == 1 and not result.failures
    pair = result.pairs[0]
    assert (pair.ct.modality, pair.pet.modality) == ("CT", "PT")
    assert pair.ct.folder == root / "study" / "deep" / "ct"
    assert pair.study_key == study_key(dicom_factory.study_uid)
    # files come sorted by position along the normal although their names sort the other way
    assert list(pair.ct.positions) == sorted(pair.ct.positions)
    assert [f.name for f in pair.ct.files] == ["z004.dcm", "z003.dcm", "z002.dcm", "z001.dcm"]
    problems = {p.path.name: p.reason for p in result.problems}
    assert set(problems) == {"notes.txt", "empty.dcm"}  # the RTSTRUCT and the DICOMDIR are ignored quietly
    assert "empty file" in problems["empty.dcm"] and "not a DICOM file" in problems["notes.txt"]


def test_reports_study_without_pet(dicom_factory):
    dicom_factory.series("lonely/ct", modality="CT")
    result = discover_studies(dicom_factory.root)
    assert not result.pairs
    (failure,) = result.failures
    assert failure.location == dicom_factory.root / "lonely" / "ct"
    assert "has CT but no PET" in str(failure) and str(failure.location) in str(failure)


def test_reports_study_without_ct(dicom_factory):
    dicom_factory.series("lonely/pet", modality="PT")
    (failure,) = discover_studies(dicom_factory.root).failures
    assert "has PET but no CT" in failure.reason


def test_reports_different_frames_of_reference(dicom_factory):
    dicom_factory.series("s/ct", modality="CT", frame_uid=generate_uid())
    dicom_factory.series("s/pet", modality="PT", frame_uid=generate_uid())
    result = discover_studies(dicom_factory.root)
    assert not result.pairs
    assert "different FrameOfReferenceUIDs" in result.failures[0].reason


def test_separates_studies(dicom_factory):
    _pet_ct_study(dicom_factory, "a", study_uid=generate_uid(), frame_uid=generate_uid())
    _pet_ct_study(dicom_factory, "b", study_uid=generate_uid(), frame_uid=generate_uid())
    dicom_factory.series("c/ct", modality="CT", study_uid=generate_uid())
    result = discover_studies(dicom_factory.root)
    assert len(result.pairs) == 2 and len(result.failures) == 1
    assert {p.ct.folder.parent.parent.name for p in result.pairs} == {"a", "b"}


def test_a_series_copied_into_another_study_is_a_problem_not_a_duplicate(dicom_factory):
    """A study UID rewritten over copied series and instance UIDs: counted as duplicate copies, that study vanished."""
    _pet_ct_study(dicom_factory, "a", study_uid=generate_uid(), frame_uid=generate_uid())
    shutil.copytree(dicom_factory.root / "a", dicom_factory.root / "b")
    other = generate_uid()
    for path in (dicom_factory.root / "b").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = other
        ds.save_as(path)
    result = discover_studies(dicom_factory.root)
    assert len(result.pairs) == 1 and result.pairs[0].ct.duplicates == result.pairs[0].pet.duplicates == 0
    copied = sorted((dicom_factory.root / "b").rglob("*.dcm"))
    assert sorted(problem.path for problem in result.problems) == copied
    assert all("series UIDs reused across studies, not used" in problem.reason for problem in result.problems)


def test_prefers_attenuation_corrected_pet(dicom_factory):
    dicom_factory.series("s/ct", modality="CT")
    no_attn = lambda ds, k: setattr(ds, "CorrectedImage", ["DECY"])  # noqa: E731
    dicom_factory.series("s/pet_nac", modality="PT", header=no_attn, description="PET NAC")
    dicom_factory.series("s/pet_ac", modality="PT", description="PET AC")
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.pet.folder.name == "pet_ac" and pair.pet.is_attenuation_corrected


def test_description_decides_without_corrected_image(dicom_factory):
    drop = lambda ds, k: delattr(ds, "CorrectedImage")  # noqa: E731
    dicom_factory.series("s/ct", modality="CT")
    dicom_factory.series("s/pet_a", modality="PT", header=drop, description="WB_NAC")
    dicom_factory.series("s/pet_b", modality="PT", header=drop, description="WB 3D MAC")
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.pet.folder.name == "pet_b"


def test_prefers_ct_covering_the_pet(dicom_factory):
    dicom_factory.series("s/pet", modality="PT")  # slices 0..9 mm
    far = dicom_factory.ramp((6, 5, 8))
    dicom_factory.series("s/ct_far", far, modality="CT", positions=[200.0 + 3 * k for k in range(8)])
    dicom_factory.series("s/ct_near", modality="CT")
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.ct.folder.name == "ct_near"  # the far CT has more slices but no overlap


def test_prefers_more_ct_slices_at_equal_coverage(dicom_factory):
    dicom_factory.series("s/pet", modality="PT")
    dicom_factory.series("s/ct_thick", modality="CT")
    dicom_factory.series("s/ct_thin", dicom_factory.ramp((6, 5, 7)), modality="CT", spacing=(2.0, 1.5, 1.5))
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.ct.folder.name == "ct_thin"


def test_no_dicom_raises(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match=r"^no DICOM files found under .*") as info:
        discover_studies(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_folder_raises(tmp_path: Path):
    with pytest.raises(InputError, match="folder not found"):
        discover_studies(tmp_path / "absent")


def test_no_patient_identifiers_in_reprs(dicom_factory):
    _pet_ct_study(dicom_factory)
    dicom_factory.series("other/ct", modality="CT", study_uid=generate_uid())
    result = discover_studies(dicom_factory.root)
    text = " ".join([repr(result), str(result.pairs[0]), *map(str, result.failures)])
    for identifier in dicom_factory.identifiers:
        assert identifier not in text
    assert dicom_factory.study_uid not in repr(result.pairs[0])


def test_study_key_is_short_and_stable():
    key = study_key("1.2.3.4")
    assert key == study_key("1.2.3.4") != study_key("1.2.3.5")
    assert len(key) == 12 and int(key, 16) >= 0


@pytest.mark.parametrize("names", [("ct.nii.gz", "pet.nii.gz"), ("CT_image.nii.gz", "PET_image.nii.gz")])
def test_find_nifti_pair(tmp_path: Path, names):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert find_nifti_pair(tmp_path) == NiftiPair(ct=tmp_path / names[0], pet=tmp_path / names[1])
    assert find_nifti_pair(tmp_path / "nowhere") is None


def test_overlap_is_measured_along_the_normal(dicom_factory):
    dicom_factory.series("s/ct", dicom_factory.ramp((6, 5, 10)), modality="CT", positions=list(np.arange(10) * 2.0))
    dicom_factory.series("s/pet", modality="PT", positions=[5.0, 8.0, 11.0, 14.0])
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.pet.overlap_mm(pair.ct) == pytest.approx(9.0)


def _old_fused_output(factory, ct_folder: Path, name: str, description: str = "DCIF fusion laplacian lung"):
    """A fused series as earlier versions wrote it: Modality CT, derived, referencing every CT slice."""
    from pydicom.dataset import Dataset

    from pipeline.io.derived_series import MANUFACTURER

    ct = {float(read_dicom(p).ImagePositionPatient[2]): read_dicom(p) for p in ct_folder.iterdir()}
    ordered = [ct[z] for z in sorted(ct)]

    def derived(ds, k):
        source = Dataset()
        source.ReferencedSOPInstanceUID = ordered[k].SOPInstanceUID
        series = Dataset()
        series.SeriesInstanceUID = ordered[k].SeriesInstanceUID
        ds.SourceImageSequence, ds.ReferencedSeriesSequence = [source], [series]
        ds.ImageType, ds.Manufacturer = ["DERIVED", "SECONDARY", "AXIAL"], MANUFACTURER

    # more slices than the true CT and a UID sorting first: the old tie-breaks would pick it
    return factory.series(name, factory.ramp((6, 5, 4)), modality="CT", header=derived, description=description,
                          series_uid="1.2.999." + "9" * 40)


def _anonymise(root: Path, strip_signature: bool) -> None:
    """Rewrite every UID consistently (as a de-identifying PACS export does); optionally drop our signature."""
    mapping: dict[str, str] = {}

    def rewrite(ds):
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    rewrite(item)
            elif element.VR == "UI" and element.keyword not in ("SOPClassUID", "ReferencedSOPClassUID"):
                element.value = mapping.setdefault(str(element.value), generate_uid())

    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        rewrite(ds)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if strip_signature and "ImageType" in ds:
            ds.ImageType, ds.Manufacturer, ds.SeriesDescription = ["ORIGINAL", "PRIMARY", "AXIAL"], "", ""
        ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("anonymised", [None, "uids", "uids and signature"])
def test_never_picks_our_own_fused_output_as_the_ct(dicom_factory, anonymised):
    _pet_ct_study(dicom_factory)
    root = dicom_factory.root
    _old_fused_output(dicom_factory, root / "study" / "deep" / "ct", "study/fused")
    if anonymised:
        _anonymise(root, strip_signature=anonymised == "uids and signature")
    result = discover_studies(root)
    (pair,) = result.pairs
    assert pair.ct.folder == root / "study" / "deep" / "ct"
    (ignored,) = result.ignored
    assert ignored.location == root / "study" / "fused"
    expected = {None: "Manufacturer signature", "uids": "Manufacturer signature",
                "uids and signature": "derived from the CT series in"}[anonymised]
    assert expected in ignored.reason


def test_study_with_only_derived_ct_fails_with_reason(dicom_factory):
    mark = lambda ds, k: setattr(ds, "ImageType", ["DERIVED", "SECONDARY"])  # noqa: E731
    dicom_factory.series("s/ct", modality="CT", header=mark)
    dicom_factory.series("s/pet", modality="PT")
    result = discover_studies(dicom_factory.root)
    assert not result.pairs and "only CT series are derived" in result.failures[0].reason
    assert "ImageType DERIVED" in result.ignored[0].reason


def test_prefers_the_attenuation_correction_ct_at_equal_coverage(dicom_factory):
    dicom_factory.series("s/pet", modality="PT")
    dicom_factory.series("s/ct_diagnostic", dicom_factory.ramp((6, 5, 7)), modality="CT", spacing=(2.0, 1.5, 1.5),
                         description="CT venous phase")
    dicom_factory.series("s/ct_ac", modality="CT", description="CTAC 3.75 mm")
    (pair,) = discover_studies(dicom_factory.root).pairs
    assert pair.ct.folder.name == "ct_ac"  # although the diagnostic CT has more slices


def test_inspect_says_which_series_it_ignored_and_why(dicom_factory, capsys):
    from pipeline.cli import main

    _pet_ct_study(dicom_factory)
    _old_fused_output(dicom_factory, dicom_factory.root / "study" / "deep" / "ct", "study/fused")
    assert main(["-q", "inspect", str(dicom_factory.root)]) == 0
    out = capsys.readouterr().out
    assert "1 series ignored" in out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("ignore")]
    assert "CT series ignored: our own fused output" in line


def test_unlistable_folders_and_overlong_paths_are_problems_not_gaps(dicom_factory, monkeypatch):
    import os

    from pipeline.io import discovery

    _pet_ct_study(dicom_factory)
    root = dicom_factory.root
    (root / "locked").mkdir()
    long = root / "study" / f"{'x' * 200}.dcm"
    long.write_bytes(b"")
    scandir = os.scandir

    def refusing(path):  # root reads every folder, so refusal is simulated
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    monkeypatch.setattr(discovery, "_MAX_PATH_BYTES", len(os.fsencode(long)))  # as if over 4096 bytes
    result = discover_studies(root)

    assert len(result.pairs) == 1
    problems = {p.path.name: p.reason for p in result.problems}
    assert "cannot read folder (Permission denied)" in problems["locked"]
    assert "path longer than" in problems[long.name]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(("keyword", "text"), [("ImagePositionPatient", b"abcdefg\\1\\2 "),
                                               ("ImagePositionPatient", b"1\\2"),
                                               ("ImageOrientationPatient", b"1\\0\\0 ")])
def test_a_slice_with_damaged_geometry_is_a_problem_and_its_series_goes_on(dicom_factory, keyword, text):
    """A hostile ImagePositionPatient or ImageOrientationPatient in one file stopped the whole scan with numpy's
    error (and a batch with it, before any report)."""
    _pet_ct_study(dicom_factory)
    damaged = sorted((dicom_factory.root / "study" / "deep" / "ct").iterdir())[1]
    ds = pydicom.dcmread(damaged)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, "DS", len(text), text, 0, True, True)
    ds.save_as(damaged)

    result = discover_studies(dicom_factory.root)

    (problem,) = result.problems
    assert problem.path == damaged and problem.reason.startswith(f"{damaged}: {keyword} ")
    (pair,) = result.pairs
    assert damaged not in pair.ct.files and len(pair.ct.files) == 3


def test_an_enhanced_ct_is_named_multi_frame_and_our_own_multi_frame_output_is_skipped_quietly(dicom_factory):
    """The frame count is checked before the geometry: an Enhanced CT, whose geometry is per frame, was reported as
    a "CT file without slice position/orientation". Our fused series (multi-frame OT) stay quiet."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    from pipeline.io.derived_series import Provenance, write_colour_series, write_fused_series
    from pipeline.io.dicom import read_series

    _pet_ct_study(dicom_factory)
    root = dicom_factory.root
    ct_volume, ct_headers = read_series(root / "study" / "deep" / "ct")
    _, pet_headers = read_series(root / "study" / "pet")
    provenance = Provenance("average", "lung", "baseline", 10.0)
    write_fused_series(ct_volume.clamp(0, 1), ct_headers, pet_headers, root / "out" / "grey", provenance)
    rgb = np.zeros((*ct_volume.shape[:0:-1], 3), np.uint8)
    write_colour_series(rgb, ct_headers, pet_headers, root / "out" / "colour", provenance)
    slices = [pydicom.dcmread(path) for path in sorted((root / "study" / "deep" / "ct").iterdir())]
    enhanced = LegacyConvertedEnhancedCTImage(slices, series_instance_uid=generate_uid(), series_number=5,
                                              sop_instance_uid=generate_uid(), instance_number=1)
    (root / "enhanced").mkdir()
    enhanced.save_as(root / "enhanced" / "ct.dcm")

    result = discover_studies(root)

    (problem,) = result.problems
    assert problem.reason == f"{root / 'enhanced' / 'ct.dcm'}: multi-frame (Enhanced) images are not supported " \
                             "(NumberOfFrames 4)"
    assert len(result.pairs) == 1 and not result.failures and not result.ignored



def test_a_study_whose_ct_no_installed_decoder_reads_fails_at_discovery(dicom_factory, no_jpeg_lossless_decoder):
    """Without a decoder, inspect called the study ready and the batch failed it late with pydicom's long error."""
    dicom_factory.series("study/ct", modality="CT", header=dicom_factory.jpeg_lossless)
    dicom_factory.series("study/pet", modality="PT")

    result = discover_studies(dicom_factory.root)

    (failure,) = result.failures
    assert not result.pairs and failure.location == dicom_factory.root / "study" / "ct"
    assert failure.reason == (
        f"study {study_key(dicom_factory.study_uid)}: CT series: no decoder is installed for transfer syntax JPEG "
        "Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1]) "
        "(1.2.840.10008.1.2.4.70): install gdcm>=3.0.10, or pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1")


def test_a_syntax_pydicom_cannot_decode_at_all_is_named():
    assert missing_decoder("1.2.840.10008.1.2.4.100") == (
        "no decoder exists for transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100): "
        "convert the series to an uncompressed syntax")
    assert missing_decoder("1.2.840.10008.1.2.1") == "" and missing_decoder("1.2.840.10008.1.2.4.70") == ""


def test_symlinked_study_folders_are_followed_once_each(dicom_factory, tmp_path):
    # An export assembled from links to where its studies lie: each study is found, through its link.
    _pet_ct_study(dicom_factory)
    export = tmp_path / "export"
    export.mkdir()
    (export / "patient_a").symlink_to(dicom_factory.root / "study", target_is_directory=True)
    (export / "patient_a_again").symlink_to(dicom_factory.root / "study", target_is_directory=True)
    (export / "patient_a" / "deep" / "loop").symlink_to(export, target_is_directory=True)  # back up the tree

    result = discover_studies(export)

    (pair,) = result.pairs
    assert not result.failures and not result.problems
    assert pair.ct.folder == export / "patient_a" / "deep" / "ct" and len(pair.ct.files) == 4


def test_a_link_to_a_folder_holding_the_input_is_a_problem_not_a_walk_of_the_machine(dicom_factory, tmp_path):
    _pet_ct_study(dicom_factory)
    (dicom_factory.root / "study" / "up").symlink_to("../..", target_is_directory=True)  # the input's parent
    (dicom_factory.root / "machine").symlink_to("/", target_is_directory=True)
    result = discover_studies(dicom_factory.root)
    assert len(result.pairs) == 1
    assert sorted(problem.reason for problem in result.problems) == [
        f"{dicom_factory.root / name}: a link to a folder that holds the input folder, not followed"
        for name in ("machine", "study/up")]


def test_our_own_output_folder_linked_or_copied_into_the_input_is_not_read(dicom_factory, tmp_path):
    _pet_ct_study(dicom_factory)
    out = tmp_path / "out"
    (out / "0123456789ab").mkdir(parents=True)
    (out / OUTPUT_MARK).write_bytes(b"key")
    (out / "report.json").write_text("{}")  # not DICOM: read as input, it would be an unreadable file
    (out / "0123456789ab" / "done.json").write_text("{}")
    (dicom_factory.root / "outlink").symlink_to(out, target_is_directory=True)
    shutil.copytree(out, dicom_factory.root / "copied")
    result = discover_studies(dicom_factory.root)
    assert len(result.pairs) == 1 and result.problems == []


def test_a_file_that_cannot_be_looked_at_is_a_problem(dicom_factory, monkeypatch):
    _pet_ct_study(dicom_factory)
    (dicom_factory.root / "cwd").write_text("")
    is_file = Path.is_file

    def denied(path: Path) -> bool:
        if path.name == "cwd":
            raise PermissionError(13, "Permission denied")
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", denied)
    result = discover_studies(dicom_factory.root)
    assert len(result.pairs) == 1
    assert [problem.reason for problem in result.problems] == [
        f"{dicom_factory.root / 'cwd'}: cannot read (Permission denied)"]


def test_a_series_no_installed_decoder_reads_is_passed_over_for_one_it_reads(dicom_factory, no_jpeg_lossless_decoder):
    """A readable CT and PET, each beside a twin no installed decoder reads that the old order preferred (the
    attenuation-correction CT; a folder sorting last): the study failed on the twin, though it could be fused."""
    for modality in ("CT", "PT"):
        dicom_factory.series(f"study/{modality}/readable", modality=modality)
        dicom_factory.series(f"study/{modality}/undecodable", modality=modality, header=dicom_factory.jpeg_lossless,
                             description="CTAC")

    result = discover_studies(dicom_factory.root)

    (pair,) = result.pairs
    assert not result.failures and pair.ct.folder.name == pair.pet.folder.name == "readable"
    assert [(str(ignored.location.relative_to(dicom_factory.root)), ignored.reason) for ignored in result.ignored] == [
        (f"study/{modality}/undecodable", f"{modality} series ignored: no decoder is installed for transfer syntax "
         "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1]) "
         "(1.2.840.10008.1.2.4.70): install gdcm>=3.0.10, or pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1")
        for modality in ("CT", "PT")]


def _tilted(degrees: float) -> tuple[float, ...]:
    """ImageOrientationPatient of axial slices tilted about the left-right axis: 90 degrees gives coronal slices."""
    angle = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle)))


@pytest.mark.parametrize("modality", ["CT", "PT"])
@pytest.mark.parametrize(("orientation", "axial"), [(_tilted(0), True), (_tilted(40), True), (_tilted(50), False),
                                                    (_tilted(90), False), ((0, 1, 0, 0, 0, -1), False)],
                         ids=["axial", "tilted-40", "tilted-50", "coronal", "sagittal"])
def test_discovery_refuses_a_series_the_loader_refuses_with_its_message(dicom_factory, modality, orientation, axial):
    """A coronal or sagittal DICOM CT or PET was refused only when loaded: inspect called its study ready and the
    batch failed it late. Discovery and the loader share one rule (oblique stacks included) and one message."""
    from pipeline.transforms import LoadStudyd

    key, role, other = {"CT": ("ct", "CT", "PT"), "PT": ("pet", "PET", "CT")}[modality]
    series = dicom_factory.series(f"study/{key}", modality=modality, orientation=orientation, origin=(0, 0, 0))
    dicom_factory.series("study/other", modality=other, origin=(0, 0, 0))
    load = lambda: LoadStudyd(keys=key)({key: series})  # noqa: E731

    result = discover_studies(dicom_factory.root)

    if axial:
        load()
        assert len(result.pairs) == 1 and not result.failures
        return
    with pytest.raises(InputError) as info:
        load()
    assert str(info.value).startswith(f"{series}: the {modality}'s slices are not axial")
    (failure,) = result.failures
    assert not result.pairs and failure.location == series
    assert failure.reason == (f"study {study_key(dicom_factory.study_uid)}: {role} series: "
                              f"{str(info.value).removeprefix(f'{series}: ')}")


def test_an_axial_pet_is_preferred_to_a_coronal_one_the_old_order_ranked_first(dicom_factory):
    """An axial PET without attenuation correction beside a coronal one with it: the coronal one, which the loader
    refuses, was picked and the study failed late; now it is listed as ignored, with the loader's reason."""
    dicom_factory.series("study/ct", modality="CT")
    dicom_factory.series("study/pet_nac", modality="PT", header=lambda ds, k: setattr(ds, "CorrectedImage", ["DECY"]))
    dicom_factory.series("study/pet_coronal", modality="PT", orientation=_tilted(90))

    result = discover_studies(dicom_factory.root)

    (pair,) = result.pairs
    assert not result.failures and pair.pet.folder.name == "pet_nac"
    (ignored,) = result.ignored
    assert ignored.location == dicom_factory.root / "study" / "pet_coronal"
    assert ignored.reason == ("PT series ignored: the PT's slices are not axial (their normal is 90 degrees from the "
                              "head-foot axis): coronal and sagittal PT series are not supported, give an axial "
                              "reconstruction")


def test_inspect_fails_a_coronal_study_up_front_and_fuses_the_readable_ct_of_another(dicom_factory, capsys,
                                                                                     no_jpeg_lossless_decoder):
    from pipeline.cli import main

    coronal_study, other_study = generate_uid(), generate_uid()
    dicom_factory.series("a/ct", modality="CT", study_uid=coronal_study, orientation=_tilted(90))
    dicom_factory.series("a/pet", modality="PT", study_uid=coronal_study)
    dicom_factory.series("b/ct", modality="CT", study_uid=other_study)
    dicom_factory.series("b/ctac", modality="CT", study_uid=other_study, header=dicom_factory.jpeg_lossless,
                         description="CTAC")
    dicom_factory.series("b/pet", modality="PT", study_uid=other_study)

    assert main(["-q", "inspect", "--show-paths", str(dicom_factory.root)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 PET/CT study ready to fuse, 1 failed, 0 unreadable files, 1 series ignored"
    assert sorted(line.split()[0] for line in lines[1:]) == ["fail", "ignore", "ok"]
    (ok,) = [line for line in lines if line.startswith("  ok")]
    assert ok.startswith(f"  ok    study {study_key(other_study)}: CT 4 slices in b/ct,")
    (fail,) = [line for line in lines if line.startswith("  fail")]
    assert fail == (f"  fail  a/ct: study {study_key(coronal_study)}: CT series: the CT's slices are not axial (their "
                    "normal is 90 degrees from the head-foot axis): coronal and sagittal CT series are not supported, "
                    "give an axial reconstruction")
    (ignore,) = [line for line in lines if line.startswith("  ignore")]
    assert ignore.startswith("  ignore  b/ctac: CT series ignored: no decoder is installed for transfer syntax JPEG")
