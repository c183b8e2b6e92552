"""The report's rows, their done.json round trip, and the output layout's refusal of unsafe names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipeline.batch.layout import clear_partial_files, finished_result, mark_done, study_folder
from pipeline.batch.report import BatchReport, FileIssue, Locator, StudyResult

RESULT = StudyResult(key="0123456789ab", status="ok", location="export/CT", slices=16,
                     timings={"load": 0.5, "fuse": 1.25}, metrics={"laplacian_lung": {"SSIM": 0.75, "QABF": None}})


def test_done_json_round_trips_and_reads_back_as_skipped(tmp_path: Path) -> None:
    mark_done(tmp_path, RESULT)
    finished = finished_result(tmp_path)

    assert finished == RESULT
    skipped = finished.skipped("#0a1b2c3d4e/CT")
    assert skipped.status == "skipped" and skipped.metrics == RESULT.metrics and skipped.location == "#0a1b2c3d4e/CT"
    (tmp_path / "done.json").write_text("{not json")
    assert finished_result(tmp_path) is None  # a damaged marker means: redo the study


def test_report_files_list_studies_and_unreadable_files(tmp_path: Path) -> None:
    failed = StudyResult(key="", status="failed", location="no_pet/CT", reason="study abc has CT but no PET series")
    report = BatchReport(Locator(Path("/in"), b"key"), tmp_path, [RESULT, failed], [FileIssue("notes.txt", "not a DICOM file")])
    json_path, csv_path = report.write()

    document = json.loads(json_path.read_text())
    assert document["counts"] == {"ok": 1, "failed": 1, "skipped": 0} and "/in" not in json_path.read_text()
    assert document["unreadable_files"] == [{"location": "notes.txt", "reason": "not a DICOM file"}]
    with csv_path.open() as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["fuse_s"] == "1.25" and rows[0]["laplacian_lung_SSIM"] == "0.75"
    assert rows[0]["laplacian_lung_QABF"] == "" and rows[1]["reason"] == failed.reason
    assert not report.all_ok
    assert report.summary().startswith("1 ok, 1 failed, 0 skipped (done), 1 unreadable files; report ")


def test_locations_are_relative_and_hide_every_name_but_folder_indices(tmp_path: Path) -> None:
    folder = tmp_path / "DOE^JOHN 123456" / "0003" / "CT, thin"
    folder.mkdir(parents=True)
    (folder / "x.dcm").touch()
    locator, explicit = Locator(tmp_path, b"secret"), Locator(tmp_path)

    hidden = locator.location(folder / "x.dcm")
    assert hidden.split("/")[1] == "0003" and "DOE" not in hidden and "thin" not in hidden and "x.dcm" not in hidden
    assert hidden != Locator(tmp_path, b"other key").location(folder / "x.dcm")  # no key, no dictionary attack
    message = locator.redact(f"{folder / 'x.dcm'}: empty file (0 bytes) (same as {folder / 'x.dcm'})")
    assert message == f"{hidden}: empty file (0 bytes) (same as {hidden})"
    assert explicit.location(folder) == "DOE^JOHN 123456/0003/CT, thin"
    assert explicit.redact(f"{tmp_path}/M\udcfcller: bad") == "M\\xfcller: bad"  # undecodable byte, printable


def test_a_message_naming_in_dir_itself_or_ending_a_path_with_a_semicolon_is_redacted(tmp_path: Path) -> None:
    export = tmp_path / "DOE^JOHN_MRN123"  # a flat export: the series lie in IN_DIR itself
    (export / "CT").mkdir(parents=True)
    locator = Locator(export, b"secret")
    message = locator.redact(f"its PET (1.0 to 2.0 mm, {export}) does not overlap; {export / 'CT'}; {export}2/x")
    assert "DOE" not in message.replace(f"{export}2", "")  # a sibling folder is not IN_DIR
    assert message == f"its PET (1.0 to 2.0 mm, .) does not overlap; {locator.location(export / 'CT')}; {export}2/x"


@pytest.mark.parametrize("key", ["../../etc", "0123456789AB", "0123456789abc", ""])
def test_study_folders_are_named_only_by_study_keys(tmp_path: Path, key: str) -> None:
    assert study_folder(tmp_path, "0123456789ab") == tmp_path / "0123456789ab"
    with pytest.raises(ValueError, match="not a study key"):
        study_folder(tmp_path, key)


def test_partial_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".a1b2c3.partial.report.json").write_text("{")
    (tmp_path / "report.json").write_text("{}")
    clear_partial_files(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]
