"""Batch fusion of a DICOM export: the study-by-study job, its report, resume, and local or Ray executors."""

from pipeline.batch.executors import LocalExecutor, RayExecutor, make_executor
from pipeline.batch.job import run_batch
from pipeline.batch.report import BatchReport, StudyResult
from pipeline.batch.task import BatchOptions

__all__ = ["BatchOptions", "BatchReport", "LocalExecutor", "RayExecutor", "StudyResult", "make_executor", "run_batch"]
