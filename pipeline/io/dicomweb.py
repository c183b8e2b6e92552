"""A PACS over DICOMweb: find PET/CT studies (QIDO-RS), fetch them (WADO-RS), store results (STOW-RS).

Built on ``dicomweb-client``. Credentials come from the environment or a file, never from the
command line, so they reach neither the shell history nor the logs: ``DCIF_DICOMWEB_USER`` and
``DCIF_DICOMWEB_PASSWORD``, or ``DCIF_DICOMWEB_CREDENTIALS``, the path of a file holding
``user:password`` on its first line; a URL holding them (``http://user:password@host/...``) is refused.
Studies are written under a folder named by the hash of their StudyInstanceUID, so the folder batch
reads them as any export. The client retries an HTTP 408, 429, 503 or 504 five times over about 30 s (its
exponential back-off) before giving up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests
import retrying
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session, create_session_from_user_pass

from pipeline.errors import DcifError, InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.headers import study_key

USER_ENV, PASSWORD_ENV, CREDENTIALS_ENV = "DCIF_DICOMWEB_USER", "DCIF_DICOMWEB_PASSWORD", "DCIF_DICOMWEB_CREDENTIALS"
STUDY_UID, MODALITIES_IN_STUDY, STUDY_INSTANCES = "0020000D", "00080061", "00201208"
SOP_UID, MODALITY = "00080018", "00080060"
PAIRED = {"CT", "PT"}
PAGE = 10_000  # results one QIDO-RS request asks for; a PACS may give fewer, and the rest are asked for by offset
STREAM_CHUNK = 1 << 20  # bytes read at a time from a WADO-RS reply, one instance written before the next is read
logger = logging.getLogger(__name__)


def is_dicomweb_url(text: str | os.PathLike[str]) -> bool:
    """Whether a batch input names a DICOMweb endpoint rather than a folder."""
    return str(text).startswith(("http://", "https://"))


def _credentials(environ: Mapping[str, str]) -> tuple[str, str] | None:
    if environ.get(CREDENTIALS_ENV):
        path = Path(environ[CREDENTIALS_ENV])
        try:
            user, _, password = path.read_text().splitlines()[0].partition(":")
        except (OSError, IndexError):
            raise InputError(f"{path}: cannot read DICOMweb credentials (one line user:password)") from None
        return user, password
    if environ.get(USER_ENV):
        return environ[USER_ENV], environ.get(PASSWORD_ENV, "")
    return None


def connect(url: str, environ: Mapping[str, str] = os.environ) -> DICOMwebClient:
    """A client for ``url`` with the credentials the environment names (none: anonymous).

    A URL carrying credentials is refused: they would show in the process list, the logs and the report.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        shown = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
        raise InputError(f"{shown}: credentials in the URL are refused; set {USER_ENV} and {PASSWORD_ENV}, "
                         f"or {CREDENTIALS_ENV}")
    credentials = _credentials(environ)
    session = create_session_from_user_pass(*credentials) if credentials else create_session()
    # One spelling of a root, as fetched studies record it.
    return DICOMwebClient(url.rstrip("/"), session=session, chunk_size=STREAM_CHUNK)


def _value(result: Mapping, tag: str) -> list:
    return result.get(tag, {}).get("Value", [])


@contextlib.contextmanager
def _calling(url: str, action: str) -> Iterator[None]:
    """Turn the HTTP layer's errors into one line naming the endpoint and what failed."""
    try:
        yield
    except requests.RequestException as error:
        status = getattr(error.response, "status_code", None)
        raise DcifError(f"{url}: {action} failed ({status or type(error).__name__})") from None
    except retrying.RetryError as error:  # the client's retries of a busy PACS (503, 429, 408, 504) ran out
        last = error.last_attempt
        status = getattr(last.value, "status_code", None)
        raise DcifError(f"{url}: {action} failed ({status} after {last.attempt_number} attempts)") from None


@dataclass(frozen=True)
class RemoteStudy:
    """A study QIDO-RS found: its UID and, where the PACS says, how many instances it holds."""

    uid: str
    instances: int | None = None

    @property
    def key(self) -> str:
        return study_key(self.uid)


def _search_all(search: Callable[..., list[dict]], key: str, **query: object) -> list[dict]:
    """Every result of a QIDO-RS search, once each by its ``key`` tag, however the PACS pages them.

    A PACS may answer with part of the results (a page, with a Warning header), so the search is asked again from the
    offset reached until a page is empty. dicomweb-client's ``get_remaining`` does the same but never ends against a
    PACS that ignores the offset; here a page bringing nothing new ends it too.
    """
    found: dict[str, dict] = {}
    offset = 0
    while page := search(offset=offset, limit=PAGE, **query):
        offset += len(page)
        new = {uid: result for result in page if (uid := next(iter(_value(result, key)), None)) and uid not in found}
        if not new:
            break
        found.update(new)
    return list(found.values())


