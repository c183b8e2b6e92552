"""The files a fused study becomes, written as it streams: NIfTI volumes, derived DICOM series, a preview.

Each is a :class:`~pipeline.fusion.streaming.StudySink`: it opens one streaming writer per fused
channel (:class:`~pipeline.io.nifti.NiftiSliceWriter`, :class:`~pipeline.io.derived_series.DerivedSeriesWriter`)
and appends each slab, so no whole fused volume is ever held. The CLI, the batch job and the
deploy app write through these, so a study's outputs are named and built the same whichever door
it came in by. :class:`NiftiSink`, the one writer every door (demo, fuse-batch, deploy app, bundle
inference) writes a study's NIfTI through, is also where a study folder is tidied and recorded: it
removes the temporaries a killed run left there before writing, and after writing records what made
the volumes in their headers and in the folder's ``fused.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset

from pipeline.fusion.streaming import FusedSlab, FusedStudy, StudySink, fused_filename
from pipeline.io.derived_series import (
    COLOUR_SERIES_OFFSET,
    FUSED_FILE,
    FUSED_SERIES_NUMBER,
    DerivedSeriesWriter,
    Provenance,
    colour_folder_name,
    dicom_folder_name,
    grey_frames,
)
from pipeline.io.atomic import IDLE_TEMPORARY_S, atomic_write, clear_partial_files
from pipeline.io.nifti import NiftiSliceWriter
from pipeline.provenance import SOFTWARE_VERSION
from pipeline.transforms.slicing import flagged_slices, spread_slices
from pipeline.visualization.colour import colour_fusion
from pipeline.visualization.panels import column_labels
from pipeline.visualization.preview import DEFAULT_PREVIEW_SLICES, with_hottest, write_preview

logger = logging.getLogger(__name__)
MANIFEST_FILE = "fused.json"


def nifti_description(method: str, window: str, version: str) -> str:
    """A fused NIfTI's header ``descrip``: product version, method, window and the weights' digest (``version``, see
    :func:`~pipeline.provenance.fuser_version`). No time in it, so a volume made again is the same bytes, whichever
    door made it. NIfTI keeps 80 characters, which every method and window with a digest fit (tested)."""
    return f"{SOFTWARE_VERSION} {method} {window} {version}"


class _ChannelWriters(StudySink):
    """Holds one streaming writer per output file, all entered and left together."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def writers(self) -> list:
        raise NotImplementedError

    def __enter__(self) -> _ChannelWriters:
        self._writers = ExitStack()
        self._open = [self._writers.enter_context(writer) for writer in self.writers()]
        return self

    def __exit__(self, *exc: object) -> bool | None:
        self._writers.__exit__(*exc)
        if exc[0] is None:
            self.paths = [writer.path for writer in self._open]
        return None


class NiftiSink(_ChannelWriters):
    """``folder/fused_<method>_<window>.nii.gz`` for every fused channel, float32 on the CT's RAS affine, and
    ``folder/fused.json``, the record of the run that wrote them.

    Entering removes the temporaries a killed run left in ``folder`` (they would never be removed otherwise). Each
    volume's header says what made it (:func:`nifti_description`). ``fused.json`` is written last, atomically, on a
    clean exit: product version, each method's weights digest, windows, SUV ceiling, the files written, the
    time, and as ``stale`` this tool's volumes and derived DICOM series in ``folder`` that this run did not write.
    Those are kept, not deleted: they are complete outputs of an earlier run (another window, method or model: their
    headers say which), and nothing made is lost; the record and one warning keep them from passing for this run's.
    """

    def __init__(self, study: FusedStudy, folder: str | Path) -> None:
        super().__init__()
        self.study, self.folder = study, Path(folder)

    def writers(self) -> list[NiftiSliceWriter]:
        affine = np.asarray(self.study.data["ct"].affine, dtype=float)
        return [NiftiSliceWriter(self.folder / fused_filename(window, method), self.study.shape, affine,
                                 nifti_description(method, window, self.study.versions[method]))
                for window, method in self.study.names]

    def __enter__(self) -> NiftiSink:
        clear_partial_files(self.folder, IDLE_TEMPORARY_S)  # not a live run's, writing into this folder too
        return super().__enter__()

    def add(self, slab: FusedSlab) -> None:
        for channel, writer in enumerate(self._open):
            writer.write(slab.fused[channel].numpy())

    def __exit__(self, *exc: object) -> bool | None:
        super().__exit__(*exc)
        if exc[0] is None:
            self._record()
        return None

    def _record(self) -> None:
        """Write ``fused.json`` for the volumes just written, naming (and warning of) earlier ones kept beside them:
        NIfTI volumes, and derived DICOM series (``dicom_*``/``colour_*`` folders) of other methods or windows (a
        deploy app's OUTPUT_DIR reused for another study kept the last patient's series there, unmarked)."""
        written = [path.name for path in self.paths]
        this_run = {*written, *(name(method, window) for window, method in self.study.names
                                for name in (dicom_folder_name, colour_folder_name))}
        earlier = [*self.folder.glob(fused_filename("*", "*")),
                   *(path.parent for name in (dicom_folder_name, colour_folder_name)
                     for path in self.folder.glob(f"{name('*', '*')}/{FUSED_FILE}"))]
        stale = sorted(path.name for path in earlier if path.name not in this_run)
        if stale:
            logger.warning("%s: %d fused volume(s) or series an earlier run wrote are kept, listed as stale in %s: %s",
                           self.folder, len(stale), MANIFEST_FILE, ", ".join(stale))
        record = {"software_version": SOFTWARE_VERSION, "methods": self.study.versions,
                  "windows": self.study.windows, "suv_max": self.study.suv_max, "written": written, "stale": stale,
                  "created": datetime.now().astimezone().isoformat(timespec="seconds")}
        with atomic_write(self.folder / MANIFEST_FILE) as temporary:
            temporary.write_text(json.dumps(record, indent=2) + "\n")


