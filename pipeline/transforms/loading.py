"""Loading as the first step of a MONAI transform chain, so a bundle config can start from a study."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.errors import InputError
from pipeline.io.study_source import STUDY_MODALITIES, StudySource, read_volume, study_sources


class LoadStudyd(MapTransform):
    """Replace the sources under ``keys`` by loaded volumes; a StudyPair/NiftiPair is accepted as the data.

    ``modalities`` maps each key to the modality a NIfTI file holds (DICOM headers name their own);
    the defaults cover ``"ct"`` and ``"pet"``. ``keep_headers`` also puts each DICOM series' slice
    headers (pixel data dropped; empty for NIfTI) under ``<key>_headers``, for the writers of derived
    series, so no file is read twice; they hold patient identifiers and do not collate, so a
    bundle's data loader leaves them out.
    """

    def __init__(self, keys: KeysCollection = ("ct", "pet"), modalities: Mapping[str, str] | None = None,
                 allow_missing_keys: bool = False, keep_headers: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.keep_headers = keep_headers
        self.modalities = {**STUDY_MODALITIES, **(modalities or {})}
        unknown = [k for k in self.keys if k not in self.modalities]
        if unknown:
            raise ValueError(f"no modality given for keys {unknown}; pass modalities={{key: 'CT' or 'PT'}}")

    def __call__(self, data: StudySource) -> dict[Hashable, object]:
        d = study_sources(data)
        missing = [key for key in self.keys if key not in d]
        if missing and not self.allow_missing_keys:  # a datalist entry without its PET, say: one line, not a KeyError
            raise InputError(f"study description has no {missing[0]!r} entry (keys: {sorted(map(str, d))})")
        for key in self.key_iterator(d):
            d[key], headers = read_volume(d[key], self.modalities[key])
            if self.keep_headers:
                d[f"{key}_headers"] = headers
        return d
