"""Speed and quality of the diffusion reconstruction methods.

Speed: seconds per slice of ``mrdiff.reconstruct.reconstruct`` per method at a fixed NFE, the time of
one denoiser call ``t_D`` (no grad; and forward+backward for gradient methods) and the loop overhead
``(t - NFE * t_D) / (NFE * t_D)``; since that difference is noisy on a shared CPU, the loop is also
timed alone with a zero-cost denoiser (``overhead_null_denoiser = t_loop / (NFE * t_D)``).
Quality: PSNR/SSIM (fastMRI conventions, ``mrdiff.metrics``) vs NFE for the chosen methods on a
few slices of the `val` split (same masks, ESPIRiT maps, CS warm start and per-slice seeds as
``mrdiff recon``; inputs computed once per file and acceleration).

Example::

    nice -n 10 .venv/bin/python -m benchmarks.recon_speed --prior runs/brain128/ckpt.pt \
        --data data/open-brain-128/val --speed-methods all --quality-methods dds,ccdf --nfe 50 \
        --quality-nfe 10,25,50 --accel 4,8 --volumes 2 --slices 2 --out runs/recon_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tuning_common import one_line_errors, targets
from mrdiff.atomic import atomic_path
from mrdiff.baselines import BASELINES
from mrdiff.consistency import REGISTRY
from mrdiff.errors import InputError
from mrdiff.io import center_crop, list_volumes, open_volume
from mrdiff.metrics import volume_metrics
from mrdiff.noise import make_generator, seed_for
from mrdiff.operators import CartesianOperator
from mrdiff.overrides import parse_set, split_set, yaml_value
from mrdiff.pipeline import MaskSpec, _batch, _slice_inputs, volume_mask
from mrdiff.reconstruct import SCALE_ITERS, estimate_scale, reconstruct
from mrdiff.sampling import denoise
from mrdiff.scaling import image_scale


def _method_param(key: str, item: str) -> tuple[str, str]:
    """``"method.param"`` -> ``("method", "param")``; anything else is an InputError naming ``item``."""
    method, dot, param = key.partition(".")
    if not dot or not method or not param:
        raise InputError(f"expected method.param=value, got {item!r}")
    return method, param


def _parse_params(items: list[str]) -> dict:
    """``method.param=value`` pairs -> ``{method: {param: value}}`` (values YAML, as ``mrdiff recon``)."""
    out: dict = {}
    for item in items:
        key, value = parse_set(item)
        method, param = _method_param(key, item)
        out.setdefault(method, {})[param] = value
    return out


def time_denoiser(denoiser, x: torch.Tensor, grad: bool, repeats: int = 5) -> float:
    """Median seconds of one denoiser call at sigma = 1 (forward+backward when ``grad``)."""
    times = []
    for _ in range(repeats + 1):
        xin = x.detach().requires_grad_(grad)
        t0 = time.perf_counter()
        with torch.enable_grad() if grad else torch.no_grad():
            out = denoise(denoiser, xin, 1.0)
            if grad:
                torch.autograd.grad(out.abs().pow(2).sum(), xin)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


class _Instant:
    """A zero-cost stand-in denoiser (``x / 2``) with the prior's sigma range: times the loop alone."""

    def __init__(self, like) -> None:
        self.sigma_min, self.sigma_max = like.sigma_min, like.sigma_max

    def __call__(self, x, sigma):
        return x * 0.5


