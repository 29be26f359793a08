"""Tune the baselines (CS lambda for cs-l1 / cs-tv, CG iterations for sense) on validation slices.

Usage (on the prepared validation split only, never on `test`)::

    nice -n 10 .venv/bin/python benchmarks/tune_cs.py --data data/open-brain-128/val --slices 4 \
        --out runs/tune_cs.json

Until the prepared split exists, ``--simulate-colin DIR --colin ch2.nii.gz`` first writes one multi-coil
volume simulated from the Colin27 T1 head (``colin27-t1/ch2.nii.gz`` of the shared data, BSD-3, Holmes
et al. JCAT 1998): magnitude
on a 256 grid, smooth random phase, 8 birdcage coils, k-space cropped to 128 (no inverse crime),
complex Gaussian noise at ``--snr-db``. Masks: fastMRI ``random``, 4x/0.08 and 8x/0.04, seeded from
the file name. Coil maps come from the calibration region (ESPIRiT) once per slice. SSIM/PSNR/NMSE as
fastMRI's evaluate.py (per volume, over the chosen slices).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from mrdiff.baselines import BASELINES
from mrdiff.coils import estimate_maps
from mrdiff.fft import fft2c, ifft2c
from mrdiff.io import center_crop, list_volumes, open_volume, read_slice
from mrdiff.masks import make_mask
from mrdiff.metrics import volume_metrics
from mrdiff.noise import complex_randn, make_generator, seed_for
from mrdiff.operators import CartesianOperator

SETTINGS = ((4, 0.08), (8, 0.04))
GRID = {
    "sense": ("iters", (3, 5, 8, 15, 30)),
    "cs-l1": ("lamda", (0.002, 0.005, 0.01, 0.02, 0.05)),
    "cs-tv": ("lamda", (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)),
}


def _birdcage(coils: int, n: int) -> torch.Tensor:
    import sigpy.mri

    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, n, n), r=1.3).astype(np.complex64))
    return maps / maps.abs().square().sum(0, keepdim=True).sqrt()


def simulate_colin(
    out_dir: Path, source: Path, n: int = 128, coils: int = 8, snr_db: float = 30.0, slices=(80, 90, 100)
):
    """Write ``colin_sim.h5`` (prepared layout) simulated from axial slices of the Colin27 NIfTI
    ``source`` (``colin27-t1/ch2.nii.gz``); return its path."""
    import nibabel as nib

    vol = np.asarray(nib.load(source).dataobj, np.float32)
    vol = vol / np.percentile(vol, 99.5)
    fine, ks, rss_all = 2 * n, [], []
    for s in slices:
        g = make_generator(seed_for("colin_sim", s))
        img = torch.from_numpy(np.rot90(vol[:, :, s]).copy())[None, None]
        x = F.interpolate(img, size=(fine, fine), mode="bicubic", antialias=True)[0, 0].clamp_min(0)
        phase = F.interpolate(torch.randn(1, 1, 4, 4, generator=g), size=(fine, fine), mode="bicubic")[0, 0]
        xc = x.to(torch.complex64) * torch.polar(torch.ones_like(x), 2 * phase)
        lo, hi = fine // 2 - n // 2, fine // 2 + n // 2
        k = fft2c(_birdcage(coils, fine) * xc)[:, lo:hi, lo:hi] * (fine / n)  # keep intensities
        rss = ifft2c(k).abs().square().sum(0).sqrt()
        sigma = float(rss[rss > 0.1 * rss.max()].mean()) / 10 ** (snr_db / 20)
        ks.append(k + sigma * complex_randn(tuple(k.shape), g))
        rss_all.append(rss)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "colin_sim.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = torch.stack(ks).numpy().astype(np.complex64)
        f["reconstruction_rss"] = torch.stack(rss_all).numpy().astype(np.float32)
        f.attrs.update({"simulated": True, "snr_db": snr_db, "source": "colin27 ch2.nii.gz", "split": "dev"})
    return path


def _slice_batch(info, idx: list[int], accel: float, cf: float):
    mask = make_mask("random", info.shape[2:], accel, cf, info.path.name)
    ys, maps, targets = [], [], []
    for i in idx:
        data = read_slice(info, i)
        y = data.kspace * mask
        ys.append(y)
        maps.append(None if y.shape[0] == 1 else estimate_maps(y, mask))
        targets.append(data.target)
    maps_t = None if maps[0] is None else torch.stack(maps)
    return torch.stack(ys), CartesianOperator(mask, maps_t), torch.stack(targets).numpy()


def evaluate_volume(path: Path, n_slices: int, grid: dict = GRID) -> list[dict]:
    """Every (setting, method, lambda) on the central ``n_slices`` of one volume."""
    info = open_volume(path)
    S = info.shape[0]
    idx = list(range(max(0, S // 2 - n_slices // 2), min(S, S // 2 - n_slices // 2 + n_slices)))
    rows = []
    for accel, cf in SETTINGS:
        y, op, target = _slice_batch(info, idx, accel, cf)
        runs = [("zf", None, None)] + [(m, key, v) for m, (key, values) in grid.items() for v in values]
        for method, key, lam in runs:
            t0 = time.perf_counter()
            x = BASELINES[method](y, op, **({} if key is None else {key: lam}))
            pred = center_crop(x.abs(), target.shape[-2:]).numpy()
            m = volume_metrics(target, pred)
            rows.append(
                {
                    "file": path.name,
                    "accel": accel,
                    "method": method,
                    "lamda": lam,
                    **m,
                    "seconds_per_slice": (time.perf_counter() - t0) / len(idx),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean SSIM/PSNR per (accel, method, value) and the best value (lambda, or CG iterations for
    sense) per (accel, method), chosen by SSIM."""
    table: dict = {}
    for r in rows:
        key = (r["accel"], r["method"], r["lamda"])
        table.setdefault(key, []).append(r)
    means = {
        k: {m: float(np.mean([r[m] for r in v])) for m in ("SSIM", "PSNR", "NMSE")} for k, v in table.items()
    }
    best = {}
    for (accel, method, lam), v in means.items():
        b = best.get(f"{method}@{accel}x")
        if b is None or v["SSIM"] > b["SSIM"]:
            best[f"{method}@{accel}x"] = {"lamda": lam, **v}
    return {"means": {f"{a}x {m} {lam}": v for (a, m, lam), v in means.items()}, "best": best}


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/open-brain-128/val"), help="validation files")
    p.add_argument("--simulate-colin", type=Path, default=None, help="simulate a Colin27 volume into DIR")
    p.add_argument("--colin", type=Path, default=None, help="Colin27 NIfTI for --simulate-colin (ch2.nii.gz)")
    p.add_argument("--slices", type=int, default=3, help="central slices per volume")
    p.add_argument("--max-files", type=int, default=4, help="at most this many volumes")
    p.add_argument("--out", type=Path, default=Path("runs/tune_cs.json"), help="JSON summary")
    p.add_argument("--method", choices=list(GRID), default=None, help="sweep only this method")
    p.add_argument("--values", type=float, nargs="*", default=None, help="values to sweep for --method")
    args = p.parse_args()
    if args.simulate_colin and not (args.colin and args.colin.is_file()):
        p.error(f"--simulate-colin needs --colin PATH to colin27-t1/ch2.nii.gz (got {args.colin})")
    grid = dict(GRID)
    if args.method:
        key, values = GRID[args.method]
        grid = {args.method: (key, tuple(args.values or values))}
        if key == "iters":
            grid[args.method] = (key, tuple(int(v) for v in grid[args.method][1]))
    torch.set_num_threads(1)
    files = (
        [simulate_colin(args.simulate_colin, args.colin)] if args.simulate_colin else list_volumes(args.data)
    )
    rows = [r for f in files[: args.max_files] for r in evaluate_volume(f, args.slices, grid)]
    summary = summarise(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, **summary}, indent=1))
    print(json.dumps(summary["best"], indent=1))


if __name__ == "__main__":
    main()
