"""`mrdiff info`: shapes, coils, sampling fraction and attributes of fastMRI-style files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrdiff.io import list_volumes, open_volume
from mrdiff.masks import sampling_fraction
from recon.verbs import SUMMARIES

HELP = SUMMARIES["info"]


def describe(path: Path) -> dict:
    """A JSON-ready description of one file."""
    info = open_volume(path)
    S, C, H, W = info.shape
    return {
        "file": str(path),
        "slices": S,
        "coils": C,
        "kspace_hw": [H, W],
        "single_coil_layout": info.single_coil,
        "recon_size": list(info.recon_size),
        "mask": None if info.mask is None else list(info.mask.shape),
        "sampling_fraction": 1.0 if info.mask is None else round(sampling_fraction(info.mask, (H, W)), 4),
        "target": info.target_key,
        "attrs": info.attrs,
    }


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff info`."""
    p = argparse.ArgumentParser(prog="mrdiff info", description=HELP)
    p.add_argument("paths", type=Path, nargs="*", help="files or directories to describe")
    p.add_argument("--methods", action="store_true", help="list the reconstruction methods and exit")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    if args.methods:
        from mrdiff.pipeline import all_methods  # the method registries (not needed to describe files)

        print("\n".join(all_methods()))
        return 0
    if not args.paths:
        p.error("give at least one file, or --methods")
    rows = [describe(f) for path in args.paths for f in list_volumes(path)]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        attrs = ", ".join(f"{k}={v}" for k, v in r["attrs"].items() if k != "ismrmrd_header")
        print(
            f"{r['file']}: {r['slices']} slices x {r['coils']} coils x "
            f"{r['kspace_hw'][0]}x{r['kspace_hw'][1]}, "
            f"recon {r['recon_size'][0]}x{r['recon_size'][1]}, sampled {r['sampling_fraction']:.3f}, "
            f"target {r['target']}, {attrs}"
        )
    return 0
