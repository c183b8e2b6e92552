"""``fuse-batch`` against a real PACS: Orthanc with its DICOMweb plugin on loopback, started per module, and in front
of it, where a test needs a fault a PACS shows (busy, down, paging, listing a study twice), a proxy injecting it."""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pipeline.batch import pacs
from pipeline.batch.layout import STORED_FILE, own_output
from pipeline.batch.pacs import INBOX, run_dicomweb_batch
from pipeline.batch.report import BatchReport
from pipeline.errors import DcifError
from pipeline.cli import main
from pipeline.io.dicomweb import (CREDENTIALS_ENV, PASSWORD_ENV, USER_ENV, RemoteStudy, connect, fetch_study,
                                  find_studies, store_instances)
from pipeline.io.headers import study_key
from tests.batch.conftest import tiny_study

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "dcif", "pacs-secret"
CREDENTIALS = {USER_ENV: USER, PASSWORD_ENV: PASSWORD}
STARTUP_S = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _orthanc(tmp_path_factory)


@pytest.fixture(scope="module")
def other_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second PACS, empty to begin with."""
    yield from _orthanc(tmp_path_factory)


@pytest.fixture(scope="module")
def scratch_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PACS the tests that add studies share, each test with studies of its own (:func:`new_study`)."""
    yield from _orthanc(tmp_path_factory)


@pytest.fixture
def new_study(tmp_path: Path, tiny_geometry: dict) -> Callable[[int], Path]:
    """``new_study(seed)``: the DICOM folder of a tiny PET/CT study that no other test uploads (seeds from 30 on)."""
    return lambda seed: tiny_study(tmp_path / f"study_{seed}", seed, tiny_geometry)


def _upload(url: str, study: Path | list[Path]) -> str:
    """STOW-RS every DICOM file under ``study`` (or the files it lists) into ``url``; its StudyInstanceUID."""
    paths = sorted(study.rglob("*.dcm")) if isinstance(study, Path) else study
    datasets = [pydicom.dcmread(path) for path in paths]
    connect(url, CREDENTIALS).store_instances(datasets)
    return datasets[0].StudyInstanceUID


class FaultyProxy:
    """A PACS's DICOMweb root in front of another's, answering as a faulty PACS does when told: an HTTP status for
    POSTs (STOW-RS) or study searches (QIDO-RS), study search replies listing each study twice, cut to a page (with
    the Warning header the standard gives for it), or deaf to the offset asked for."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removesuffix("/dicom-web")
        self.failing: dict[str, list[int]] = {}  # "POST" or "QIDO": statuses left to answer, one per request
        self.twice = self.ignore_offset = False
        self.page: int | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.answer(self, None)

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding") == "chunked":  # how dicomweb-client sends over 1 MB
                    body = b""
                    while size := int(self.rfile.readline().strip(), 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.answer(self, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dicom-web"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def fail(self, kind: str, status: int, times: int = 1_000) -> None:
        """Answer the next ``times`` requests of ``kind`` with ``status``; by default all, until ``failing`` is
        cleared."""
        self.failing[kind] = [status] * times

    def answer(self, request: http.server.BaseHTTPRequestHandler, body: bytes | None) -> None:
        path, _, query = request.path.partition("?")
        kind = "POST" if request.command == "POST" else "QIDO" if path.rstrip("/").endswith("/studies") else "WADO"
        if self.failing.get(kind):
            return self._reply(request, self.failing[kind].pop(), {}, b"")
        if self.ignore_offset:
            query = "&".join(term for term in query.split("&") if not term.startswith("offset="))
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in ("host", "content-length", "transfer-encoding")}
        reply = requests.request(request.command, f"{self.upstream}{path}?{query}", headers=headers, data=body,
                                 timeout=60)
        content, extra = reply.content, {}
        if kind == "QIDO" and reply.ok and content:
            studies = reply.json() * (2 if self.twice else 1)
            if self.page is not None and len(studies) > self.page:
                studies = studies[:self.page]
                extra["Warning"] = '299 proxy: "There are additional results that can be requested"'
            content = json.dumps(studies).encode()
        passed = {name: value for name, value in reply.headers.items()
                  if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
        self._reply(request, reply.status_code, {**passed, **extra}, content)

    @staticmethod
    def _reply(request: http.server.BaseHTTPRequestHandler, status: int, headers: dict, content: bytes) -> None:
        request.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(content))}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(content)


@pytest.fixture
def proxy() -> Iterator[Callable[[str], FaultyProxy]]:
    """``proxy(url)``: a :class:`FaultyProxy` in front of the PACS at ``url``, stopped after the test."""
    started: list[FaultyProxy] = []

    def start(url: str) -> FaultyProxy:
        started.append(FaultyProxy(url))
        return started[-1]

    yield start
    for each in started:
        each.server.shutdown()
        each.server.server_close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's five attempts at a busy PACS (408, 429, 503, 504) milliseconds apart instead of seconds."""
    monkeypatch.setattr(DICOMwebClient, "set_http_retry_params",
                        functools.partialmethod(DICOMwebClient.set_http_retry_params, wait_exponential_multiplier=1))


