"""How close is the k-space noise estimate to the noise that was simulated? (issue 13)

For the central ``--slices`` slices of each `val` volume under ``--data`` (comma-separated split
directories, e.g. the 30 dB and 45 dB copies), every mask x acceleration: the ratio of
:func:`mrdiff.noise.kspace_noise_sigma` to the file's ``noise_sigma`` (the sigma per real component that
`mrdiff prep` added), for the plain MAD over all coils (``virtual_coils=False``) and for the weak
virtual coils (the default). The noise-aware data step (``noise=1``) multiplies this estimate, so a
ratio far from 1 makes it over- or under-smooth.

    python -m benchmarks.noise_estimate --data data/open-brain-128/val,data/open-brain-128-45db/val
"""

from __future__ import annotations

import h5py
import numpy as np
import torch

from benchmarks.tuning_common import (
    append_jsonl,
    eval_slices,
    mask_spec,
    one_line_errors,
    val_parser,
    val_volume,
)
from mrdiff.errors import InputError
from mrdiff.io import read_slice
from mrdiff.masks import as_2d
from mrdiff.noise import kspace_noise_sigma
from mrdiff.pipeline import volume_mask


def ratios(info, slices: list[int], kind: str, accel: float) -> dict:
    """Per-slice estimate / simulated sigma of both estimators on one masked cell."""
    with h5py.File(info.path, "r") as f:
        if "noise_sigma" not in f:
            raise InputError(f"{info.path}: no noise_sigma (only simulated sets record their noise)")
        truth = np.asarray(f["noise_sigma"][slices], np.float64)
    mask = as_2d(volume_mask(info, mask_spec(kind, accel)), info.shape[-2:])
    y = torch.stack([read_slice(info, s).kspace * mask for s in slices])
    return {
        "file": info.path.name,
        "snr_db": info.attrs.get("snr_db"),
        "mask": kind,
        "accel": accel,
        "slices": slices,
        "plain": (kspace_noise_sigma(y, virtual_coils=False).numpy() / truth).tolist(),
        "virtual": (kspace_noise_sigma(y).numpy() / truth).tolist(),
    }


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = val_parser(__doc__, "random,equispaced,poisson", "4,8")
    p.set_defaults(data="data/open-brain-128/val,data/open-brain-128-45db/val")
    p.add_argument("--slices", type=int, default=5, help="central slices per volume")
    args = p.parse_args(argv)
    print("| SNR dB | mask | plain MAD / true | weak virtual coils / true |")
    print("|---|---|---|---|")
    for root in str(args.data).split(","):
        info = val_volume(root)
        for kind in args.masks.split(","):
            for accel in args.accels.split(","):
                rec = ratios(info, eval_slices(info, args.slices), kind, float(accel))
                cols = [
                    f"{np.mean(rec[k]):.2f} ({min(rec[k]):.2f}-{max(rec[k]):.2f})"
                    for k in ("plain", "virtual")
                ]
                print(f"| {rec['snr_db']:g} | {kind} {float(accel):g}x | {cols[0]} | {cols[1]} |", flush=True)
                append_jsonl(args.json, rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
