"""The evaluator's fused volumes on disk: every (window, method) channel of a study as NIfTI.

The evaluator's ``pred`` has one channel per (window, method) (see
:class:`pipeline.fusion.FusionNetwork`); the writer reads that layout from the evaluator's network,
so the bundle configs do not repeat it, and writes through :class:`pipeline.fusion.writers.NiftiSink`,
the writer of the CLI, the batch job and the deploy app: one naming, one header, one atomic write, the
same sweep of a killed run's temporaries and the same ``fused.json`` record.
"""

from __future__ import annotations

from pathlib import Path

from ignite.engine import Engine, Events

from pipeline.fusion.streaming import FusedSlab, FusedStudy
from pipeline.fusion.writers import NiftiSink
from pipeline.handlers.slice_metrics import batch_field


class FusedVolumeWriter:
    """Write every fused channel of each study as NIfTI on the CT's geometry.

    Files go to ``<output_dir>/<study_key>/fused_<method>_<window>.nii.gz`` (the key is a hash), with
    the study's ``fused.json`` (which records the SUV ceiling the evaluator's network was built for, as
    :attr:`FusedStudy.suv_max <pipeline.fusion.streaming.FusedStudy.suv_max>` says it); each write is atomic. The paths are left on ``engine.state.fusion_written`` for the MLflow logger, and accumulate in
    :attr:`written`.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        # The whole study is one slab here: the evaluator fused it in one iteration.
        study = FusedStudy(data={"ct": engine.state.batch["ct"][0]}, network=engine.network)
        fused = engine.state.output["pred"][0].as_tensor().detach().float().cpu()
        with NiftiSink(study, self.output_dir / str(batch_field(engine, "study_key"))) as sink:
            sink.add(FusedSlab(0, engine.state.output["image"][0].as_tensor(), fused))
        self.written.extend(sink.paths)
        engine.state.fusion_written = sink.paths
