"""Build the DCIF-GAN training set: varied phantom studies plus the real studies, preprocessed once.

The phantoms vary what the generator lets vary (anatomy and tumour through the seed, tumour size
and uptake, noise, CT and PET grids), so the network does not learn one geometry; they all go to
training. The real studies come with their split from a datalist (default: the bundle's
``configs/datalist_real.json``, split by study, each with its tumour contour). Each study's tumour
(the phantom's design, the real study's contour) is cached with it, so validation measures the
lesion on it. The output is a study cache
(:mod:`pipeline.data.study_cache`) that ``train.json`` and ``evaluate.json`` read with
``--study_cache``, on a host with or without the DICOM stack.

    .venv/bin/python tools/build_training_set.py --out bundles/dcif_gan/data/cache
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from pipeline.data import cache_studies, load_datalist
from pipeline.data.datalist import phantom_datalist
from pipeline.errors import DcifError, error_line
from pipeline.io.atomic import output_folder

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "dcif_gan"


def phantom_studies(root: Path, count: int, first_seed: int) -> list[dict[str, Any]]:
    """``count`` phantoms with drawn grids, tumour and noise (reproducible from ``first_seed``)."""
    studies = []
    for seed in range(first_seed, first_seed + count):
        draw = random.Random(seed)
        size = draw.choice((112, 128, 144, 160))
        spacing = round(draw.uniform(2.0, 3.2), 2)
        options = {
            "tumour_radius_mm": round(draw.uniform(7.0, 25.0), 1),
            "tumour_suv": round(draw.uniform(3.0, 20.0), 1),
            "noise": round(draw.uniform(0.5, 2.0), 2),
            "pet_spacing": (round(draw.uniform(3.5, 5.5), 2),) * 2 + (4.0,),
        }
        studies += phantom_datalist(root, n_studies=1, size=(size, size, 24),
                                    spacing=(spacing, spacing, 4.0), first_seed=seed, **options)
    return [{**study, "split": "train", "origin": "phantom"} for study in studies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLE / "data" / "cache", help="study cache folder to write")
    parser.add_argument("--real", default=str(BUNDLE / "configs" / "datalist_real.json"),
                        help="datalist of real studies with their 'split' (a JSON file); 'none' to skip")
    parser.add_argument("--phantoms", type=int, default=24, help="number of phantom studies (default 24)")
    parser.add_argument("--phantom-root", type=Path, default=BUNDLE / "data" / "phantom_train",
                        help="where the phantom studies are made (reused when already there)")
    parser.add_argument("--first-seed", type=int, default=100, help="seed of the first phantom (default 100)")
    parser.add_argument("--real-slice-step", type=int, default=2,
                        help="keep every k-th axial slice of the real studies (default 2: their 3.3 mm "
                             "slices change little from one to the next, and the cache stays small enough "
                             "to ship to a GPU host)")
    args = parser.parse_args(argv)
    try:
        output_folder(args.out)  # before the phantoms are made: a file in its place ended the run in a traceback
        studies = phantom_studies(args.phantom_root, args.phantoms, args.first_seed)
        if args.real != "none":
            studies += [{**study, "origin": "real", "slice_step": args.real_slice_step}
                        for study in load_datalist(args.real)]
        cached = cache_studies(studies, args.out)
    except (DcifError, OSError) as error:  # an OS error (a full disk, a phantom root that is a file) as its file
        parser.exit(1, f"build_training_set: {error_line(error)}\n")
    counts = {}
    for study in cached:
        name = f"{study.get('origin', 'unknown')} / {study.get('split', 'unsplit')}"
        counts[name] = counts.get(name, 0) + 1
    for name, count in sorted(counts.items()):
        print(f"{name}: {count} studies")
    print(f"study cache: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