def speed(denoiser, y, op, methods, nfe, params, init) -> list[dict]:
    """Seconds per slice and loop overhead per method on one batch ``y``."""
    B = y.shape[0]
    x = op.AH(y)
    t_plain, t_grad = time_denoiser(denoiser, x, False), time_denoiser(denoiser, x, True)
    rows = []
    for name in methods:
        gens = [make_generator(i, y.device) for i in range(B)]
        t0 = time.perf_counter()
        res = reconstruct(y, op, name, denoiser, nfe=nfe, generators=gens, params=params.get(name), init=init)
        if y.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter() - t0
        t_d = t_grad if REGISTRY[name].needs_grad else t_plain
        t1 = time.perf_counter()
        reconstruct(
            y, op, name, _Instant(denoiser), nfe=nfe, generators=gens, params=params.get(name), init=init
        )
        t_loop = time.perf_counter() - t1
        rows.append(
            {
                "method": name,
                "nfe": res.nfe,
                "batch": B,
                "s_per_slice": t / B,
                "t_D": t_plain,
                "t_D_grad": t_grad,
                "overhead": (t - res.nfe * t_d) / (res.nfe * t_d),
                "loop_s": t_loop,
                "overhead_null_denoiser": t_loop / (res.nfe * t_d),
                "residual": float(res.residual.mean()),
            }
        )
    return rows


def _grid(items: list[str]) -> dict:
    """``method.param=v1,v2`` -> ``{method: [{param: v1}, {param: v2}]}`` (cartesian over params)."""
    out: dict = {}
    for item in items:
        key, raw = split_set(item)
        method, param = _method_param(key, item)
        values = [yaml_value(v, item) for v in raw.split(",")]
        prev = out.get(method, [{}])
        out[method] = [{**p, param: v} for p in prev for v in values]
    return out


