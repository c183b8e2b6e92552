"""The report's rows, their done.json round trip, and the output layout's refusal of unsafe names."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.batch.layout import finished_result, mark_done, study_folder
from pipeline.batch.report import BatchReport, FileIssue, Locator, StudyResult
from pipeline.io.atomic import clear_partial_files

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
    assert report.summary().startswith("1 ok, 1 failed, 0 skipped (done), 1 unreadable file; report ")


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


# Made-up patient folders that quote, space and punctuate as exports do; none may show in a message in any part.
HOSTILE_NAMES = ["SMITH  JANE", "SMITH\tJANE", "DOE, JOHN 19600101", "ROE MARY ", 'O\'HARA "MAXIM" 19700203',
                 "MÜLLER; ÉLODIE (1980-04-05)", "KIM: ANNA 19551231", "VAN DER BERG,\u00a0PIETER"]


def _fragments(name: str) -> list[str]:
    """Each word and number of a folder name."""
    return re.findall(r"\w+", name)


def _shown(message: str) -> str:
    """A redacted message without its pseudonyms (hex hashes could spell a short number by chance)."""
    return re.sub(r"#[0-9a-f]{10}", "#", message)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_no_part_of_a_hostile_folder_name_survives_redaction(tmp_path: Path, name: str) -> None:
    """Names are matched as written (not with their whitespace squashed); a path not on disk is hidden whole."""
    in_dir, series = tmp_path / "in", tmp_path / "in" / name / "dicom"
    pet, ct = series / "PET" / "pet_0004.dcm", series / "CT" / "ct_0000.dcm"
    for path in (pet, ct):
        path.parent.mkdir(parents=True)
        path.touch()
    locator = Locator(in_dir, b"secret")
    messages = {f"{pet}: no Modality in the header (truncated file?)": f"{locator.location(pet)}: no Modality in "
                                                                       "the header (truncated file?)",
                f"[Errno 5] Input/output error: '{pet}'": f"[Errno 5] Input/output error: '{locator.location(pet)}'",
                f"{ct}: its series is also in another study ({pet}):\n  not used":
                    f"{locator.location(ct)}: its series is also in another study ({locator.location(pet)}): not used",
                f"study k: CT 2 slices in {ct.parent}, PET 2 slices in {pet.parent}; 1 CT slices without PET":
                    f"study k: CT 2 slices in {locator.location(ct.parent)}, PET 2 slices in "
                    f"{locator.location(pet.parent)}; 1 CT slices without PET"}
    for message, redacted in messages.items():
        assert locator.redact(message) == redacted
    vanished = f"{pet}: file not found"  # discovered, then moved away by an archiver
    shutil.rmtree(pet.parent)
    assert locator.redact(vanished) == f"{locator.location(pet)}: file not found"
    shutil.rmtree(in_dir / name)
    for message in [*messages, vanished, f"{pet.parent} (1.0 to 2.0 mm, {ct}) does not overlap"]:
        shown = _shown(locator.redact(message))
        assert not [fragment for fragment in _fragments(name) if fragment in shown], shown
    flat = tmp_path / name  # a flat export named by its patient: IN_DIR itself
    (flat / "CT").mkdir(parents=True)
    assert Locator(flat, b"secret").redact(f"no PET series in {flat}\t({flat / 'CT'})") == \
        f"no PET series in . ({Locator(flat, b'secret').location(flat / 'CT')})"


@pytest.mark.parametrize("name", ["SMITH  JANE", "DOE, JOHN 19600101", "ROE 'MARY'"])
def test_a_vanished_folder_is_not_taken_for_a_shorter_one_on_disk(tmp_path: Path, name: str) -> None:
    """A message going on through a separator after a name on disk names a longer path that is no longer there."""
    (tmp_path / _fragments(name)[0]).mkdir()
    shown = _shown(Locator(tmp_path, b"secret").redact(f"{tmp_path / name / 'PET' / 'pet_0000.dcm'}: file not found"))
    assert shown == "#/#/#: file not found"


def test_only_short_numbers_stay_readable(tmp_path: Path) -> None:
    """A series or instance folder's index is kept; five digits or more may be an MRN or a birth date."""
    location = Locator(tmp_path, b"secret").location(tmp_path / "483920" / "19600101" / "00012" / "0004" / "1")
    assert location.split("/")[3:] == ["0004", "1"] and "483920" not in location and "12" not in _shown(location)


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_but_json_keeps_them(tmp_path: Path) -> None:
    """OWASP's CSV-injection rule, on strings only: a negative metric is still a number."""
    link = '=HYPERLINK("https://evil.example","open")/CT'
    hostile = StudyResult(key="+1", status="failed", location=link, reason="@SUM(A1)", pet_scaling="\tx",
                          metrics={"laplacian_lung": {"SSIM": -0.5, "QABF": 0.25}})
    report = BatchReport(Locator(Path("/in")), tmp_path, [hostile, replace(RESULT, reason="-2 slices", key="\rk")])
    json_path, csv_path = report.write()

    assert json.loads(json_path.read_text())["studies"][0]["location"] == link
    with csv_path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [rows[0][column] for column in ("key", "location", "reason", "pet_scaling", "laplacian_lung_SSIM")] == \
        ["'+1", f"'{link}", "'@SUM(A1)", "'\tx", "-0.5"]
    assert (rows[1]["key"], rows[1]["reason"], rows[1]["location"]) == ("'\rk", "'-2 slices", "export/CT")
