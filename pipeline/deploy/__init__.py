"""The MONAI Deploy application (DICOM in, DICOM out); needs the ``deploy`` extra.

Nothing outside this package imports it, so the core install never pulls in the SDK.
Entry point: ``python -m pipeline.deploy`` (:mod:`pipeline.deploy.app`).
"""

from importlib.metadata import PackageNotFoundError, distribution

SDK = "monai-deploy-app-sdk"
"""The SDK's distribution, which the ``deploy`` extra installs."""


def sdk_installed() -> bool:
    """Whether the SDK is installed, asked of the installed metadata: importing it to find out takes ~10 s (it
    imports all of MONAI)."""
    try:
        distribution(SDK)
    except PackageNotFoundError:
        return False
    return True