def find_studies(client: DICOMwebClient, query: Mapping[str, str]) -> list[RemoteStudy]:
    """The studies matching the QIDO-RS ``query`` that hold both a CT and a PET series, each once."""
    with _calling(client.base_url, "QIDO-RS study search"):
        results = _search_all(client.search_for_studies, STUDY_UID, search_filters=dict(query),
                              fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"])
    return [RemoteStudy(_value(result, STUDY_UID)[0], next((int(n) for n in _value(result, STUDY_INSTANCES)), None))
            for result in results if PAIRED <= set(_value(result, MODALITIES_IN_STUDY))]


def _source_listing(client: DICOMwebClient, study: RemoteStudy) -> str:
    """A digest of the UIDs of the CT and PET instances QIDO-RS lists of a study now (one it lists without a Modality
    counts): what the study is fused from, so an instance added to another series (this tool's fused series, stored
    back) is no change to it."""
    with _calling(client.base_url, f"QIDO-RS instance search of study {study.key}"):
        results = _search_all(client.search_for_instances, SOP_UID, study_instance_uid=study.uid,
                              fields=["SOPInstanceUID", "Modality"])
    uids = sorted(_value(result, SOP_UID)[0] for result in results if set(_value(result, MODALITY)) <= PAIRED)
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()


def _record(folder: Path) -> Path:
    """``<study key>.json`` beside a fetched study's folder: where it came from and what the PACS listed of it then
    (:func:`fetch_study`), written once it is complete."""
    return folder.with_name(f"{folder.name}.json")


def _fetched(folder: Path) -> dict | None:
    """The record of a completely fetched study folder; None when it is not one."""
    try:
        record = json.loads(_record(folder).read_text()) if folder.is_dir() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "source" in record else None


def fetched_from(folder: Path) -> str | None:
    """The DICOMweb root a study folder was fetched from; None when it is not completely fetched."""
    record = _fetched(folder)
    return None if record is None else record["source"]


def _write_record(folder: Path, record: Mapping[str, object]) -> None:
    """Replace a study's record atomically: a killed run leaves the old one or the new, never a torn one."""
    with atomic_write(_record(folder)) as temporary:
        temporary.write_text(json.dumps(record) + "\n")


def fetch_study(client: DICOMwebClient, study: RemoteStudy, into: Path) -> Path:
    """Fetch one study by WADO-RS into ``into/<study key>/`` (instance files); kept while the PACS lists it the same.

    A study fetched before is kept when QIDO-RS gives the instance count it gave then, or else lists the same CT and
    PET instances (:func:`_source_listing`); one that changed (instances still arriving when it was fetched) is
    fetched again, whole, so it is not fused from part of its data. Each instance is written as the reply streams in,
    so memory holds one instance, not the study. They go into a private hidden folder in ``into``, are checked against
    the instance count QIDO-RS gave, and are moved in whole; the record of their source, written last, marks the study
    complete, so a study cut short or left by a killed run is fetched again.
    """
    folder = into / study.key
    record = _fetched(folder)
    if record is not None and study.instances is not None and record.get("instances") == study.instances:
        return folder
    listed = _source_listing(client, study)
    if record is not None and record.get("listed") == listed:  # e.g. its fused series stored into the study
        _write_record(folder, {**record, "instances": study.instances})
        return folder
    if record is not None:
        logger.info("study %s changed on %s since it was fetched: fetched again", study.key, client.base_url)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=into))
    try:
        count = 0
        with _calling(client.base_url, f"WADO-RS retrieve of study {study.key}"):
            for count, dataset in enumerate(client.iter_study(study.uid), 1):
                dataset.save_as(staging / f"{count - 1:05d}.dcm", enforce_file_format=True)
        if count < (study.instances or 1):
            raise DcifError(f"{client.base_url}: WADO-RS gave {count} instances of study {study.key}, "
                            f"QIDO-RS listed {study.instances or 'at least one'}")
        _record(folder).unlink(missing_ok=True)  # the copy it replaces is no longer complete
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_record(folder, {"source": client.base_url, "instances": study.instances, "listed": listed})
    return folder


def store_instances(client: DICOMwebClient, paths: Sequence[Path]) -> None:
    """STOW-RS the DICOM files ``paths`` (e.g. a study's fused series) into the PACS; any instance it refuses (HTTP 202
    with a FailedSOPSequence) fails the whole store, and the instances stored before it stay (the same UIDs stored
    again replace them).

    One request per file: a study's fused series, a multi-frame object each, reach hundreds of MB, and one request for
    all of them held every file twice in memory at once. Each body goes in one piece: dicomweb-client sends one over
    its chunk size from a generator, which its retry after a 503 finds spent, so the retry would send an empty body.
    """
    client.set_chunk_size(sys.maxsize)
    try:
        refused = 0
        for path in paths:
            with _calling(client.base_url, "STOW-RS store"):
                reply = client.store_instances([pydicom.dcmread(path)])
            refused += len(reply.get("FailedSOPSequence") or [])
    finally:
        client.set_chunk_size(STREAM_CHUNK)
    if refused:
        raise DcifError(f"{client.base_url}: STOW-RS refused {refused} of {len(paths)} instances")
