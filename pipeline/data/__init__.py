"""Datalists of studies for the bundle's workflows, their preprocessed cache, and the 2-D slice pairs
training draws from."""

from pipeline.data.datalist import SPLIT_DEFAULTS, load_datalist, phantom_datalist, split_by_study, training_split
from pipeline.data.slices import SlicePairDataset, body_slice_cache
from pipeline.data.study_cache import LoadCachedStudyd, cache_studies, load_cached_datalist
from pipeline.data.workflow_inputs import (
    datalist_description,
    default_dataset_dir,
    workflow_datalist,
    workflow_preprocessing,
)

__all__ = ["SPLIT_DEFAULTS", "LoadCachedStudyd", "SlicePairDataset", "body_slice_cache", "cache_studies",
           "datalist_description", "default_dataset_dir", "load_cached_datalist", "load_datalist",
           "phantom_datalist", "split_by_study", "training_split", "workflow_datalist", "workflow_preprocessing"]
