"""One study of a batch, start to finish: the unit of work every executor runs, locally or on Ray.

Fuse, score, write NIfTI, DICOM series and preview (all in one streamed pass), then ``done.json``.
Any exception is caught here and becomes a failed result with a one-line reason, and the study's
partial outputs are removed: one bad study never stops a batch nor leaves half a folder behind.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.batch.layout import PREVIEW_FILE, clear_study, mark_done, study_folder
from pipeline.batch.report import FAILED, OK, STAGES, Locator, PathRedaction, StudyResult, redacted_logs
from pipeline.batch.scoring import DEFAULT_METRIC_SLICES, StudyScorer
from pipeline.errors import error_line
from pipeline.fusion.registry import Fuser
from pipeline.fusion.selection import build_fusers
from pipeline.fusion.streaming import fuse_study
from pipeline.fusion.writers import DicomSink, NiftiSink, PreviewSink
from pipeline.io.derived_series import source_digest
from pipeline.io.discovery import StudyPair
from pipeline.provenance import fuser_versions
from pipeline.transforms.data_path import DEFAULT_WINDOWS
from pipeline.transforms.windowing import DEFAULT_SUV_MAX


@dataclass(frozen=True)
class BatchOptions:
    """How every study of a batch is fused (picklable: it travels to worker processes and Ray tasks)."""

    methods: tuple[str, ...]
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    device: str = "cpu"
    checkpoint: str | None = None
    suv_max: float = DEFAULT_SUV_MAX
    sw_batch_size: int = 8
    metric_slices: int = DEFAULT_METRIC_SLICES  # 0: every body slice
    progress: bool = False
    pet_factor: float | None = None  # pixels x factor = SUVbw, replacing the PET's units (e.g. counts)


@dataclass(frozen=True)
class StudyTask:
    """One study to fuse, where to write it, how to name its inputs, and its share of the discovery time."""

    pair: StudyPair
    locator: Locator
    out_dir: Path
    options: BatchOptions
    discover_s: float = 0.0

    def result(self, status: str, reason: str = "", **values: object) -> StudyResult:
        """This study's row, its inputs named by the locator (no patient data)."""
        return StudyResult(key=self.pair.study_key, status=status, location=self.locator.location(self.pair.ct.folder),
                           reason=self.locator.redact(reason), slices=self.pair.ct.n_slices,
                           duplicate_instances=self.pair.ct.duplicates + self.pair.pet.duplicates,
                           ct_slices_without_pet=self.pair.ct_slices_without_pet, **values)

    def failed(self, reason: str) -> StudyResult:
        """The failed result of this study, with a one-line reason."""
        return self.result(FAILED, reason)


def made_with(options: BatchOptions, fusers: Mapping[str, Fuser]) -> dict[str, object]:
    """What a study's outputs depend on besides its files: each fuser's version (a model's weights), the windows,
    the SUV ceiling, a PET factor and how many slices its report scores. A finished study made otherwise is redone,
    not skipped."""
    return {"methods": fuser_versions(fusers), "windows": list(options.windows), "suv_max": options.suv_max,
            "pet_factor": options.pet_factor, "metric_slices": options.metric_slices}


def input_files(pair: StudyPair) -> str:
    """The :func:`~pipeline.io.derived_series.source_digest` of the series a study is fused from, as discovery found
    them: a study exported again with slices added, removed or replaced is redone, not taken as finished, as the
    UIDs of its derived series change."""
    return source_digest((series.series_uid, series.instances, series.positions) for series in (pair.ct, pair.pet))


@functools.lru_cache(maxsize=1)
def cached_fusers(methods: tuple[str, ...], checkpoint: str | None, device: str) -> Mapping[str, Fuser]:
    """Fusers built once per process: a model checkpoint is loaded once, not once per study."""
    return build_fusers(methods, checkpoint=checkpoint, device=device)


def _fuse_and_write(task: StudyTask, folder: Path) -> StudyResult:
    """Fuse the study slab by slab into its NIfTI, grey and colour DICOM series and preview, scoring as it goes."""
    options = task.options
    fusers = cached_fusers(options.methods, options.checkpoint, options.device)
    result = fuse_study(task.pair, fusers, options.windows, suv_max=options.suv_max, device=options.device,
                        sw_batch_size=options.sw_batch_size, progress=options.progress, pet_factor=options.pet_factor)
    scorer = StudyScorer(result, options.metric_slices)
    result.stream([NiftiSink(result, folder), DicomSink(result, folder), scorer,
                   PreviewSink(result, folder / PREVIEW_FILE)])
    timings = {"discover": task.discover_s, **result.timings}
    ordered = {stage: timings[stage] for stage in STAGES if stage in timings}
    return task.result(OK, timings=ordered, metrics=scorer.scores,
                       pet_scaling=str(result.data["pet"].meta["pet_scaling"]),
                       made_with={**made_with(options, fusers), "inputs": input_files(task.pair),
                                  "pet_header": task.pair.pet.suv_header})


def process_study(task: StudyTask) -> StudyResult:
    """Fuse one study into ``OUT/<study_key>/`` and mark it done; never raises for a bad study.

    A folder left by an interrupted run is removed first, so the study is redone from scratch. Its warnings name
    inputs as the report does, in whichever process it runs.
    """
    folder = study_folder(task.out_dir, task.pair.study_key)
    clear_study(folder)
    with redacted_logs(PathRedaction(task.locator)):
        try:
            outcome = _fuse_and_write(task, folder)
            mark_done(folder, outcome)
            return outcome
        except Exception as error:  # any failure on one study's data (ours or a library's) must not stop the batch
            clear_study(folder)
            return task.failed(error_line(error))
