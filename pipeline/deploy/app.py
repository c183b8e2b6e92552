"""The DCIF-GAN fusion MONAI Deploy application: a PET/CT DICOM study in, fused DICOM series out.

    HeaderOnlyLoaderOperator -> PetCtSeriesSelectorOperator -> FusionOperator -> FusedDicomWriterOperator

Run as ``python -m pipeline.deploy -i INPUT_DICOM_DIR -o OUTPUT_DIR [-m MODEL_PATH]``; the SDK's
HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH stand in for missing options.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, suppress
from pathlib import Path

import monai.deploy
import torch
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.core.arg_parser import parse_args, set_up_logging
from monai.deploy.core.runtime_env import RuntimeEnv

from pipeline.batch.layout import location_key
from pipeline.batch.report import Locator, PathRedaction
from pipeline.bundle_model import (
    BUNDLE_ENV,
    INFERENCE_CONFIG,
    bundled_checkpoint,
    bundled_network,
    default_bundle,
    is_bundle,
)
from pipeline.deploy.operators import (
    FUSED_PORT,
    SELECTION_PORT,
    FusedDicomWriterOperator,
    FusionOperator,
    HeaderOnlyLoaderOperator,
    PetCtSeriesSelectorOperator,
)
from pipeline.errors import TRACEBACK_ENV, CheckpointError, InputError, error_line
from pipeline.fusion.registry import Fuser
from pipeline.fusion.selection import BASELINE_FALLBACK, build_fusers, default_method
from pipeline.io.atomic import IDLE_TEMPORARY_S, clear_partial_files
from pipeline.io.derived_series import colour_folder_name, dicom_folder_name

logger = logging.getLogger(__name__)

SDK_SOURCE = Path(monai.deploy.__file__).parent
MODELS_ENV = RuntimeEnv.ENV_DEFAULT["model"][0]  # HOLOSCAN_MODEL_PATH: where the packager puts the models

# The folders by role in every line the app writes: exports name them by patient.
INPUT_FOLDER, OUTPUT_FOLDER = "<input folder>", "<output folder>"
INPUT_NOT_FOUND = f"{INPUT_FOLDER}: input folder not found"
OUTPUT_NOT_A_FOLDER = f"{OUTPUT_FOLDER}: not a folder"
# What the SDK's argparse refuses -i and -o for (a missing input, an output that is not a folder), by the option
# its refusal names.
SDK_FOLDER_REFUSALS = {"--input/-i": INPUT_NOT_FOUND, "--output/-o": OUTPUT_NOT_A_FOLDER}


def find_model(model_path: str | Path) -> tuple[Path, Path] | None:
    """The bundle and the checkpoint ``model_path`` names; ``None`` for a folder without weights.

    ``model_path``: a bundle folder, a folder of bundles (the MAP packager's models folder: the first
    by name whose checkpoint is there), or a checkpoint file for a bundle's ``network_def`` (see :func:`_bundle_for`):
    its ``.pt`` weights or a TorchScript ``model.ts`` of its ``ckpt_export`` (see ``ModelFuser``). Only where
    nothing is at ``model_path`` (the SDK's default, no ``-m`` given) is the default bundle looked in: a folder given
    without weights means the baseline, not some other model.
    """
    path = _model_place(model_path)
    if path.is_file():
        return _bundle_for(path), path
    for root in _bundles_in(path):
        if (checkpoint := bundled_checkpoint(root)).is_file():
            return root, checkpoint
    return None


def _bundles_in(folder: Path) -> list[Path]:
    """``folder`` if it is a bundle, then the bundles packaged in its sub-folders, by name."""
    packaged = sorted(config.parents[1] for config in folder.glob(f"*/{INFERENCE_CONFIG}")) if folder.is_dir() else []
    return [root for root in (folder, *packaged) if is_bundle(root)]


def _bundle_for(checkpoint: Path) -> Path:
    """The bundle a checkpoint file is loaded into: the default one, else the first packaged in the SDK's models
    folder. The file was named on purpose, so without one it is a :class:`CheckpointError`, never a baseline."""
    models = Path(RuntimeEnv().model).absolute()
    found = [root for root in (default_bundle(), *_bundles_in(models)) if is_bundle(root)]
    if not found:
        raise CheckpointError(f"{checkpoint}: no DCIF-GAN bundle to load it into ({INFERENCE_CONFIG.as_posix()} "
                              f"neither in {default_bundle()} nor under {models}); set {BUNDLE_ENV} to the bundle "
                              f"folder, or {MODELS_ENV} to the folder the bundle is packaged in")
    return found[0]


def _model_place(model_path: str | Path) -> Path:
    """Where the app looks for its model: ``model_path``, or the default bundle when nothing is there."""
    path = Path(model_path)
    return path if path.exists() else default_bundle()


def fusers_for(model_path: str | Path, device: str) -> dict[str, Fuser]:
    """The DCIF-GAN model when one is found and it is the default fuser (see
    :func:`~pipeline.fusion.selection.default_method`), else the best baseline, saying so.

    Never the network with random weights: without trained weights its output means nothing. A checkpoint that
    cannot be used (no bundle for it, or it does not load) is a :class:`CheckpointError`.
    """
    found = find_model(model_path)
    if found is None:
        logger.warning("no DCIF-GAN model in %s: fusing with the %s baseline instead",
                       _model_place(model_path).resolve(), BASELINE_FALLBACK)
        return build_fusers([BASELINE_FALLBACK])
    root, checkpoint = found
    method = default_method(checkpoint)
    logger.info("fusing with %s from %s", method, checkpoint)
    return build_fusers([method], checkpoint=checkpoint, network=bundled_network(root), device=device)


def sdk_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The SDK's ``parse_args`` of ``argv``, whose refusals are :class:`InputError` lines, the folders named by role.

    Its argparse would print its usage and the absolute path and exit with status 2, before :func:`main` could say
    what is wrong in one line. It makes the output folder (a ``--workdir`` too) as it parses.
    """
    refusal = io.StringIO()
    try:
        with redirect_stderr(refusal):
            return parse_args(list(argv))
    except SystemExit as stop:
        if not stop.code:  # a help, not a refusal
            raise
        message = refusal.getvalue().strip().splitlines()[-1].partition(": error: ")[2]
        option = re.match(r"argument (\S+): ", message)
        raise InputError(SDK_FOLDER_REFUSALS.get(option[1] if option else "", message)) from None
    except OSError as error:
        raise _unmade_output(error) from None


def _unmade_output(error: OSError) -> InputError:
    """The output folder could not be made (a parent is a file, or read-only). The SDK makes a ``--workdir`` in the
    same pass: its failure reads the same."""
    return InputError(f"{OUTPUT_FOLDER}: cannot be made ({error.strerror or error})")


def checked_folders(input_path: str | Path, output_path: str | Path) -> tuple[Path, Path]:
    """The input folder and the output folder, made; what is wrong with either is an :class:`InputError` naming it
    by role. The SDK checks only the folders given as options, not those its environment variables name."""
    input_folder, output_folder = Path(input_path), Path(output_path)
    if not input_folder.is_dir():
        raise InputError(INPUT_NOT_FOUND)
    if output_folder.exists() and not output_folder.is_dir():
        raise InputError(OUTPUT_NOT_A_FOLDER)
    try:
        output_folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unmade_output(error) from None
    return input_folder, output_folder


def _series_folders(output_folder: Path) -> list[Path]:
    """The sub-folders of ``output_folder`` that fused and colour series are written in."""
    return [folder for name in (dicom_folder_name("*", "*"), colour_folder_name("*", "*"))
            for folder in sorted(output_folder.glob(name)) if folder.is_dir()]


def tidy_output(output_folder: Path) -> None:
    """Remove what no finished run leaves: the temporary files of a killed run (a forwarder watching the folder could
    send a truncated ``.dcm``; a run writing into the same folder at the same time keeps its own), and series folders
    left empty by a failed or killed one."""
    for folder in (output_folder, *_series_folders(output_folder)):
        clear_partial_files(folder, IDLE_TEMPORARY_S)
    for folder in _series_folders(output_folder):
        with suppress(OSError):  # not empty: a finished series, kept
            folder.rmdir()


class SdkDetail(logging.Filter):
    """Drops the SDK's records below WARNING: its DICOM operators log header values at INFO, the selector every
    series' description (exports put patient names and IDs there) and the study and series UIDs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not Path(record.pathname).is_relative_to(SDK_SOURCE)


class DcifFusionApp(Application):
    """PET/CT fusion as a MONAI Deploy application: one study per run, DICOM in and DICOM out."""

    redaction: PathRedaction | None = None
    output_folder: Path | None = None

    def compose(self) -> None:
        # The SDK's init_app_context, with the redaction put on every log handler between its setting
        # up logging and its logging the parsed arguments (both folders).
        args = sdk_arguments(self.argv)
        set_up_logging(args.log_level)
        context = AppContext({key: value for key, value in vars(args).items() if value})
        input_folder, output_folder = checked_folders(context.input_path, context.output_path)
        self.output_folder = output_folder
        tidy_output(output_folder)
        # Files under the input folder as the batch report names them (keyed pseudonyms, key in the output folder),
        # the two folders by role.
        self.redaction = PathRedaction(Locator(input_folder, location_key(output_folder), root=INPUT_FOLDER),
                                       {str(output_folder): OUTPUT_FOLDER})
        for handler in logging.getLogger().handlers:
            handler.addFilter(SdkDetail())
            handler.addFilter(self.redaction)
        logger.info("input %s, output %s, models %s", input_folder, output_folder, context.model_path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        fusers = fusers_for(context.model_path, device)

        # must_load=False: an empty folder reaches the selector, which says what is wrong in one line.
        loader = HeaderOnlyLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, must_load=False,
                                          name="dicom_loader")
        redact = self.redaction.redact
        selector = PetCtSeriesSelectorOperator(self, input_folder=input_folder, redact=redact, name="pet_ct_selector")
        fusion = FusionOperator(self, fusers=fusers, device=device, redact=redact, name="fusion")
        writer = FusedDicomWriterOperator(self, output_folder=output_folder, redact=redact, name="fused_dicom_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, fusion, {(SELECTION_PORT, SELECTION_PORT)})
        self.add_flow(fusion, writer, {(FUSED_PORT, FUSED_PORT)})


def main() -> int:
    """Run the app on ``sys.argv``. Any error ends it with one line, ``dcif-deploy: error: ...``, and exit status 1,
    and takes away the empty series folders it made; ``DCIF_TRACEBACK=1`` raises it instead, with its traceback."""
    app = DcifFusionApp()
    try:
        app.run()
        return 0
    except Exception as error:
        if app.output_folder is not None:
            with suppress(OSError):  # best effort: the error to report is the one that stopped the run
                tidy_output(app.output_folder)
        if os.environ.get(TRACEBACK_ENV):
            raise
        message = app.redaction.redact(error_line(error)) if app.redaction else error_line(error)
    del app  # Holoscan logs its teardown when the app goes (an app stopped in compose, at exit): before the line
    gc.collect()
    print(f"dcif-deploy: error: {message}", file=sys.stderr)
    return 1
