"""Plot training histories: the D and G losses and the validation metrics per epoch, one PNG.

A GAN that collapses shows it here first: the discriminator loss falling to zero while the
generator's adversarial terms climb to their ceiling, or validation metrics that stop moving.
Reads the ``history.json`` files that :class:`pipeline.handlers.TrainingHistory` writes (one per
run, labelled by the run folder's name) and needs matplotlib (``pip install -e ".[plots]"``).

    .venv/bin/python tools/plot_training.py runs/*/train/history.json --out docs/training_curves.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io.atomic import atomic_write
from pipeline.handlers import read_history, run_name

PANELS = (
    ("generator loss (total)", "loss"),
    ("discriminator loss (D1 + D2)", "d_loss"),
    ("generator adversarial terms (adv1 + adv2)", ("g_adv1", "g_adv2")),
    ("validation Q^AB/F", "val_QABF"),
    ("validation MI", "val_MI"),
    ("validation SSIM", "val_SSIM"),
)


def series(epochs: list[dict], keys: str | tuple[str, ...]) -> tuple[list[int], list[float]]:
    """(epochs, values) where every key is present; a tuple of keys is summed."""
    names = (keys,) if isinstance(keys, str) else keys
    rows = [row for row in epochs if all(name in row for name in names)]
    return [row["epoch"] for row in rows], [sum(row[name] for name in names) for row in rows]




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("histories", nargs="+", type=Path, help="history.json files, one per run")
    parser.add_argument("--out", type=Path, default=Path("training_curves.png"), help="PNG to write")
    parser.add_argument("--title", default="DCIF-GAN training", help="figure title")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for path in args.histories:
        epochs = read_history(path)["epochs"]
        for axis, (title, keys) in zip(axes.flat, PANELS):
            x, y = series(epochs, keys)
            if x:
                axis.plot(x, y, marker="o", markersize=3, label=run_name(path))
    for axis, (title, _) in zip(axes.flat, PANELS):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
