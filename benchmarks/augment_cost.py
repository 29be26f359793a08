"""CPU cost of ``mrdiff.data.augment`` per training image, with and without the issue-14 options.

    python -m benchmarks.augment_cost --data data/brain-images-256/val [--config brain-patch-cpu]

Prints ms/image (process CPU time, single thread, so other jobs on the machine matter less; the best
of several interleaved rounds) for the preset with the contrast/anatomy-shift options off, the preset
as it is, and each option forced on alone.
"""

from __future__ import annotations

import argparse
import time

import torch

from mrdiff.config import PRESET_DIR, apply_overrides, from_dict, load_yaml
from mrdiff.data import augment, load_slices
from mrdiff.noise import make_generator

OPTIONS = ("tissue", "affine", "elastic", "noise")


def _per_image_ms(images: torch.Tensor, cfg, n: int, seed: int) -> float:
    start = time.process_time()
    for i in range(n):
        augment(images[i % len(images)], cfg, make_generator(seed + i))
    return (time.process_time() - start) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="directory of prepared .h5 volumes")
    p.add_argument("--config", default="brain-patch-cpu", help="preset name (mrdiff/presets)")
    p.add_argument("--images", type=int, default=32, help="images per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the best is reported)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    values = load_yaml(PRESET_DIR / f"{args.config}.yaml")
    off = [f"data.{o}_prob=0" for o in OPTIONS]
    cfgs = {"options off": off, "preset": []}
    cfgs |= {f"off + {o} always": off + [f"data.{o}_prob=1"] for o in OPTIONS}
    cfgs = {k: from_dict(apply_overrides(values, v)).data for k, v in cfgs.items()}
    images, _ = load_slices(args.data, cfgs["preset"])
    best = dict.fromkeys(cfgs, float("inf"))
    for r in range(args.rounds):
        for name, cfg in cfgs.items():
            best[name] = min(best[name], _per_image_ms(images, cfg, args.images, 1000 * r))
    size = tuple(images.shape[-2:])
    for name, ms in best.items():
        print(f"{args.config} {name:22s} {ms:6.1f} ms/image (CPU, {size[0]}x{size[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
