"""The evaluator's fused volumes on disk: every (window, method) channel of a study as NIfTI.

The evaluator's ``pred`` has one channel per (window, method) (see
:class:`pipeline.fusion.FusionNetwork`); the writer reads that layout from the evaluator's network,
so the bundle configs do not repeat it.
"""

from __future__ import annotations

from pathlib import Path

from ignite.engine import Engine, Events
from monai.data import MetaTensor

from pipeline.fusion.streaming import fused_filename
from pipeline.handlers.slice_metrics import batch_field
from pipeline.io.nifti import save_volume


class FusedVolumeWriter:
    """Write every fused channel of each study as NIfTI on the CT's geometry.

    Files go to ``<output_dir>/<study_key>/fused_<method>_<window>.nii.gz`` (the key is a hash);
    each write is atomic. The paths are left on ``engine.state.fusion_written`` for the MLflow
    logger, and accumulate in :attr:`written`.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        pred = engine.state.output["pred"][0]
        reference = engine.state.batch["ct"][0]
        folder = self.output_dir / str(batch_field(engine, "study_key"))
        paths = []
        for channel, (window, method) in enumerate(engine.network.channels):
            volume = MetaTensor(pred[channel : channel + 1].as_tensor().float(), affine=reference.affine)
            paths.append(save_volume(folder / fused_filename(window, method), volume))
        self.written.extend(paths)
        engine.state.fusion_written = paths
