"""``dcif``: the command line. Thin: each sub-command parses, calls the package, and reports.

Every :class:`~pipeline.errors.DcifError` becomes one line on stderr and exit status 2, so a user
sees what is wrong and with which file, never a traceback from deep inside a library.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import DcifError

logger = logging.getLogger("dcif")


def _triple(text: str, kind: type = float) -> tuple:
    """Parse ``"256,256,64"`` into a 3-tuple."""
    parts = [kind(part) for part in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated values, got {text!r}")
    return tuple(parts)


def _int_triple(text: str) -> tuple:
    return _triple(text, int)


def _windows(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
    from pipeline.io.discovery import discover_studies

    found = discover_studies(args.in_dir)
    print(f"{len(found.pairs)} PET/CT studies ready to fuse, {len(found.failures)} failed, "
          f"{len(found.problems)} unreadable files under {args.in_dir}")
    for pair in found.pairs:
        print(f"  ok    {pair}")
    for failure in found.failures:
        print(f"  fail  {failure}")
    for problem in found.problems:
        print(f"  skip  {problem}")
    return 0 if found.pairs else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    run_demo(Path(args.out_dir), windows=args.window, method=args.method, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcif",
        description="DCIF-GAN PET/CT fusion: make the phantom study, inspect DICOM folders, fuse studies.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = sub.add_parser(
        "phantom", help="write the synthetic thorax PET/CT study (DICOM + NIfTI + truth.json)",
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
        "inspect", help="list the PET/CT studies found under a folder and what would be fused",
        description="Walk a folder tree of DICOM files (any names, nested), group them into studies and "
                    "series, and report the PET/CT pair picked per study, failed studies and unreadable files. "
                    "No patient identifiers are printed.",
    )
    inspect.add_argument("in_dir", type=Path, help="folder to scan")
    inspect.set_defaults(func=cmd_inspect)

    demo = sub.add_parser(
        "demo", help="make the phantom study and run the whole data path and fusion on it",
        description="The main job on the embedded default data: make the phantom study (if absent), "
                    "discover, load, convert PET to SUV, resample onto the CT grid, window the CT, fuse, "
                    "and write the fused volumes as NIfTI with a summary of metrics.",
    )
    demo.add_argument("out_dir", type=Path, nargs="?", default=Path("out/demo"),
                      help="output folder (default out/demo)")
    demo.add_argument("--window", type=_windows, default=["lung", "mediastinal"], metavar="W[,W]",
                      help="CT windows to fuse with (default lung,mediastinal)")
    demo.add_argument("--method", default=None,
                      help="fuser: dcif_gan (needs the bundle checkpoint) or a baseline; "
                           "default: dcif_gan when its checkpoint exists, else laplacian")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except DcifError as error:
        print(f"dcif {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
