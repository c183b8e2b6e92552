"""A PACS over DICOMweb: find PET/CT studies (QIDO-RS), fetch them (WADO-RS), store results (STOW-RS).

Built on ``dicomweb-client``. Credentials come from the environment or a file, never from the
command line, so they reach neither the shell history nor the logs: ``DCIF_DICOMWEB_USER`` and
``DCIF_DICOMWEB_PASSWORD``, or ``DCIF_DICOMWEB_CREDENTIALS``, the path of a file holding
``user:password`` on its first line. Studies are written under a folder named by the hash of their
StudyInstanceUID, so the folder batch reads them as any export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session, create_session_from_user_pass

from pipeline.errors import DcifError, InputError
from pipeline.io.headers import study_key

USER_ENV, PASSWORD_ENV, CREDENTIALS_ENV = "DCIF_DICOMWEB_USER", "DCIF_DICOMWEB_PASSWORD", "DCIF_DICOMWEB_CREDENTIALS"
STUDY_UID, MODALITIES_IN_STUDY = "0020000D", "00080061"
PAIRED = {"CT", "PT"}
MAX_STUDIES = 10_000  # one query never pages further than this


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
    """A client for ``url`` with the credentials the environment names (none: anonymous)."""
    credentials = _credentials(environ)
    session = create_session_from_user_pass(*credentials) if credentials else create_session()
    return DICOMwebClient(url, session=session)


def _value(result: Mapping, tag: str) -> list:
    return result.get(tag, {}).get("Value", [])


@contextlib.contextmanager
def _calling(url: str, action: str) -> Iterator[None]:
    """Turn the HTTP layer's errors into one line naming the endpoint and what failed (never the credentials)."""
    try:
        yield
    except requests.RequestException as error:
        status = getattr(error.response, "status_code", None)
        raise DcifError(f"{url}: {action} failed ({status or type(error).__name__})") from None


def find_studies(client: DICOMwebClient, query: Mapping[str, str]) -> list[str]:
    """StudyInstanceUIDs matching the QIDO-RS ``query`` whose study holds both a CT and a PET series."""
    with _calling(client.base_url, "QIDO-RS study search"):
        results = client.search_for_studies(search_filters=dict(query), fields=["ModalitiesInStudy"],
                                            limit=MAX_STUDIES)
    return [_value(result, STUDY_UID)[0] for result in results
            if PAIRED <= set(_value(result, MODALITIES_IN_STUDY)) and _value(result, STUDY_UID)]


def fetch_study(client: DICOMwebClient, study_uid: str, into: Path) -> Path:
    """Fetch one study by WADO-RS into ``into/<study key>/`` (instance files); kept when fetched before.

    The files are written into a sibling staging folder first and moved in whole, so ``into``
    holds complete studies only, even after a killed run.
    """
    folder = into / study_key(study_uid)
    if folder.is_dir():
        return folder
    staging = into.parent / f"{into.name}-partial" / folder.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with _calling(client.base_url, f"WADO-RS retrieve of study {folder.name}"):
        instances = client.retrieve_study(study_uid)
    for index, dataset in enumerate(instances):
        dataset.save_as(staging / f"{index:05d}.dcm", enforce_file_format=True)
    into.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)
    return folder


def store_instances(client: DICOMwebClient, paths: Sequence[Path]) -> None:
    """STOW-RS the DICOM files ``paths`` (e.g. a study's fused series) into the PACS."""
    if paths:
        with _calling(client.base_url, "STOW-RS store"):
            client.store_instances([pydicom.dcmread(path) for path in paths])
