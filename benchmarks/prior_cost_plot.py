"""Training cost against validation loss for the shipped priors (the plot in the patch prior's card).

Compute is counted as training pixels seen (steps x batch x pixels per item), which compares runs of
either family on any hardware. Points are ``benchmarks.prior_compare`` results on the same val images
(one JSON per val set); ``--runs`` adds the in-training validation curves (each run on its own val set,
so curves of different runs are not comparable with each other, only their shapes).

    python -m benchmarks.prior_cost_plot --compare runs/gpu/compare128.json runs/gpu/compare256.json \
        --pixels PRIOR=PIXELS ... --out mrdiff/weights/brain-patch-cost.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mrdiff.atomic import atomic_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and write the plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", nargs="+", required=True, help="prior_compare JSON files (one per val set)")
    p.add_argument("--pixels", nargs="+", required=True, help="PRIOR=PIXELS (training pixels seen) per prior")
    p.add_argument("--labels", nargs="*", default=[], help="PRIOR=LABEL for the legend")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args(argv)
    pixels = {k: float(v) for k, v in (item.split("=", 1) for item in args.pixels)}
    labels = dict(item.split("=", 1) for item in args.labels)
    fig, axes = plt.subplots(1, len(args.compare), figsize=(5 * len(args.compare), 3.8), squeeze=False)
    for ax, path in zip(axes[0], args.compare):
        rows = json.loads(Path(path).read_text())
        for r in rows:
            if r["prior"] not in pixels:
                continue
            marker = "o" if r["family"] == "patch" else "s"
            ax.scatter(pixels[r["prior"]] / 1e9, r["val_loss"], marker=marker, s=50)
            ax.annotate(
                labels.get(r["prior"], Path(r["prior"]).stem),
                (pixels[r["prior"]] / 1e9, r["val_loss"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        ax.set_xlabel("training pixels seen (10^9)")
        ax.set_ylabel("EDM-weighted val loss (lower is better)")
        ax.set_title(f"val images at {rows[0]['size']}² (circles: patch, squares: whole image)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
