"""Shared fixtures: where the real PET/CT studies live, skipping cleanly when they do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_petct_path() -> Path:
    """Folder of the real public PET/CT studies (``DCIF_SHARED_DATA`` overrides the default)."""
    return Path(os.environ.get("DCIF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data" / "petct"))


@pytest.fixture(scope="session")
def shared_petct() -> Path:
    """The real studies' folder, or a skip saying why tests on real data did not run."""
    path = shared_petct_path()
    if not path.is_dir():
        pytest.skip(f"real PET/CT studies not found at {path} (set DCIF_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def suv_dro() -> Path:
    """The SUV digital reference objects' ``DRO`` folder (``DCIF_SUV_DRO`` overrides), or a skip saying why."""
    path = Path(os.environ.get("DCIF_SUV_DRO", REPO_ROOT.parent / "shared" / "data" / "suv_dro" / "DRO"))
    if not path.is_dir():
        pytest.skip(f"SUV reference objects not found at {path} (set DCIF_SUV_DRO)")
    return path


TINY_PHANTOM = {"size": (64, 64, 16), "spacing": (6.0, 6.0, 8.0)}
"""A whole thorax in few voxels: big enough for every anatomy, small enough for seconds-long tests."""


@pytest.fixture(scope="session")
def tiny_geometry() -> dict:
    """Shape and spacing (mm) of the tiny phantom CT."""
    return dict(TINY_PHANTOM)


@pytest.fixture(scope="session")
def tiny_phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny phantom studies ``seed_000`` and ``seed_001``, made once per test session.

    Made here, not on first use of a datalist: a workflow pointed at an empty folder would fill it
    with full-size phantoms under the same seeds.
    """
    from pipeline.data import phantom_datalist

    root = tmp_path_factory.mktemp("tiny_phantoms")
    phantom_datalist(root, n_studies=2, **TINY_PHANTOM)
    return root


@pytest.fixture(scope="session")
def tiny_datalist(tiny_phantom_root: Path) -> list[dict]:
    """The two tiny phantom studies (seeds 0 and 1) as a datalist."""
    from pipeline.data import phantom_datalist

    return phantom_datalist(tiny_phantom_root, n_studies=2, **TINY_PHANTOM)


@pytest.fixture(scope="session")
def tiny_study_cache(tmp_path_factory: pytest.TempPathFactory, tiny_datalist: list[dict]) -> Path:
    """The two tiny phantoms as a study cache: seed 0 for training, seed 1 held out for validation."""
    from pipeline.data import cache_studies

    folder = tmp_path_factory.mktemp("tiny_cache")
    splits = [{**study, "split": split, "origin": "phantom"} for study, split in zip(tiny_datalist, ("train", "val"))]
    cache_studies(splits, folder, progress=False)
    return folder


def _whole_volume_fusion(study: dict, fusers: dict, windows=("lung", "mediastinal")) -> dict:
    """``{(window, method): (1, X, Y, Z)}``: the whole study preprocessed at once, then every slice fused."""
    from pipeline.fusion import FusionNetwork, fuse_volume
    from pipeline.transforms.data_path import study_preprocessing
    from pipeline.transforms.resample import blank_uncovered

    data = study_preprocessing(windows)(dict(study))
    network = FusionNetwork(fusers, windows)
    fused = blank_uncovered(fuse_volume(network, data["image"]), data["pet_slices"])
    return {name: fused[i : i + 1] for i, name in enumerate(network.channels)}


@pytest.fixture(scope="session")
def whole_volume_fusion():
    """The bundle's way of fusing a study (no slabs): the oracle the streamed front doors must reproduce."""
    return _whole_volume_fusion



# A patient's identifiers, as hospital exports carry them in headers and in folder and file names.
PLANTED_TAGS = {"PatientName": "DOE^JOHN", "PatientID": "MRN4711", "PatientBirthDate": "19450102",
                "AccessionNumber": "ACC998877"}
PLANTED = (*PLANTED_TAGS.values(), "DOE")


@pytest.fixture(scope="session")
def planted_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export folder holding one tiny study whose headers, folder and file names carry :data:`PLANTED_TAGS`.

    The study's own folder (``CT/`` and ``PET/`` inside) is ``<export>/DOE^JOHN_MRN4711/19450102_ACC998877``.
    """
    import pydicom

    from pipeline.phantom import make_phantom

    root = tmp_path_factory.mktemp("planted")
    make_phantom(root / "phantom", ct_shape=TINY_PHANTOM["size"], ct_spacing=TINY_PHANTOM["spacing"], seed=5,
                 write_nifti=False)
    tags = PLANTED_TAGS
    study = root / "export" / f"{tags['PatientName']}_{tags['PatientID']}" / f"{tags['PatientBirthDate']}_{tags['AccessionNumber']}"
    study.parent.mkdir(parents=True)
    (root / "phantom" / "dicom").rename(study)
    for path in sorted(study.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path.with_name(f"{tags['PatientID']}_{path.name}"))
        path.unlink()
    return root / "export"


def _gzip_header(data: bytes) -> bytes:
    """A gzip file's header up to the end of its stored file name and comment (RFC 1952): its only text outside the
    compressed content."""
    flags, end = data[3], 10
    if flags & 4:  # FEXTRA
        end += 2 + int.from_bytes(data[10:12], "little")
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = data.index(b"\0", end) + 1
    return data[:end]


def _png_without_pixels(data: bytes) -> bytes:
    """A PNG file's chunks (their types and data: text, size, palette) but the compressed pixels (IDAT)."""
    kept, at = [data[:8]], 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        kept.append(kind if kind == b"IDAT" else data[at + 4 : at + 8 + length])
        at += 12 + length
    return b"".join(kept)


def _readable_text(path: Path) -> str:
    """What a reader of the file could find text in: a gzip file's header and content, not its compressed bytes,
    of a NIfTI volume its header and extensions, not its voxels, and of a PNG picture every chunk but its compressed
    pixels. Those bytes spell a short name such as "DOE" by chance (a 200 kB compressed volume did, and a slice
    picture), and no identifier can hide in them."""
    import gzip

    import nibabel

    data, header = path.read_bytes(), b""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_without_pixels(data).decode("latin-1")
    if data[:2] == b"\x1f\x8b":
        data, header = gzip.decompress(data), _gzip_header(data)
    if path.name.endswith((".nii", ".nii.gz")):
        data = data[: int(nibabel.load(path).dataobj.offset)]
    return (header + data).decode("latin-1")


def _identifiers_in(*places: Path | str) -> list[str]:
    """The planted identifiers found in texts, or in any file under the given folders but DICOM (see _readable_text)."""
    texts = []
    for place in places:
        if isinstance(place, Path):
            for path in (p for p in sorted(place.rglob("*")) if p.is_file() and p.suffix != ".dcm"):
                texts += [str(path.relative_to(place)), _readable_text(path)]
        else:
            texts.append(place)
    return sorted({planted for text in texts for planted in PLANTED if planted in text})


@pytest.fixture(scope="session")
def identifiers_in():
    """``identifiers_in(folder_or_text, ...)``: which planted identifiers reached files meant to be shared."""
    return _identifiers_in
