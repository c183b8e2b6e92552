"""``dcif``: the command line. Thin: each sub-command parses, calls the package, and reports.

Every :class:`~pipeline.errors.DcifError`, every OS error (a full disk) and every bad argument becomes one line on
stderr and exit status 2, so a user sees what is wrong and with which file, never a traceback from deep inside a
library (``fuse-batch`` reports a study that fails and goes on: see :mod:`pipeline.batch`); ``DCIF_TRACEBACK=1`` keeps
the traceback, for debugging.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pipeline.errors import TRACEBACK_ENV, DcifError, InputError, error_line

logger = logging.getLogger("dcif")


def _triple(text: str, kind: type = float) -> tuple:
    """Parse ``"256,256,64"`` into a 3-tuple of positive numbers (sizes and spacings are never 0 or negative)."""
    try:
        parts = [kind(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 < part < math.inf for part in parts):
        raise argparse.ArgumentTypeError(f"expected three positive comma-separated values, got {text!r}")
    return tuple(parts)


def _int_triple(text: str) -> tuple:
    return _triple(text, int)


def _names(text: str) -> list[str]:
    """Parse ``"lung, mediastinal"`` into names; none, or one named twice (it would be fused twice), is refused."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given more than once in {text!r}")
    return names


def _input_folder(path: Path) -> Path:
    """``path``, or an InputError when it is a file (discovery would only say that no folder was found)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: not a folder")
    return path


def cmd_phantom(args: argparse.Namespace) -> int:
    from pipeline.phantom import make_phantom

    study = make_phantom(
        args.out_dir, ct_shape=args.size, ct_spacing=args.spacing, pet_shape=args.pet_size,
        pet_spacing=args.pet_spacing, seed=args.seed, progress=not args.quiet,
    )
    print(f"phantom study written: CT {study.ct_dir}, PET {study.pet_dir}, NIfTI {study.ct_nifti.parent}, "
          f"truth {study.truth_json}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import secrets

    from pipeline.batch.report import Locator
    from pipeline.io.discovery import discover_studies
    from pipeline.wording import counted

    in_dir = _input_folder(args.in_dir.resolve())
    found = discover_studies(in_dir)
    # Folder names may name patients: pseudonyms (a fresh key each run) unless the user asks for paths.
    locator = Locator(in_dir, None if args.show_paths else secrets.token_bytes(16))
    print(f"{counted(len(found.pairs), 'PET/CT study', 'PET/CT studies')} ready to fuse, {len(found.failures)} failed, "
          f"{counted(len(found.problems), 'unreadable file')}, {len(found.ignored)} series ignored")
    for state, entries in (("ok  ", found.pairs), ("fail", found.failures), ("skip", found.problems),
                           ("ignore", found.ignored)):
        for entry in entries:
            print(f"  {state}  {locator.redact(entry)}")
    return 0 if found.pairs else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo
    from pipeline.transforms.data_path import DEFAULT_WINDOWS

    run_demo(Path(args.out_dir), windows=args.window or DEFAULT_WINDOWS, method=args.method, progress=not args.quiet)
    return 0


def cmd_fuse_batch(args: argparse.Namespace) -> int:
    from pipeline.batch import BatchOptions, make_executor, run_batch
    from pipeline.batch.pacs import run_dicomweb_batch
    from pipeline.fusion.selection import MODEL_METHOD, default_method
    from pipeline.io.dicomweb import is_dicomweb_url

    _check_unused_options(args, is_dicomweb_url(args.in_dir))
    # A checkpoint named asks for the model, so a mistyped path fails instead of falling back to a baseline; the
    # bundle's is looked up only where the model runs.
    methods = args.method or [MODEL_METHOD if args.checkpoint else default_method()]
    given = {"windows": args.window and tuple(args.window), "checkpoint": args.checkpoint and str(args.checkpoint),
             "suv_max": args.suv_max, "metric_slices": args.metric_slices, "pet_factor": args.pet_factor}
    options = BatchOptions(methods=tuple(methods), device=args.device,
                           **{key: value for key, value in given.items() if value is not None})
    executor = make_executor(args.executor, workers=args.workers, address=args.address, device=args.device)
    if is_dicomweb_url(args.in_dir):
        report = run_dicomweb_batch(args.in_dir, args.out_dir, options, dict(args.query), store=args.store,
                                    executor=executor, progress=not args.quiet)
    else:
        report = run_batch(args.in_dir, args.out_dir, options, executor=executor,
                           progress=not args.quiet, explicit_paths=args.report_paths)
    print(f"fuse-batch: {report.summary()}")
    return 0 if report.all_ok else 1


def _check_unused_options(args: argparse.Namespace, url: bool) -> None:
    """Refuse the options this run would ignore in silence: those for the other kind of input, and a Ray address
    without the Ray executor."""
    if args.address is not None and args.executor != "ray":
        raise InputError("--address: only with --executor ray; the local executor fuses on this machine")
    if url and args.report_paths:
        raise InputError("--report-paths: only with a folder IN_DIR; studies fetched from a PACS have no export "
                         "paths, the report names them by key")
    unused = [option for option, given in (("--query", args.query), ("--store", args.store)) if given and not url]
    if unused:
        raise InputError(f"{' and '.join(unused)}: only with a DICOMweb URL as IN_DIR; a folder is fused whole and "
                         "nothing is sent to a PACS")


def _query_term(text: str) -> tuple[str, str]:
    """Argument type: one ``KEY=VALUE`` QIDO-RS filter."""
    key, sign, value = text.partition("=")
    if not sign or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _at_least(minimum: int):
    """Argument type: an integer no smaller than ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