def calibration(files, accels, slices) -> list[dict]:
    """Ratio ``image_scale(ground truth) / estimate_scale(y, op)`` per file and acceleration."""
    rows = []
    for accel in accels:
        for path in files:
            info = open_volume(path)
            mask = volume_mask(info, MaskSpec("random", accel, 0.08))
            mid = info.shape[0] // 2
            for i in range(max(0, mid - slices // 2), min(info.shape[0], mid - slices // 2 + slices)):
                y, maps, target = _slice_inputs(info, i, mask)
                op = CartesianOperator(mask, None if maps is None else maps[None])
                ratio = float(image_scale(target[None]) / estimate_scale(y[None], op, SCALE_ITERS)[0])
                rows.append({"file": path.name, "slice": i, "accel": accel, "ratio": ratio})
    return rows


def _volume_inputs(path, accel, slices, device, init_method):
    """Middle slices of one file: (y, op, target (S,h,w), recon_size, init or None), computed once."""
    info = open_volume(path)
    mid = info.shape[0] // 2
    idx = list(range(max(0, mid - slices // 2), min(info.shape[0], mid - slices // 2 + slices)))
    mask = volume_mask(info, MaskSpec("random", accel, 0.08))
    y, op = _batch(info, idx, mask, device, None)
    target = targets(info, idx)
    init = BASELINES[init_method](y, op) if init_method else None
    return y, op, target, info.recon_size, init, [seed_for(0, path.name, i) for i in idx]


def quality(
    denoiser, files, methods, nfes, accels, slices, params, device, grid=None, samples=1, baselines=()
):
    """PSNR/SSIM vs NFE (and a parameter grid) on the middle ``slices`` slices of each file.

    Inputs (coil maps, CCDF's CS warm start) are computed once per file and acceleration.
    """
    rows = []
    for accel in accels:
        init_method = "cs-l1" if "ccdf" in methods else None
        inputs = [_volume_inputs(path, accel, slices, device, init_method) for path in files]
        for name in baselines:
            per_vol = [
                volume_metrics(t, center_crop(BASELINES[name](y, op).abs(), size).float().cpu().numpy())
                for y, op, t, size, _, _ in inputs
            ]
            row = {"method": name, "accel": accel, "nfe": 0}
            row.update({k: float(np.mean([v[k] for v in per_vol])) for k in ("PSNR", "SSIM")})
            rows.append(row)
            print(json.dumps(row), flush=True)
        for name in methods:
            for nfe, extra in ((n, e) for n in nfes for e in (grid or {}).get(name, [{}])):
                prm = {**params.get(name, {}), **extra}
                per_vol, secs = [], []
                for y, op, target, size, init, seeds in inputs:
                    gens = [make_generator(sd, device) for sd in seeds]
                    t0 = time.perf_counter()
                    res = reconstruct(
                        y,
                        op,
                        name,
                        denoiser,
                        nfe=nfe,
                        samples=samples,
                        generators=gens,
                        params=prm,
                        init=init,
                    )
                    secs.append((time.perf_counter() - t0) / len(y))
                    recon = center_crop(res.mean.abs(), size).float().cpu().numpy()
                    per_vol.append(volume_metrics(target, recon))
                row = {"method": name, "accel": accel, "nfe": nfe, "samples": samples, "params": prm}
                row["PSNR"] = float(np.mean([v["PSNR"] for v in per_vol]))
                row["SSIM"] = float(np.mean([v["SSIM"] for v in per_vol]))
                row["s_per_slice"] = float(np.mean(secs))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _speed_batch(files, slices, accel, device):
    """``slices`` slices of the first file with its retrospective mask, as (y, op)."""
    info = open_volume(files[0])
    mask = volume_mask(info, MaskSpec("random", accel, 0.08))
    return _batch(info, list(range(min(slices, info.shape[0]))), mask, device, None)


def _parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default=None, help="prior file or training checkpoint (default: shipped prior)")
    p.add_argument("--data", default="data/open-brain-128/val", help="val directory (never test)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--speed-methods", default="all", help="comma list or 'all' or 'none'")
    p.add_argument("--quality-methods", default="dds,ccdf", help="comma list or 'none'")
    p.add_argument("--nfe", type=int, default=50, help="NFE for the speed runs")
    p.add_argument("--quality-nfe", default="10,25,50", help="comma list of NFE for the quality runs")
    p.add_argument("--accel", default="4,8", help="comma list of accelerations")
    p.add_argument("--volumes", type=int, default=2, help="val volumes used")
    p.add_argument("--slices", type=int, default=2, help="slices per volume")
    p.add_argument("--batch", type=int, default=1, help="slices per batch in the speed runs")
    p.add_argument("--baselines", default="zf,cs-l1", help="baselines reported next to the quality runs")
    p.add_argument("--samples", type=int, default=1, help="posterior samples averaged in the quality runs")
    p.add_argument("--set", action="append", default=[], help="method.param=value")
    p.add_argument("--grid", action="append", default=[], help="method.param=v1,v2 (quality runs only)")
    p.add_argument("--calibrate", action="store_true", help="only measure the scale calibration ratio")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--out", default="runs/recon_speed.json", help="JSON output")
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; writes a JSON file and prints one line per row. Bad input: one line, exit 2."""
    a = _parser().parse_args(argv)
    params, grid = _parse_params(a.set), _grid(a.grid)  # before any work: bad input fails first
    torch.set_num_threads(a.threads)
    files = list_volumes(a.data)[: a.volumes]
    accels = [float(v) for v in a.accel.split(",")]
    if a.calibrate:
        rows = calibration(files, accels, a.slices)
        ratios = [r["ratio"] for r in rows]
        print(json.dumps({"median_ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}))
        return 0
    from mrdiff.priors import load_prior

    denoiser = load_prior(a.prior, a.device)
    result = {"prior": a.prior, "device": a.device, "threads": a.threads, "speed": [], "quality": []}
    if a.speed_methods != "none":
        methods = list(REGISTRY) if a.speed_methods == "all" else a.speed_methods.split(",")
        y, op = _speed_batch(files, a.batch, accels[0], a.device)
        init = op.AH(y)  # zero-filled warm start for CCDF (the speed of the baseline is not counted)
        for row in speed(denoiser, y, op, methods, a.nfe, params, init):
            result["speed"].append(row)
            print(json.dumps(row), flush=True)
    if a.quality_methods != "none":
        nfes = [int(v) for v in a.quality_nfe.split(",")]
        methods = a.quality_methods.split(",")
        rows = quality(
            denoiser,
            files,
            methods,
            nfes,
            accels,
            a.slices,
            params,
            a.device,
            grid,
            a.samples,
            [b for b in a.baselines.split(",") if b],
        )
        result["quality"].extend(rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