@pytest.fixture(scope="module")
def pacs_study(orthanc: str, good_export: Path) -> str:
    """One tiny phantom PET/CT study uploaded by STOW-RS; its StudyInstanceUID."""
    return _upload(orthanc, good_export / "patient_0")


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

    monkeypatch.setattr("pipeline.provenance.fuser_version", lambda fuser: "sha256:another-model")
    changed = _run(orthanc, tmp_path / "new_model", batch_options)
    assert changed.counts()["ok"] == 1
    assert len(_fused_series(orthanc, pacs_study)) == 4  # a new model's images are stored, not dropped


def test_a_study_a_run_fused_but_did_not_store_is_stored_by_the_next(tmp_path: Path, orthanc: str, pacs_study: str,
                                                                      batch_options,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.provenance.fuser_version", lambda fuser: "sha256:interrupted-run")
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


def test_a_second_run_on_the_same_out_dir_stops_before_fetching(tmp_path: Path, orthanc: str, pacs_study: str,
                                                                 batch_options) -> None:
    with own_output(tmp_path / "out"):  # a live run holds OUT_DIR
        with pytest.raises(DcifError, match="another fuse-batch run is writing into this output folder"):
            _run(orthanc, tmp_path / "out", batch_options)
    assert not (tmp_path / "out" / INBOX).exists()  # nothing fetched into the live run's cache


def test_the_report_is_written_while_out_dir_is_held(tmp_path: Path, orthanc: str, pacs_study: str, batch_options,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    held, write = [], BatchReport.write

    def write_if_held(report: BatchReport) -> tuple[Path, Path]:
        with pytest.raises(DcifError) as raised, own_output(report.out_dir):
            pass
        held.append("another fuse-batch run" in str(raised.value))
        return write(report)

    monkeypatch.setattr(BatchReport, "write", write_if_held)
    _run(orthanc, tmp_path / "out", batch_options)
    assert held and all(held)


def test_a_full_disk_after_the_batch_ends_the_run_in_one_line(tmp_path: Path, orthanc: str, pacs_study: str,
                                                              batch_options, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(folder: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / STORED_FILE))

    monkeypatch.setattr(pacs, "store_instances", lambda client, paths: None)
    monkeypatch.setattr(pacs, "mark_stored", full_disk)
    with pytest.raises(DcifError) as raised:
        _run(orthanc, tmp_path / "out", batch_options)
    key = study_key(pacs_study)
    assert str(raised.value) == f"{tmp_path / 'out' / key / STORED_FILE}: No space left on device"


def test_a_study_fetched_short_fails_and_is_fetched_again(tmp_path: Path, orthanc: str, pacs_study: str,
                                                          batch_options, monkeypatch: pytest.MonkeyPatch) -> None:
    key = study_key(pacs_study)
    with monkeypatch.context() as patch:  # the connection drops: the last 5 instances never come
        retrieve = DICOMwebClient.iter_study
        patch.setattr(DICOMwebClient, "iter_study", lambda client, uid: list(retrieve(client, uid))[:-5])
        short = _run(orthanc, tmp_path / "out", batch_options)
    (row,) = short.studies
    got, listed = re.fullmatch(rf"{orthanc}: WADO-RS gave (\d+) instances of study {key}, QIDO-RS listed (\d+)",
                               row.reason).groups()
    assert row.status == "failed" and int(got) == int(listed) - 5
    assert [path.name for path in (tmp_path / "out" / INBOX).iterdir()] == []  # nothing kept, no leftover
    assert _run(orthanc, tmp_path / "out", batch_options).counts()["ok"] == 1


def test_any_error_fetching_one_study_fails_that_study_alone(tmp_path: Path, orthanc: str, pacs_study: str,
                                                             batch_options, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = RemoteStudy("1.2.826.0.1.3680043.8.498.1")  # listed by QIDO-RS, its WADO-RS reply unreadable
    found, retrieve = pacs.find_studies, DICOMwebClient.iter_study

    def malformed(client: DICOMwebClient, uid: str) -> Iterator[pydicom.Dataset]:
        if uid == broken.uid:
            raise ValueError("multipart reply without a boundary")
        return retrieve(client, uid)

    monkeypatch.setattr(pacs, "find_studies", lambda client, query: [broken, *found(client, query)])
    monkeypatch.setattr(DICOMwebClient, "iter_study", malformed)
    report = _run(orthanc, tmp_path / "out", batch_options)

    assert report.counts() == {"ok": 1, "failed": 1, "skipped": 0}
    failure = next(row for row in report.studies if row.status == "failed")
    assert (failure.key, failure.location) == (broken.key, orthanc)
    assert failure.reason == (f"{orthanc}: fetching study {broken.key} failed: ValueError: multipart reply without a "
                              "boundary")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"]["failed"] == 1


def test_store_sends_this_runs_studies_to_the_pacs_they_came_from(tmp_path: Path, orthanc: str, other_orthanc: str,
                                                                  pacs_study: str, good_export: Path,
                                                                  batch_options) -> None:
    out = tmp_path / "out"
    run_dicomweb_batch(orthanc, out, batch_options, {"StudyDate": "19000101-"}, progress=False, environ=CREDENTIALS)
    empty = _run(other_orthanc, out, batch_options)  # its query finds nothing: the cache is not its to store
    assert empty.studies == [] and connect(other_orthanc, CREDENTIALS).search_for_studies() == []

    _upload(other_orthanc, good_export / "patient_0")  # the same study, in the other PACS too
    (row,) = _run(other_orthanc, out, batch_options).studies
    assert row.status == "failed"
    assert row.reason == (f"{other_orthanc}: study {row.key} not stored, it was fetched from {orthanc}; "
                          "use one OUT_DIR per PACS")
    assert _fused_series(other_orthanc, pacs_study) == []


def test_a_partial_store_refusal_is_not_marked_stored(tmp_path: Path, orthanc: str, pacs_study: str, batch_options,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.provenance.fuser_version", lambda fuser: "sha256:partly-refused-run")
    before = len(_fused_series(orthanc, pacs_study))

    def refuse_colour(client: DICOMwebClient, datasets: list[pydicom.Dataset]) -> pydicom.Dataset:
        """A PACS answering 202 Accepted that refused the colour instance (its SOP class, say)."""
        reply = pydicom.Dataset()
        refused = [dataset for dataset in datasets if dataset.SamplesPerPixel == 3]
        if refused:
            failed = pydicom.Dataset()
            failed.ReferencedSOPInstanceUID, failed.FailureReason = refused[0].SOPInstanceUID, 0x0122
            reply.FailedSOPSequence = [failed]
        return reply

    with monkeypatch.context() as patch:
        patch.setattr(DICOMwebClient, "store_instances", refuse_colour)
        (refused,) = _run(orthanc, tmp_path / "out", batch_options).studies
    assert (refused.status, refused.reason) == ("failed", f"{orthanc}: STOW-RS refused 1 of 2 instances")
    assert list((tmp_path / "out").glob(f"*/{STORED_FILE}")) == []
    stored = _run(orthanc, tmp_path / "out", batch_options)  # kept: stored, not fused again
    assert stored.counts()["skipped"] == 1 and len(_fused_series(orthanc, pacs_study)) == before + 2


def test_credentials_in_the_url_are_refused_without_showing_them(tmp_path: Path, orthanc: str,
                                                                 capsys: pytest.CaptureFixture,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    url = orthanc.replace("http://", f"http://{USER}:{PASSWORD}@")
    assert main(["fuse-batch", url, str(tmp_path / "out"), "--method", "laplacian", "--query",
                 "StudyDate=19000101-"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line == (f"dcif fuse-batch: error: {orthanc.replace('http://', 'http://***@')}: credentials in the URL "
                    f"are refused; set {USER_ENV} and {PASSWORD_ENV}, or {CREDENTIALS_ENV}")
    assert PASSWORD not in captured.out + captured.err + caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_pacs_ends_the_query_in_one_line(tmp_path: Path, orthanc: str, proxy, fast_retries, status: int,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    busy = proxy(orthanc)
    busy.fail("QIDO", status)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    assert main(["-q", "fuse-batch", busy.url, str(tmp_path / "out"), "--method", "laplacian", "--query",
                 "StudyDate=19000101-"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"dcif fuse-batch: error: {busy.url}: QIDO-RS study search failed ({status} after 5 attempts)"


@pytest.mark.parametrize("status, said", [(503, "503 after 5 attempts"), (500, "500")])
def test_a_pacs_that_will_not_store_fails_those_studies_and_keeps_their_fusion(
        tmp_path: Path, orthanc: str, pacs_study: str, proxy, fast_retries, batch_options, status: int, said: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.provenance.fuser_version", lambda fuser: f"sha256:store-answered-{status}")
    before = len(_fused_series(orthanc, pacs_study))
    down = proxy(orthanc)
    down.fail("POST", status)
    (row,) = _run(down.url, tmp_path / "out", batch_options).studies
    assert (row.status, row.reason) == ("failed", f"{down.url}: STOW-RS store failed ({said})")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"]["failed"] == 1
    folder = tmp_path / "out" / row.key
    assert (folder / "done.json").is_file() and not (folder / STORED_FILE).exists()

    down.failing.clear()  # the PACS is back: the fused study is stored as it is, not fused again
    (row,) = _run(down.url, tmp_path / "out", batch_options).studies
    assert row.status == "skipped" and (folder / STORED_FILE).is_file()
    assert len(_fused_series(orthanc, pacs_study)) == before + 2


def test_a_store_retried_after_a_busy_reply_sends_the_whole_body(scratch_orthanc: str, new_study, proxy,
                                                                fast_retries) -> None:
    paths = sorted(new_study(30).rglob("*.dcm"))
    assert sum(path.stat().st_size for path in paths) > 2**20  # over the client's chunk size
    busy = proxy(scratch_orthanc)
    busy.fail("POST", 503, times=1)
    store_instances(connect(busy.url, CREDENTIALS), paths)
    uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    assert len(connect(scratch_orthanc, CREDENTIALS).search_for_instances(uid)) == len(paths)


def _large_instance(path: Path, study_uid: str, megabytes: int) -> None:
    """A single-frame secondary capture of about ``megabytes`` MB in ``study_uid``, as a fused series' file is."""
    side = int((megabytes * 2**20 / 2) ** 0.5)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.PatientID = study_uid, generate_uid(), "LARGE"
    dataset.Modality, dataset.SamplesPerPixel, dataset.PhotometricInterpretation = "OT", 1, "MONOCHROME2"
    dataset.Rows = dataset.Columns = side
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.PixelData = np.zeros((side, side), np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


def test_a_store_holds_one_instance_at_a_time(tmp_path: Path, scratch_orthanc: str) -> None:
    """A study's fused series went in one request, every file held twice in memory at once: hundreds of MB each."""
    study_uid = generate_uid()
    paths = [tmp_path / f"{index}.dcm" for index in range(4)]
    for path in paths:
        _large_instance(path, study_uid, megabytes=6)
    total = sum(path.stat().st_size for path in paths)
    client = connect(scratch_orthanc, CREDENTIALS)
    tracemalloc.start()
    try:
        store_instances(client, paths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(client.search_for_instances(study_uid)) == len(paths)
    assert peak < total, f"peak {peak / 2**20:.1f} MB for {total / 2**20:.1f} MB of files"


@pytest.mark.parametrize("counted", [True, False], ids=["instance count", "instance list"])
def test_a_study_still_arriving_is_fetched_again_and_fused_whole(tmp_path: Path, scratch_orthanc: str, new_study,
                                                                 batch_options, counted: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if not counted:  # a PACS that gives no NumberOfStudyRelatedInstances: its instances are listed instead
        found = pacs.find_studies
        monkeypatch.setattr(pacs, "find_studies", lambda client, query: [RemoteStudy(study.uid)
                                                                         for study in found(client, query)])
    study = new_study(31 if counted else 32)
    ct, pet = sorted((study / "CT").glob("*.dcm")), sorted((study / "PET").glob("*.dcm"))
    uid = _upload(scratch_orthanc, ct + pet[: len(pet) // 2])  # the PET half sent when the batch runs
    query = {"StudyInstanceUID": uid}
    runs = functools.partial(run_dicomweb_batch, scratch_orthanc, tmp_path / "out", batch_options, query, store=True,
                             progress=False, environ=CREDENTIALS)
    (partial,) = runs().studies
    assert partial.status == "ok" and partial.ct_slices_without_pet > 0

    _upload(scratch_orthanc, pet[len(pet) // 2:])
    (whole,) = runs().studies
    assert whole.status == "ok" and whole.ct_slices_without_pet == 0
    fetched = (tmp_path / "out" / INBOX / whole.key).stat().st_ino
    # Its CT and PET unchanged, only its fused series stored into it: kept, not fetched again.
    assert runs().counts()["skipped"] == 1
    assert (tmp_path / "out" / INBOX / whole.key).stat().st_ino == fetched


def test_a_pacs_that_pages_its_study_search_gives_every_study(scratch_orthanc: str, new_study, proxy) -> None:
    ours = {_upload(scratch_orthanc, new_study(seed)) for seed in (33, 34)}
    every = {study.uid for study in find_studies(connect(scratch_orthanc, CREDENTIALS), {})}
    assert ours <= every
    paged = proxy(scratch_orthanc)
    paged.page = 1
    client = connect(paged.url, CREDENTIALS)
    assert {study.uid for study in find_studies(client, {})} == every
    paged.ignore_offset = True  # each page the first again: the search ends with what it could get, once
    first_page = find_studies(client, {})  # none where the PACS lists a study without PET first (its order is its own)
    assert len(first_page) <= 1 and {study.uid for study in first_page} <= every
    paged.page = None  # every study on each page: once each
    assert {study.uid for study in find_studies(client, {})} == every


def test_a_study_listed_twice_is_fused_once(tmp_path: Path, orthanc: str, pacs_study: str, proxy,
                                           batch_options) -> None:
    twice = proxy(orthanc)
    twice.twice = True
    report = run_dicomweb_batch(twice.url, tmp_path / "out", batch_options, {"StudyDate": "19000101-"},
                                progress=False, environ=CREDENTIALS)
    assert [(row.key, row.status) for row in report.studies] == [(study_key(pacs_study), "ok")]


def test_a_fetch_holds_one_instance_at_a_time(tmp_path: Path, orthanc: str, pacs_study: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    parsed, most, read = [], [0], pydicom.dcmread

    def counted(*args: object, **kwargs: object) -> pydicom.Dataset:
        dataset = read(*args, **kwargs)
        parsed.append(weakref.ref(dataset))
        most[0] = max(most[0], sum(each() is not None for each in parsed))
        return dataset

    monkeypatch.setattr(pydicom, "dcmread", counted)  # how dicomweb-client parses each instance of a WADO-RS reply
    folder = fetch_study(connect(orthanc, CREDENTIALS), RemoteStudy(pacs_study), tmp_path)
    assert len(list(folder.iterdir())) > 10 and most[0] <= 2
