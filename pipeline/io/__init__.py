"""Bytes <-> volumes: nothing outside this package reads or writes image files.

Modules: ``discovery`` (find studies and their PET/CT pair), ``headers`` (one DICOM file read or written), ``dicom``
and ``nifti`` (load a volume), ``study_source`` (a study's sources, whatever form it came in), ``patient_space``
(DICOM's LPS and MONAI's RAS), ``rtstruct`` (tumour contours as masks), ``derived_series`` (the fused DICOM
series), ``dicomweb`` (a PACS over DICOMweb), ``atomic`` (safe file replacement). Import from the modules
themselves: re-exporting here would make every ``pipeline.io.atomic`` user import torch and MONAI.
"""
