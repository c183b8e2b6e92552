"""The MONAI Deploy application (DICOM in, DICOM out); needs the ``deploy`` extra.

Nothing outside this package imports it, so the core install never pulls in the SDK.
Entry point: ``python -m pipeline.deploy`` (:mod:`pipeline.deploy.app`).
"""
