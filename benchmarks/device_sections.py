"""Measurements of ``benchmarks.device_check``: CUDA/CPU agreement, batched throughput, denoiser
TFLOP/s and training images/s. Each function takes a :class:`Budget` and skips (with a recorded
reason) whatever would not fit in it; nothing here writes files.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mrdiff.consistency import REGISTRY
from mrdiff.io import center_crop, list_volumes, open_volume
from mrdiff.noise import make_generator, seed_for
from mrdiff.operators import CartesianOperator

FP32_REL_TOL = 1e-3  # ||x_cuda - x_cpu|| / ||x_cpu|| allowed for the strict-fp32 CUDA path
FP32_PSNR_TOL = 0.01  # dB, |PSNR_cuda - PSNR_cpu| allowed for the strict-fp32 CUDA path
BF16_PSNR_LOSS = 0.1  # dB, PSNR_cpu - PSNR_bf16 allowed (issue 12)
THROUGHPUT_METHODS = ("ccdf", "dds", "dps")


def log(msg: str) -> None:
    """Progress line on stderr (this is a benchmark script, not library code)."""
    print(f"[device_check] {msg}", file=sys.stderr, flush=True)


class Budget:
    """A wall-clock deadline; ``share`` splits what is left among the sections still to run."""

    def __init__(self, seconds: float, start: float | None = None):
        self.deadline = (time.perf_counter() if start is None else start) + seconds

    def left(self) -> float:
        """Seconds until the deadline (negative when past it)."""
        return self.deadline - time.perf_counter()

    def share(self, weight: float, total_weight: float) -> Budget:
        """A sub-budget of ``weight / total_weight`` of the time left (never past this deadline)."""
        return Budget(max(0.0, self.left()) * weight / max(total_weight, weight))

    def skip_reason(self, need_s: float) -> str | None:
        """None if ``need_s`` seconds fit, else the reason to record."""
        if need_s <= self.left():
            return None
        return f"budget: needs ~{need_s:.1f} s, {max(0.0, self.left()):.1f} s left"


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def strict_fp32(enabled: bool):
    """Disable TF32 in cuBLAS and cuDNN inside the block (true fp32 on Ampere and later)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.detach().cpu().to(torch.complex128), b.detach().cpu().to(torch.complex128)
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------------
# CUDA vs CPU agreement on the demo slices


@dataclass
class DemoInput:
    """One demo volume prepared on the CPU: k-space, operator parts, target, CCDF warm start."""

    name: str
    y: torch.Tensor  # (S, C, H, W)
    mask: torch.Tensor
    maps: torch.Tensor | None
    target: np.ndarray | None  # (S, h, w) magnitude
    recon_size: tuple[int, int]
    init: torch.Tensor  # (S, H, W)
    seeds: list[int]


def demo_inputs(data_dir: Path, max_slices: int, init_method: str, max_files: int = 100) -> list[DemoInput]:
    """Read every volume of ``data_dir`` with mrdiff's I/O, mask it as ``mrdiff recon`` does (the file's
    own mask, else random 1-D 4x seeded by the file name) and estimate ESPIRiT maps, on the CPU. The CCDF
    warm start is the baseline ``init_method`` (e.g. ``"zf"``, ``"sense"``, ``"cs-l1"``)."""
    from mrdiff.baselines import BASELINES
    from mrdiff.pipeline import MaskSpec, _slice_inputs, volume_mask

    out = []
    for path in list_volumes(data_dir)[:max_files]:
        info = open_volume(path)
        mask = volume_mask(info, MaskSpec("random", 4.0, 0.08))
        idx = list(range(min(max_slices, info.shape[0])))
        parts = [_slice_inputs(info, i, mask) for i in idx]
        y = torch.stack([p[0] for p in parts])
        maps = None if parts[0][1] is None else torch.stack([p[1] for p in parts])
        op = CartesianOperator(mask, maps)
        init = BASELINES[init_method](y, op)
        target = None
        if parts[0][2] is not None:
            target = np.stack([center_crop(p[2], info.recon_size).float().numpy() for p in parts])
        seeds = [seed_for(0, path.name, i) for i in idx]
        out.append(DemoInput(path.name, y, mask, maps, target, info.recon_size, init, seeds))
    return out


def run_demo(inp: DemoInput, method: str, denoiser, device, nfe: int, autocast: bool) -> torch.Tensor:
    """Reconstruct ``inp`` on ``device``; noise comes from CPU generators, so it is identical on every
    device. Returns the complex result ``(S, H, W)`` on the CPU."""
    from mrdiff.reconstruct import reconstruct

    maps = None if inp.maps is None else inp.maps.to(device)
    op = CartesianOperator(inp.mask.to(device), maps)
    gens = [make_generator(s) for s in inp.seeds]
    res = reconstruct(
        inp.y.to(device), op, method, denoiser, nfe=nfe, generators=gens, init=inp.init, autocast=autocast
    )
    sync(torch.device(device))
    return res.mean.cpu()


