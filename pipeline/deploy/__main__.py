"""``python -m pipeline.deploy``: the entry point the container and the SDK's packager run."""

try:
    from pipeline.deploy.app import main
except ModuleNotFoundError as error:  # the core install: say which extra is missing, not a traceback
    if not (error.name or "").startswith(("monai.deploy", "holoscan", "highdicom")):
        raise
    raise SystemExit(f"dcif-deploy: error: {error.name} is missing: install the deploy extra, "
                     "pip install -e '.[deploy]'") from None

raise SystemExit(main())
