"""Batch fusion of a DICOM export: the study-by-study job, its report, resume, and local or Ray engines."""

from pipeline.batch.engines import LocalEngine, RayEngine, make_engine
from pipeline.batch.job import run_batch
from pipeline.batch.report import BatchReport, StudyResult
from pipeline.batch.study import BatchOptions

__all__ = ["BatchOptions", "BatchReport", "LocalEngine", "RayEngine", "StudyResult", "make_engine", "run_batch"]