def psnr(inp: DemoInput, x: torch.Tensor) -> float | None:
    """fastMRI PSNR of the magnitude of ``x`` against the demo target (None without a target)."""
    from mrdiff.metrics import volume_metrics

    if inp.target is None:
        return None
    recon = center_crop(x.abs(), inp.recon_size).float().numpy()
    return volume_metrics(inp.target, recon)["PSNR"]


def judge(row: dict) -> None:
    """Set ``fp32_pass`` / ``bf16_pass`` of one (method, file) row from the stated tolerances."""
    p_ref, p32, p16 = row.get("psnr_cpu"), row.get("psnr_fp32"), row.get("psnr_bf16")
    if "rel_fp32" in row:
        ok = row["rel_fp32"] <= FP32_REL_TOL
        row["fp32_pass"] = ok and (p_ref is None or abs(p32 - p_ref) <= FP32_PSNR_TOL)
    if "rel_bf16" in row:
        row["bf16_pass"] = None if p_ref is None else bool(p_ref - p16 <= BF16_PSNR_LOSS)


def agreement(ref_den, dut_den, dut, inputs, methods, nfe, budget: Budget) -> dict:
    """Every method on every demo input: CPU fp32 reference vs ``dut`` in strict fp32 and bf16 autocast.

    Returns rows with PSNR (where a target exists), relative differences and pass/fail per path.
    """
    rows, cost = [], {}
    for method in methods:
        grad = REGISTRY[method].needs_grad
        for inp in inputs:
            row = {"method": method, "file": inp.name, "slices": int(inp.y.shape[0]), "nfe": nfe}
            est = cost.get((grad, inp.name), 0.0)
            reason = budget.skip_reason(est)
            if reason:
                rows.append({**row, "skipped": reason})
                continue
            t0 = time.perf_counter()
            ref = run_demo(inp, method, ref_den, "cpu", nfe, autocast=False)
            row["cpu_s"] = time.perf_counter() - t0
            row["psnr_cpu"] = psnr(inp, ref)
            with strict_fp32(True):
                x32 = run_demo(inp, method, dut_den, dut, nfe, autocast=False)
            x16 = run_demo(inp, method, dut_den, dut, nfe, autocast=True)
            row.update(rel_fp32=rel_diff(x32, ref), psnr_fp32=psnr(inp, x32))
            row.update(rel_bf16=rel_diff(x16, ref), psnr_bf16=psnr(inp, x16))
            judge(row)
            cost[(grad, inp.name)] = 1.3 * (time.perf_counter() - t0)
            rows.append(row)
            log(f"agreement {method} {inp.name}: " + ", ".join(f"{k}={v}" for k, v in _short(row).items()))
    return {"rows": rows, "summary": agreement_summary(rows)}


def _short(row: dict) -> dict:
    keys = ("psnr_cpu", "psnr_fp32", "psnr_bf16", "rel_fp32", "rel_bf16", "fp32_pass", "bf16_pass")
    return {k: (f"{row[k]:.4g}" if isinstance(row[k], float) else row[k]) for k in keys if k in row}


