"""DPS PSNR over (NFE, zeta) on a few `val` slices (issue 13, item 6; val only, never `test`).

Usage::

    nice -n 10 python -m benchmarks.dps_nfe_zeta SLICES NFES ZETAS [MASK ACCEL CENTRE_FRACTION]
    nice -n 10 python -m benchmarks.dps_nfe_zeta 12,20 20,50,100 0.5,2,5,10 random 4 0.08

Prints one JSON line per setting (zero-filled first), PSNR as fastMRI's evaluate.py over the slices.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from benchmarks.tuning_common import psnr, targets, val_volume
from mrdiff.pipeline import MaskSpec, MethodSpec, reconstruct_volume


def main(argv: list[str]) -> int:
    """Run the grid and print the numbers."""
    torch.set_num_threads(1)
    from mrdiff.priors import load_prior

    info = val_volume("data/open-brain-128/val")
    slices = [int(s) for s in argv[0].split(",")]
    nfes, zetas = [int(s) for s in argv[1].split(",")], [float(s) for s in argv[2].split(",")]
    kind, accel, cf = (argv[3], float(argv[4]), float(argv[5])) if len(argv) > 5 else ("random", 4.0, 0.08)
    mask, den, tgt, cache = MaskSpec(kind, accel, cf), load_prior(None), targets(info, slices), {}
    r = reconstruct_volume(info, MethodSpec("zf"), mask, slices, maps_cache=cache)
    print(json.dumps({"zf": round(psnr(tgt, r.reconstruction), 2)}), flush=True)
    for nfe in nfes:
        for z in zetas:
            t = time.time()
            r = reconstruct_volume(
                info, MethodSpec("dps", {"zeta": z}, den, nfe), mask, slices, maps_cache=cache
            )
            row = {"nfe": nfe, "zeta": z, "psnr": round(psnr(tgt, r.reconstruction), 2)}
            print(json.dumps({**row, "s": round(time.time() - t, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
