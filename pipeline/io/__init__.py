"""Bytes <-> volumes: nothing outside this package reads or writes image files.

Modules: ``discovery`` (find studies and their PET/CT pair), ``dicom`` and ``nifti`` (load a volume),
``study`` (load both volumes of a study), ``atomic`` (safe file replacement). Import from the modules
themselves: re-exporting here would make every ``pipeline.io.atomic`` user import torch and MONAI.
"""
