"""Synthetic thorax FDG-PET/CT studies: the project's built-in default data and test fixture.

``make_phantom(out_dir, ...)`` writes a CT and a PET DICOM series (plus NIfTI copies and a
``truth.json`` of the designed values) of one anatomically plausible thorax with a lung tumour.
"""

from pipeline.phantom.export import PhantomStudy, make_phantom

__all__ = ["PhantomStudy", "make_phantom"]
