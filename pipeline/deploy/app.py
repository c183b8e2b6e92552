"""The DCIF-GAN fusion MONAI Deploy application: a PET/CT DICOM study in, fused DICOM series out.

    DICOMDataLoaderOperator -> PetCtSeriesSelectorOperator -> DICOMSeriesToVolumeOperator (CT)
        -> FusionOperator -> FusedDicomWriterOperator

Run as ``python -m pipeline.deploy -i INPUT_DICOM_DIR -o OUTPUT_DIR [-m MODEL_PATH]``; the SDK's
HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and HOLOSCAN_MODEL_PATH stand in for missing options.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.core.arg_parser import parse_args, set_up_logging
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesToVolumeOperator

from pipeline.batch.layout import location_key
from pipeline.batch.report import Locator, PathRedaction
from pipeline.deploy.operators import (
    FUSED_PORT,
    IMAGE_PORT,
    SELECTION_PORT,
    FusedDicomWriterOperator,
    FusionOperator,
    PetCtSeriesSelectorOperator,
)
from pipeline.bundle_model import INFERENCE_CONFIG, bundled_checkpoint, bundled_network, default_bundle, is_bundle
from pipeline.errors import DcifError, InputError
from pipeline.fusion.registry import Fuser
from pipeline.fusion.selection import BASELINE_FALLBACK, build_fusers, default_method

logger = logging.getLogger(__name__)

def find_model(model_path: str | Path) -> tuple[Path, Path] | None:
    """The bundle and the checkpoint ``model_path`` names; ``None`` without weights there.

    ``model_path``: a bundle folder, a folder of bundles (the MAP packager's models folder: the first
    by name whose checkpoint is there), or a checkpoint file for the default bundle's ``network_def``:
    its ``.pt`` weights or a TorchScript ``model.ts`` of its ``ckpt_export`` (see ``ModelFuser``). Only where
    nothing is at ``model_path`` (the SDK's default, no ``-m`` given) is the default bundle looked in: a folder given
    without weights means the baseline, not some other model.
    """
    path = _model_place(model_path)
    if path.is_file():
        return (default_bundle(), path) if is_bundle(default_bundle()) else None
    packaged = sorted(path.glob(f"*/{INFERENCE_CONFIG}")) if path.is_dir() else []
    for root in (path, *(config.parents[1] for config in packaged)):
        if is_bundle(root) and (checkpoint := bundled_checkpoint(root)).is_file():
            return root, checkpoint
    return None


def _model_place(model_path: str | Path) -> Path:
    """Where the app looks for its model: ``model_path``, or the default bundle when nothing is there."""
    path = Path(model_path)
    return path if path.exists() else default_bundle()


def fusers_for(model_path: str | Path, device: str) -> dict[str, Fuser]:
    """The DCIF-GAN model when one is found and it is the default fuser (see
    :func:`~pipeline.fusion.selection.default_method`), else the best baseline, saying so.

    Never the network with random weights: without trained weights its output means nothing.
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


class DcifFusionApp(Application):
    """PET/CT fusion as a MONAI Deploy application: one study per run, DICOM in and DICOM out."""

    redaction: PathRedaction | None = None

    def compose(self) -> None:
        # The SDK's init_app_context, with the redaction put on every log handler between its setting
        # up logging and its logging the parsed arguments (both folders).
        args = parse_args(self.argv)
        set_up_logging(args.log_level)
        context = AppContext({key: value for key, value in vars(args).items() if value})
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        if not input_folder.is_dir():
            raise InputError(f"{input_folder}: input folder not found")
        output_folder.mkdir(parents=True, exist_ok=True)
        # Files under the input folder as the batch report names them (keyed pseudonyms, key in the output folder),
        # the two folders by role.
        self.redaction = PathRedaction(Locator(input_folder, location_key(output_folder), root="<input folder>"),
                                       {str(output_folder): "<output folder>"})
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.redaction)
        logger.info("input %s, output %s, models %s", input_folder, output_folder, context.model_path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        fusers = fusers_for(context.model_path, device)

        # must_load=False: an empty folder reaches the selector, which says what is wrong in one line.
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, must_load=False,
                                         name="dicom_loader")
        redact = self.redaction.redact
        selector = PetCtSeriesSelectorOperator(self, input_folder=input_folder, redact=redact, name="pet_ct_selector")
        ct_volume = DICOMSeriesToVolumeOperator(self, name="ct_volume")
        fusion = FusionOperator(self, fusers=fusers, device=device, redact=redact, name="fusion")
        writer = FusedDicomWriterOperator(self, output_folder=output_folder, redact=redact, name="fused_dicom_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, ct_volume, {(SELECTION_PORT, SELECTION_PORT)})
        self.add_flow(selector, fusion, {(SELECTION_PORT, SELECTION_PORT)})
        self.add_flow(ct_volume, fusion, {(IMAGE_PORT, IMAGE_PORT)})
        self.add_flow(fusion, writer, {(FUSED_PORT, FUSED_PORT)})


def main() -> int:
    """Run the app on ``sys.argv``; a :class:`DcifError`, or an OS error on the input or output folder
    (unwritable, read-only, full disk), becomes one line and exit status 1."""
    app = DcifFusionApp()
    try:
        app.run()
    except DcifError as error:
        message = str(error)
    except OSError as error:
        message = f"{error.filename or 'output'}: {error.strerror or error}"
    else:
        return 0
    print(f"dcif-deploy: error: {app.redaction.redact(message) if app.redaction else message}", file=sys.stderr)
    return 1