class DicomSink(_ChannelWriters):
    """A grey derived series per fused channel in the CT's study, and its hot-iron colour rendering.

    Headers: the source CT and PET slices the loader read with the pixels (``ct_headers`` and
    ``pet_headers`` of the study's data), so no file is read again. One sub-folder per window and
    method (``dicom_*``, and ``colour_*`` with ``colour``), series numbers from
    ``FUSED_SERIES_NUMBER`` up; every series gets the same fusion date and time.
    """

    def __init__(self, study: FusedStudy, folder: str | Path, colour: bool = True) -> None:
        super().__init__()
        self.study, self.folder, self.colour = study, Path(folder), colour
        self.ct_headers: Sequence[Dataset] = study.data["ct_headers"]
        self.pet_headers: Sequence[Dataset] = study.data["pet_headers"]

    def writers(self) -> list[DerivedSeriesWriter]:
        created = datetime.now().astimezone()
        where = str(self.study.data["ct"].meta.get("filename_or_obj", "fused volume"))
        pet = self.study.data["pet"].meta
        pet_scaling, suv_factor = str(pet.get("pet_scaling", "SUVbw")), repr(pet.get("suv_factor", ""))
        writers = []
        for number, (window, method) in enumerate(self.study.names, start=FUSED_SERIES_NUMBER):
            provenance = Provenance(method, window, self.study.versions[method], self.study.suv_max, pet_scaling,
                                    suv_factor, created=created)
            series = [(dicom_folder_name(method, window), number, False)]
            if self.colour:
                series.append((colour_folder_name(method, window), number + COLOUR_SERIES_OFFSET, True))
            writers += [DerivedSeriesWriter(self.ct_headers, self.pet_headers, self.folder / name, provenance,
                                            series_number, self.study.shape, colour=colour, where=where)
                        for name, series_number, colour in series]
        return writers

    def add(self, slab: FusedSlab) -> None:
        writers = iter(self._open)
        pet = slab.image[-1:]
        for channel in range(slab.fused.shape[0]):
            grey = slab.fused[channel : channel + 1]
            next(writers).write(grey_frames(grey[0].numpy()))
            if self.colour:
                next(writers).write(colour_fusion(grey, pet))


class PreviewSink(StudySink):
    """The study's preview PNG (:mod:`pipeline.visualization.preview`): a few body slices, kept as they pass.

    The slices are those :func:`~pipeline.visualization.preview.preview_slices` picks, found on the
    fly: the evenly spread ones are known up front, the hottest PET slice once every slab has passed.
    """

    def __init__(self, study: FusedStudy, path: str | Path) -> None:
        self.path = Path(path)
        self.labels = column_labels(study.windows[0], ((method, window) for window, method in study.names),
                                    pet="PET on CT")
        self.candidates = flagged_slices(study.data["body_slices"]) or list(range(study.shape[-1]))
        self.spread = spread_slices(self.candidates, DEFAULT_PREVIEW_SLICES)
        self._kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._hottest: tuple[float, int] | None = None

    def _keep(self, slab: FusedSlab, z: int) -> None:
        self._kept[z] = (slab.image[..., z - slab.start].clone(), slab.fused[..., z - slab.start].clone())

    def add(self, slab: FusedSlab) -> None:
        peaks = slab.image[-1].amax(dim=(0, 1))
        for z in (z for z in self.candidates if slab.start <= z < slab.stop):
            if z in self.spread:
                self._keep(slab, z)
            peak = float(peaks[z - slab.start])
            if self._hottest is None or peak > self._hottest[0]:  # the first of equally hot slices, as max() picks
                if self._hottest is not None and self._hottest[1] not in self.spread:
                    del self._kept[self._hottest[1]]
                self._hottest = (peak, z)
                self._keep(slab, z)

    def __exit__(self, *exc: object) -> bool | None:
        if exc[0] is None:
            slices = with_hottest(self.spread, self._hottest[1])
            image = torch.stack([self._kept[z][0] for z in slices], dim=-1)
            fused = torch.stack([self._kept[z][1] for z in slices], dim=-1)
            write_preview(self.path, image[:1], image[-1:], [fused[c : c + 1] for c in range(fused.shape[0])],
                          range(len(slices)), labels=self.labels)
        return None
