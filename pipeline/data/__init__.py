"""Datalists of studies for the bundle's workflows, and the 2-D slice pairs training draws from."""

from pipeline.data.datalist import load_datalist, phantom_datalist, split_by_study
from pipeline.data.slices import slice_pairs

__all__ = ["load_datalist", "phantom_datalist", "slice_pairs", "split_by_study"]
