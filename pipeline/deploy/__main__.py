"""``python -m pipeline.deploy``: the entry point the container and the SDK's packager run."""

from importlib.metadata import PackageNotFoundError, distribution

SDK = "monai-deploy-app-sdk"

try:  # asked of the installed metadata: importing the SDK to find out takes ~10 s (it imports all of MONAI)
    distribution(SDK)
except PackageNotFoundError:  # the core install: say which extra is missing, not a traceback
    raise SystemExit(f"dcif-deploy: error: {SDK} is missing: install the deploy extra, "
                     "pip install -e '.[deploy]'") from None

from pipeline.deploy.app import main  # noqa: E402 - only once the SDK is known to be there

raise SystemExit(main())