class _HelpFormatter(argparse.HelpFormatter):
    """Fills ``{suv_max}`` in a help text with the data path's SUV ceiling when help is shown, not before: its module
    loads torch, which would make every ``dcif`` call, a bad argument's too, take seconds."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text is None or "{suv_max}" not in text:
            return text
        from pipeline.transforms.windowing import DEFAULT_SUV_MAX

        return text.replace("{suv_max}", f"{DEFAULT_SUV_MAX:g}")


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a bad argument told in one line, as every other error is (``--help`` has the usage)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # A value like "-5,10,10" is a value (then refused by its type in one line), not an unknown option leaving
        # --size "expected one argument": argparse's own pattern takes only "-5" or "-0.5" for numbers.
        self._negative_number_matcher = re.compile(r"^-\.?\d[\d.,]*$")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_output_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes: how much it logs and whether it shows progress bars."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dcif",
        description="DCIF-GAN PET/CT fusion: make the phantom study, inspect DICOM folders, fuse studies.",
    )
    _add_output_options(parser, default=False)
    # -v/-q after the command too (`dcif fuse-batch IN OUT -q`), listed in its --help; left unset there unless given,
    # so one given before the command stands.
    shared = argparse.ArgumentParser(add_help=False)
    _add_output_options(shared, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = sub.add_parser(
        "phantom", parents=[shared], help="write the synthetic thorax PET/CT study (DICOM + NIfTI + truth.json)",
        description="Write one synthetic thorax PET/CT study: a CT series in HU, a PET series in Bq/ml with "
                    "SUV-ready headers on its own grid, the same as NIfTI, and truth.json with the design.",
    )
    phantom.add_argument("out_dir", type=Path, help="folder to write the study into (created)")
    phantom.add_argument("--size", type=_int_triple, default=(256, 256, 64), metavar="X,Y,Z",
                         help="CT columns,rows,slices (default 256,256,64; 512,512,300 is a full scan)")
    phantom.add_argument("--spacing", type=_triple, default=(1.5, 1.5, 3.0), metavar="X,Y,Z",
                         help="CT voxel spacing in mm (default 1.5,1.5,3.0)")
    phantom.add_argument("--pet-size", type=_int_triple, default=None, metavar="X,Y,Z",
                         help="PET grid (default: 4 mm voxels covering the CT)")
    phantom.add_argument("--pet-spacing", type=_triple, default=(4.0, 4.0, 4.0), metavar="X,Y,Z",
                         help="PET voxel spacing in mm (default 4,4,4)")
    phantom.add_argument("--seed", type=int, default=0, help="anatomy and noise seed (default 0)")
    phantom.set_defaults(func=cmd_phantom)

    inspect = sub.add_parser(
        "inspect", parents=[shared], help="list the PET/CT studies found under a folder and what would be fused",
        description="Walk a folder tree of DICOM files (any names, nested), group them into studies and "
                    "series, and report the PET/CT pair picked per study, failed studies and unreadable files. "
                    "No patient identifiers are printed.",
    )
    inspect.add_argument("in_dir", type=Path, help="folder to scan")
    inspect.add_argument("--show-paths", action="store_true",
                         help="print input paths as they are (default: pseudonyms, as folder names may name patients)")
    inspect.set_defaults(func=cmd_inspect)

    demo = sub.add_parser(
        "demo", parents=[shared], help="make the phantom study and run the whole data path and fusion on it",
        description="The main job on the embedded default data: make the phantom study (if absent), "
                    "discover, load, convert PET to SUV, resample onto the CT grid, window the CT, fuse, "
                    "and write the fused volumes as NIfTI with a summary of metrics.",
    )
    demo.add_argument("out_dir", type=Path, nargs="?", default=Path("out/demo"),
                      help="output folder (default out/demo)")
    demo.add_argument("--window", type=_names, default=None, metavar="W[,W]",
                      help="CT windows to fuse with (default lung,mediastinal)")
    demo.add_argument("--method", default=None,
                      help="fuser: dcif_gan (needs the bundle checkpoint) or a baseline; "
                           "default: the best fuser on the model card's evaluation, named in the summary")
    demo.set_defaults(func=cmd_demo)

    batch = sub.add_parser(
        "fuse-batch", parents=[shared],
        help="fuse every PET/CT study under a folder: NIfTI, DICOM series, previews, a report",
        description="Discover every PET/CT study under IN_DIR (any folder layout) and fuse each into "
                    "OUT_DIR/<study key>/: fused_<method>_<window>.nii.gz, a derived DICOM series "
                    "dicom_<method>_<window>/ in the CT's study and geometry, its colour rendering "
                    "colour_<method>_<window>/ (hot-iron PET over the grey fused image), preview.png and done.json. "
                    "OUT_DIR/report.json and report.csv list every study (ok, failed with the reason, or "
                    "skipped because done). Re-running the same command resumes an interrupted batch. "
                    "Exit status 0 when every study is ok, 1 when some failed, 2 on bad arguments, 130 when "
                    "interrupted (Ctrl-C; the same command resumes).",
        formatter_class=_HelpFormatter,
    )
    batch.add_argument("in_dir", metavar="IN_DIR|URL",
                       help="folder tree of DICOM files (e.g. a PACS export), or a DICOMweb endpoint "
                            "(http[s]://...; credentials from DCIF_DICOMWEB_USER/_PASSWORD or DCIF_DICOMWEB_CREDENTIALS)")
    batch.add_argument("--query", type=_query_term, action="append", default=[], metavar="KEY=VALUE",
                       help="with a URL: QIDO-RS study filter, repeatable (e.g. StudyDate=20260101-); "
                            "studies without both CT and PT are left out")
    batch.add_argument("--store", action="store_true",
                       help="with a URL: STOW-RS every fused series back into its patient and study")
    batch.add_argument("out_dir", type=Path, metavar="OUT_DIR",
                       help="output folder (created; must not lie inside IN_DIR)")
    batch.add_argument("--method", type=_names, default=None, metavar="M[,M]",
                       help="fuser(s): dcif_gan (needs the checkpoint) or a baseline (average, max, laplacian, "
                            "dwt, saliency); default: the best fuser on the model card's evaluation, "
                            "named in the output file names")
    batch.add_argument("--window", type=_names, default=None, metavar="W[,W]",
                       help="CT windows to fuse with (default lung,mediastinal)")
    batch.add_argument("--workers", type=_at_least(1), default=1, metavar="N",
                       help="studies fused in parallel by the local executor, in separate processes (default 1)")
    batch.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to fuse (default cpu)")
    batch.add_argument("--executor", "--engine", dest="executor", choices=("local", "ray"), default="local",
                       help="local processes (default) or one Ray task per study (needs the 'ray' extra); "
                            "--engine is the older name")
    batch.add_argument("--address", default=None, metavar="HOST:PORT",
                       help="Ray cluster head (e.g. head:6379); default RAY_ADDRESS, else a local Ray")
    batch.add_argument("--checkpoint", type=Path, default=None,
                       help="dcif_gan weights for the bundle's network_def; naming them makes dcif_gan the default "
                            "method (default: the bundle's checkpoint; the bundle is the folder $DCIF_GAN_BUNDLE "
                            "names, else bundles/dcif_gan)")
    batch.add_argument("--suv-max", type=float, default=None, metavar="X",
                       help="SUV shown at full PET intensity (default {suv_max}, the data path's, as in 'demo')")
    batch.add_argument("--pet-factor", type=float, default=None, metavar="F",
                       help="PET pixels x F = SUVbw, replacing the PET's units (e.g. counts, which are "
                            "otherwise fused with a relative scaling)")
    batch.add_argument("--metric-slices", type=_at_least(0), default=None, metavar="N",
                       help="body slices, evenly spread, scored for the report's metrics; 0 = all "
                            "(default 32: scoring all costs about as much as fusing)")
    batch.add_argument("--report-paths", action="store_true",
                       help="name inputs in the reports by their paths relative to IN_DIR (default: every folder and "
                            "file name but plain numbers pseudonymised, as exports name folders by patient)")
    batch.set_defaults(func=cmd_fuse_batch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader of our output left (`dcif inspect TREE | head`): end quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the interpreter's final flush is quiet
        return 128 + signal.SIGPIPE
    except (DcifError, OSError) as error:  # an OS error no command foresaw (a full disk) is one line too
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"dcif {args.command}: error: {error_line(error, getattr(args, 'out_dir', 'output'))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT; finished work is on disk
        print(f"dcif {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