def agreement_summary(rows: list[dict]) -> dict:
    """Per method: fp32 / bf16 pass (False if any file fails, True if some pass and none fails, None if
    nothing was judged) and the number of skipped (method, file) rows."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        entry = {}
        for key in ("fp32_pass", "bf16_pass"):
            vals = [r.get(key) for r in mine]
            entry[key] = False if False in vals else (True if True in vals else None)
        entry["skipped_rows"] = sum("skipped" in r for r in mine)
        out[method] = entry
    return out


# ----------------------------------------------------------------------------------------------------
# batched throughput on synthetic multi-coil k-space


def synthetic_kspace(batch: int, coils: int, size: int, device, seed: int = 0):
    """Smooth random complex images, Gaussian-profile coil maps (``sum |S|^2 = 1``) around a ring and a
    random 1-D mask (4x, 8% centre; drawn here, so this section needs neither fastmri nor sigpy):
    returns ``(y (B, C, H, W), operator)`` on ``device``."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, 2, max(2, size // 8), max(2, size // 8), generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    x = torch.complex(up[:, 0], up[:, 1])
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angles = torch.arange(coils) * (2 * math.pi / coils)
    dist2 = (xx - 1.2 * angles.cos()[:, None, None]) ** 2 + (yy - 1.2 * angles.sin()[:, None, None]) ** 2
    maps = torch.exp(-dist2) * torch.exp(1j * angles[:, None, None])
    maps = (maps / (maps.abs() ** 2).sum(0, keepdim=True).sqrt()).to(torch.complex64)
    maps = maps.expand(batch, -1, -1, -1).contiguous()
    centre = (torch.arange(size) - size // 2).abs() < max(1, round(0.08 * size)) / 2
    mask = centre | (torch.rand(size, generator=g) < (0.25 - 0.08) / 0.92)
    op = CartesianOperator(mask.to(device), maps.to(device))
    return op.A(x.to(device)), op


def _time_recon(method, denoiser, y, op, nfe, device) -> tuple[float, int]:
    """Seconds of one bf16 reconstruction (CUDA generators, as ``mrdiff recon`` on a GPU); NFE used."""
    from mrdiff.reconstruct import reconstruct

    gens = [make_generator(seed_for(0, "throughput", i), device) for i in range(y.shape[0])]
    sync(device)
    t0 = time.perf_counter()
    res = reconstruct(y, op, method, denoiser, nfe=nfe, generators=gens, init=op.AH(y), autocast=True)
    sync(device)
    return time.perf_counter() - t0, res.nfe


def throughput(denoisers: dict, grid: dict, device, budget: Budget) -> dict:
    """Slices/s of each method per (size, NFE, batch); cheap combinations first, the rest skipped when
    the estimate (from the measured cost per slice and NFE of the same method and size) does not fit.

    ``denoisers`` maps size -> (label, denoiser, seconds of a one-slice forward or None); ``grid`` has
    ``methods, nfes, batches, coils``.
    """
    rows = []
    for size, (label, den, slice_s) in denoisers.items():
        for method in grid["methods"]:
            # seconds per slice per NFE: a prior from the forward time, then the first measured cell
            per_call = None if slice_s is None else slice_s * (3 if REGISTRY[method].needs_grad else 1)
            for nfe in grid["nfes"]:
                for batch in grid["batches"]:
                    row = {"method": method, "size": size, "nfe": nfe, "batch": batch, "denoiser": label}
                    need = 2.0 if per_call is None else 1.5 * per_call * batch * (nfe + 2) + 0.5
                    reason = budget.skip_reason(need)
                    if reason:
                        rows.append({**row, "skipped": reason})
                        continue
                    rows.append({**row, **_throughput_cell(method, den, size, nfe, batch, grid, device)})
                    if "seconds" in rows[-1] and batch == grid["batches"][0]:
                        per_call = rows[-1]["seconds"] / (batch * nfe)
                    log(f"throughput {rows[-1]}")
    return {"rows": rows, "coils": grid["coils"], "mask": "random 1-D 4x", "precision": "bf16 autocast"}


def _throughput_cell(method, den, size, nfe, batch, grid, device) -> dict:
    """Warm-up (2 NFE) and one timed run of one cell; OOM is recorded, not raised."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        y, op = synthetic_kspace(batch, grid["coils"][size], size, device)
        _time_recon(method, den, y, op, 2, device)
        seconds, used = _time_recon(method, den, y, op, nfe, device)
    except torch.cuda.OutOfMemoryError as err:
        return {"skipped": f"out of memory: {str(err).splitlines()[0]}"}
    out = {"seconds": seconds, "nfe_used": used, "slices_per_s": batch / seconds}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


# ----------------------------------------------------------------------------------------------------
# achieved TFLOP/s of the denoiser, and the chip's bf16 matmul rate


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` counted by ``torch.utils.flop_counter.FlopCounterMode`` (convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def timed(fn, device, budget_s: float, min_iters: int = 3, max_iters: int = 50) -> tuple[float, int]:
    """Mean seconds per call of ``fn`` after one warm-up, iterations sized to ``budget_s``."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    iters = int(min(max_iters, max(min_iters, budget_s / one)))
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters, iters


def _forward(den, batch: int, size: int, device):
    """A no-grad bf16-autocast (on CUDA) forward of ``den`` on random ``(batch, size, size)`` images."""
    x = torch.randn(batch, size, size, dtype=torch.complex64, device=device)
    sigma = torch.ones(batch, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def fwd():
        with torch.no_grad(), ctx:
            den(x, sigma)

    return fwd


def meta_flops(cfg, size: int) -> int:
    """FLOPs of a one-slice forward of ``cfg``'s denoiser, counted on the meta device (no compute)."""
    from mrdiff.config import to_dict
    from mrdiff.priors import build_denoiser

    with torch.device("meta"):
        den = build_denoiser(to_dict(cfg))
        x, sigma = torch.zeros(1, size, size, dtype=torch.complex64), torch.ones(1)
    return count_flops(lambda: den(x, sigma))


def fit_batch(batch: int, slice_s: float, calls: float, budget: Budget) -> int:
    """``batch`` halved until ``calls`` forwards of a batch (``slice_s`` per slice) fit the budget."""
    while batch > 1 and calls * slice_s * batch > budget.left():
        batch //= 2
    return batch


def denoiser_tflops(
    label: str, den, flops_1: int, size: int, batch: int, device, budget: Budget, **kw
) -> dict:
    """Achieved TFLOP/s of a no-grad forward of ``den`` on ``(batch, size, size)`` in bf16 autocast.

    ``flops_1``: FLOPs of one slice (:func:`meta_flops`; the batch costs ``batch`` times that). With a
    ``rate`` (FLOP/s of an earlier measurement) the one-slice probe is skipped when it would not fit;
    the probe's time (``slice_s``) then halves the batch until a warm-up and two timed calls fit.
    ``cap_s`` bounds the timed repeats.
    """
    row = {"denoiser": label, "size": size, "gflop_per_slice": flops_1 / 1e9}
    if kw.get("rate"):
        reason = budget.skip_reason(3 * flops_1 / kw["rate"])
        if reason:
            return {**row, "skipped": reason}
    one = _forward(den, 1, size, device)
    one()
    sync(device)
    t0 = time.perf_counter()
    one()
    sync(device)
    row["slice_s"] = time.perf_counter() - t0
    row["batch"] = batch = fit_batch(batch, row["slice_s"], 4, budget)
    reason = budget.skip_reason(4 * row["slice_s"] * batch)
    if reason:
        return {**row, "skipped": reason}
    fwd = _forward(den, batch, size, device)
    seconds, iters = timed(fwd, device, min(kw.get("cap_s", 5.0), budget.left() / 4), min_iters=2)
    return {**row, "seconds": seconds, "iters": iters, "tflops": flops_1 * batch / seconds / 1e12}


def matmul_tflops(device, n: int, budget: Budget, cap_s: float = 2.0) -> dict:
    """bf16 (fp32 on CPU) square matmul rate: the achievable dense peak on this chip.

    Sizes double from 512 up to ``n`` while ~6 products of the next size (predicted by the cube law
    from the last one) fit in ``cap_s`` and the budget; the largest size reached is reported.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = min(512, n)
    while True:
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        seconds, iters = timed(partial(torch.matmul, a, b), device, min(cap_s, budget.left() / 4), 2)
        if size >= n or 6 * seconds * 8 > min(cap_s, budget.left() / 4):
            break
        size *= 2
    return {"n": size, "dtype": str(dtype), "iters": iters, "tflops": 2 * size**3 / seconds / 1e12}


# ----------------------------------------------------------------------------------------------------
# training images/s per preset


def train_rate(cfg, device, budget: Budget, cap_s: float = 8.0, slice_s: float | None = None) -> dict:
    """Images/s of ``mrdiff.training.train_step`` (batch assembly and augmentation included) on random
    smooth images, FLOPs of one step, and peak GPU memory. ``slice_s`` (a one-slice forward) estimates
    a step as three forwards per image; the preset is skipped when four steps would not fit."""
    if slice_s is not None:
        reason = budget.skip_reason(4 * 3 * slice_s * cfg.train.batch_size)
        if reason:
            return {"skipped": reason}
    from benchmarks.train_throughput import MemoryData
    from mrdiff.training import init_state, make_batch, train_step

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    state = init_state(cfg, device)
    data = MemoryData(max(8, cfg.train.batch_size), cfg.data.resolution)
    b = cfg.train.batch_size  # a patch prior's batch positions are images of patches_per_image patches
    images = b // cfg.data.patches_per_image if cfg.model.family == "patch" else b

    def step(i: int) -> None:
        x0, pos, _ = make_batch(data, cfg, i, range(images))
        pos = None if pos is None else pos.to(device)
        train_step(state, state.model, x0.to(device), cfg, make_generator(i, device), pos)

    flops = count_flops(lambda: step(0))
    seconds, iters = timed(lambda: step(state.step), device, min(cap_s, budget.left() / 2), 2, 20)
    row = {"batch": b, "resolution": cfg.data.resolution, "precision": cfg.train.precision}
    row["family"] = cfg.model.family  # patch prior: "images" are patches of the largest size
    row["params_m"] = sum(p.numel() for p in state.model.parameters()) / 1e6
    row.update(steps=iters, images_per_s=b / seconds, tflops=flops / seconds / 1e12)
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row
