"""Side-by-side denoising quality of priors of either family on the same validation images.

For each prior and each noise level sigma in ``mrdiff.training.VAL_SIGMAS``, the mean squared error of
``D(x0 + sigma n, sigma)`` against ``x0`` per real component, on fixed noise, plus the EDM-weighted
``val_loss`` (exactly the validation that ``mrdiff train`` logs; a patch prior denoises the whole
image by deterministic tiling). Prints one markdown table; ``--json`` writes the numbers too.

    python -m benchmarks.prior_compare --data data/open-brain-128/val --priors weights/brain128-cpu.pt,P2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.tuning_common import one_line_errors
from mrdiff.atomic import atomic_path
from mrdiff.config import from_dict
from mrdiff.data import SliceDataset, validation_batch
from mrdiff.priors import load_prior
from mrdiff.training import VAL_SIGMAS, validation_losses


def compare(priors: list[str], data: Path, size: int, n_images: int) -> list[dict]:
    """Validation losses of every prior on the same ``n_images`` slices of ``data`` at ``size``."""
    images = SliceDataset(data, size)
    rows = []
    for path in priors:
        denoiser = load_prior(path)
        cfg = from_dict(denoiser.config)
        x0 = validation_batch(images, n_images, cfg.model.in_channels)
        t0 = time.perf_counter()
        losses = validation_losses(denoiser.model, x0, cfg, batch=4)
        rows.append({"prior": path, "family": cfg.model.family, "size": size, "images": int(x0.shape[0])})
        rows[-1].update(losses, seconds=round(time.perf_counter() - t0, 1), sha256=denoiser.sha256[:12])
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`compare` rows."""
    head = "| prior | family | size | " + " | ".join(f"σ {s:g}" for s in VAL_SIGMAS) + " | val_loss |"
    lines = [head, "|" + "---|" * (4 + len(VAL_SIGMAS))]
    for r in rows:
        mse = " | ".join(f"{r[f'mse@{s:g}']:.2e}" for s in VAL_SIGMAS)
        lines.append(f"| {r['prior']} | {r['family']} | {r['size']} | {mse} | {r['val_loss']:.4f} |")
    return "\n".join(lines)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, compare, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="directory of prepared .h5 volumes (e.g. a val split)")
    p.add_argument("--priors", required=True, help="comma-separated prior files")
    p.add_argument("--size", type=int, default=128, help="square size the images are cropped/padded to")
    p.add_argument("--images", type=int, default=32, help="validation images (evenly spaced)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    rows = compare(args.priors.split(","), Path(args.data), args.size, args.images)
    print(table(rows))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
