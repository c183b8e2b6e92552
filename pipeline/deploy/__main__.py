"""``python -m pipeline.deploy``: the entry point the container and the SDK's packager run."""

from pipeline.deploy import SDK, sdk_installed

if not sdk_installed():  # the core install: say which extra is missing, not a traceback
    raise SystemExit(f"dcif-deploy: error: {SDK} is missing: install the deploy extra, pip install -e '.[deploy]'")

from pipeline.deploy.app import main  # noqa: E402 - only once the SDK is known to be there

raise SystemExit(main())
