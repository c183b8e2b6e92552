"""``fuse-batch`` against a real PACS: Orthanc with its DICOMweb plugin on loopback, started per module."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import requests

from pipeline.batch.pacs import run_dicomweb_batch
from pipeline.batch.report import BatchReport
from pipeline.errors import DcifError
from pipeline.cli import main
from pipeline.io.dicomweb import CREDENTIALS_ENV, PASSWORD_ENV, USER_ENV, connect

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "dcif", "pacs-secret"
CREDENTIALS = {USER_ENV: USER, PASSWORD_ENV: PASSWORD}
STARTUP_S = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """A fresh Orthanc (no DICOM port, local access only, basic auth) and its DICOMweb root URL."""
    if ORTHANC is None or not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc or its DICOMweb plugin is not installed (Debian: orthanc, orthanc-dicomweb)")
    folder = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {"Name": "dcif-test", "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
              "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.skip(f"Orthanc did not start within {STARTUP_S} s: {(folder / 'orthanc.log').read_text()[-300:]}")
    yield f"{base}/dicom-web"
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def pacs_study(orthanc: str, good_export: Path) -> str:
    """One tiny phantom PET/CT study uploaded by STOW-RS; its StudyInstanceUID."""
    datasets = [pydicom.dcmread(path) for path in sorted((good_export / "patient_0").rglob("*.dcm"))]
    connect(orthanc, CREDENTIALS).store_instances(datasets)
    return datasets[0].StudyInstanceUID


def _fused_series(url: str, study_uid: str) -> list[dict]:
    return connect(url, CREDENTIALS).search_for_series(study_uid, search_filters={"Modality": "OT"})


def _run(url: str, out: Path, options, **kwargs) -> BatchReport:
    return run_dicomweb_batch(url, out, options, {"StudyDate": "19000101-"}, store=True, progress=False,
                              environ=CREDENTIALS, **kwargs)


def test_fused_series_go_back_once_into_the_source_study(tmp_path: Path, orthanc: str, pacs_study: str,
                                                         batch_options, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _run(orthanc, tmp_path / "out", batch_options)
    again = _run(orthanc, tmp_path / "out", batch_options)  # resumed: skipped, nothing stored twice
    fresh = _run(orthanc, tmp_path / "fresh", batch_options)  # redone: the same UIDs, the PACS keeps one copy

    assert first.counts() == {"ok": 1, "failed": 0, "skipped": 0} and again.counts()["skipped"] == 1
    assert first.unreadable_files == []  # the fetched folder holds the study's DICOM files only
    assert fresh.counts()["ok"] == 1
    series = _fused_series(orthanc, pacs_study)
    assert len(series) == 2  # grey and colour, laplacian x lung, once
    client = connect(orthanc, CREDENTIALS)
    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": pacs_study})
    patient_id = study["00100020"]["Value"][0]
    source = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in client.search_for_series(pacs_study)
              if s["00080060"]["Value"][0] in ("CT", "PT")}
    for item in series:
        uid = item["0020000E"]["Value"][0]
        (metadata,) = client.retrieve_series_metadata(pacs_study, uid)
        ds = pydicom.Dataset.from_json(metadata, bulk_data_uri_handler=lambda *_: b"")
        assert ds.StudyInstanceUID == pacs_study and ds.PatientID == patient_id
        assert {ref.SeriesInstanceUID for ref in ds.ReferencedSeriesSequence} == set(source)

    monkeypatch.setattr("pipeline.fusion.streaming.fuser_version", lambda fuser: "sha256:another-model")
    changed = _run(orthanc, tmp_path / "new_model", batch_options)
    assert changed.counts()["ok"] == 1
    assert len(_fused_series(orthanc, pacs_study)) == 4  # a new model's images are stored, not dropped


def test_a_study_a_run_fused_but_did_not_store_is_stored_by_the_next(tmp_path: Path, orthanc: str, pacs_study: str,
                                                                      batch_options,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.fusion.streaming.fuser_version", lambda fuser: "sha256:interrupted-run")
    before = len(_fused_series(orthanc, pacs_study))
    # A run stopped between fusing (done.json written) and storing, as a killed --store run would leave it.
    run_dicomweb_batch(orthanc, tmp_path / "out", batch_options, {"StudyDate": "19000101-"}, progress=False,
                       environ=CREDENTIALS)
    assert len(_fused_series(orthanc, pacs_study)) == before
    resumed = _run(orthanc, tmp_path / "out", batch_options)
    assert resumed.counts()["skipped"] == 1 and len(_fused_series(orthanc, pacs_study)) == before + 2
    assert [path.parent.name for path in (tmp_path / "out").glob("*/stored.json")] == [resumed.studies[0].key]


def test_missing_credentials_fail_in_one_line(tmp_path: Path, orthanc: str, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (USER_ENV, PASSWORD_ENV, CREDENTIALS_ENV):
        monkeypatch.delenv(name, raising=False)
    assert main(["-q", "fuse-batch", orthanc, str(tmp_path / "out"), "--method", "laplacian", "--query",
                 "StudyDate=19000101-"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"dcif fuse-batch: error: {orthanc}: QIDO-RS study search failed (401)"


def test_credentials_come_from_a_file(tmp_path: Path, orthanc: str, pacs_study: str) -> None:
    secret = tmp_path / "pacs-credentials"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    client = connect(orthanc, {CREDENTIALS_ENV: str(secret)})
    assert pacs_study in {study["0020000D"]["Value"][0] for study in client.search_for_studies()}
    with pytest.raises(DcifError, match="missing: cannot read DICOMweb credentials"):
        connect(orthanc, {CREDENTIALS_ENV: str(tmp_path / "missing")})
