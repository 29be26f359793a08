"""The training loop of the EDM prior: AdamW, gradient clipping, EMA, bf16 autocast, resume, DDP.

Randomness is seeded per (step, k) with :func:`mrdiff.noise.seed_for`, where k is an image's position
in the global batch: a run resumed from a checkpoint continues exactly like an uninterrupted one, and
``train.batch_size`` is the global batch, split evenly over the processes of a DDP run (rank r takes
positions ``r*b .. r*b + b - 1``, ``b = batch_size / world_size``). A global batch, its noise and,
since DDP averages the gradients, every update are then those of a single-process run with the same
config, up to float summation order: learning rate, EMA and warm-up need no scaling with the number
of processes. This module never imports ``mrdiff.sampling`` or ``mrdiff.consistency``: for a preview
grid it hands the EMA prior, as a complex-image denoiser, to the callback (``"preview"`` event), which
samples it with the one reverse loop (``mrdiff.sampling.sample_prior``). Progress goes to the callback;
nothing here prints.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mrdiff.config import Config, from_dict, to_dict
from mrdiff.data import SliceDataset, patch_items, patch_size_for, training_items, validation_batch
from mrdiff.errors import InputError
from mrdiff.losses import Generators, denoising_error, edm_loss, edm_weight
from mrdiff.noise import make_generator, seed_for
from mrdiff.priors import wrap_model
from mrdiff.priors.checkpoint import (
    check_compatible,
    export_prior,
    grown_weights,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from mrdiff.priors.patch import PatchDenoiser
from mrdiff.priors.precond import EDMPrecond

VAL_SIGMAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
Callback = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainState:
    """Everything a checkpoint restores."""

    model: EDMPrecond
    ema: EDMPrecond
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def init_state(cfg: Config, device: torch.device) -> TrainState:
    """Fresh model (seeded by ``train.seed``), EMA copy and AdamW optimizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = EDMPrecond(cfg.model).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    t = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    return TrainState(model, ema, opt)


def checkpoint_dict(state: TrainState, cfg: Config) -> dict[str, Any]:
    """Plain-type checkpoint content of ``state``."""
    return {
        "config": to_dict(cfg),
        "step": state.step,
        "elapsed_s": state.elapsed_s,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "history": state.history,
    }


def restore(state: TrainState, path: Path, cfg: Config) -> None:
    """Load a training checkpoint into ``state`` (model must match the config)."""
    ckpt = load_checkpoint(path, map_location=next(state.model.parameters()).device)
    check_compatible(ckpt["config"], to_dict(cfg), path)
    load_weights(state.model, ckpt["model"], path)
    load_weights(state.ema, ckpt["ema"], path)
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.elapsed_s = int(ckpt["step"]), float(ckpt["elapsed_s"])
    state.history = list(ckpt.get("history", []))


def init_from_prior(state: TrainState, path: Path, cfg: Config) -> None:
    """Start model and EMA from the EMA weights of a prior or checkpoint (fine-tuning, e.g. a shipped
    prior on new anatomy); the optimizer and the step count start afresh. The model must match ``cfg``,
    except that ``model.mid_blocks`` may grow: the extra blocks start as the identity
    (:func:`mrdiff.priors.checkpoint.grown_weights`), so the start is the prior's own function."""
    ckpt = load_checkpoint(path, map_location=next(state.model.parameters()).device)
    if "ema" not in ckpt:
        raise InputError(f"--init: {path} holds no EMA weights")
    check_compatible(ckpt["config"], to_dict(cfg), path, grow=True)
    stored_mid = from_dict(ckpt["config"]).model.mid_blocks
    weights = grown_weights(state.model, ckpt["ema"], stored_mid)
    load_weights(state.model, weights, path)
    load_weights(state.ema, weights, path)


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warm-up to ``train.lr`` over ``train.warmup_steps``, then constant."""
    return cfg.train.lr * min(1.0, (step + 1) / max(1, cfg.train.warmup_steps))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters and buffers."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def ema_decay(cfg: Config, step: int) -> float:
    """EMA decay with the usual warm-up ``min(decay, (1 + step) / (10 + step))``."""
    return min(cfg.train.ema_decay, (1 + step) / (10 + step))


def train_step(
    state: TrainState,
    ddp_model: torch.nn.Module,
    x0: torch.Tensor,
    cfg: Config,
    gen: Generators,
    pos: torch.Tensor | None = None,
) -> float:
    """One optimisation step on batch ``x0`` (B, C, H, W) (with coordinate channels ``pos`` for a patch
    prior); returns the mean loss.

    ``gen``: one generator for the batch's sigma and noise, or one per image (the training loop's).
    """
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, state.step)
    use_bf16 = x0.device.type == "cuda" and cfg.train.precision == "bf16"
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        denoiser = ddp_model if pos is None else functools.partial(ddp_model, pos=pos)
        loss = edm_loss(
            denoiser, x0, gen, sigma_data=cfg.model.sigma_data, p_mean=cfg.loss.p_mean, p_std=cfg.loss.p_std
        ).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.grad_clip)
    state.optimizer.step()
    update_ema(state.ema, state.model, ema_decay(cfg, state.step))
    state.step += 1
    return float(loss.detach())


def whole_image(model: EDMPrecond, cfg: Config) -> Callable:
    """``model`` as a real-channel denoiser of whole images ``(B, C, H, W)``: itself for a whole-image
    prior; for a patch prior, the deterministic tiling of :class:`mrdiff.priors.patch.PatchDenoiser`."""
    if cfg.model.family != "patch":
        return model
    tiler = PatchDenoiser(model, to_dict(cfg))
    return lambda x, s: tiler.denoise_channels(x, s, None)


@torch.no_grad()
def validation_losses(model: EDMPrecond, x0: torch.Tensor, cfg: Config, batch: int) -> dict[str, float]:
    """Denoising MSE per noise band on fixed noise, plus their EDM-weighted mean ``val_loss``.

    Whole validation images are denoised, by tiling for a patch prior (:func:`whole_image`), so the
    numbers of the two families compare directly.

    Args:
        model: denoiser on real channels (use the EMA model).
        x0: (N, C, H, W) normalised validation images on the model's device.
        cfg: config (seed, sigma_data).
        batch: chunk size.
    """
    out, weighted = {}, []
    model = whole_image(model, cfg)
    for sigma in VAL_SIGMAS:
        gen = make_generator(seed_for(cfg.train.seed, "val", sigma), x0.device)
        errs = []
        for chunk in x0.split(batch):
            noise = torch.randn(chunk.shape, generator=gen, device=x0.device)
            s = torch.full((chunk.shape[0],), sigma, device=x0.device)
            errs.append(denoising_error(model, chunk, s, noise))
        mse = float(torch.cat(errs).mean())
        out[f"mse@{sigma:g}"] = mse
        weighted.append(float(edm_weight(torch.tensor(sigma), cfg.model.sigma_data)) * mse)
    out["val_loss"] = sum(weighted) / len(weighted)
    return out


class ThreadTuner:
    """Picks 1 or ``max_threads`` CPU threads by timing both every ``period`` steps.

    On a shared, oversubscribed CPU, two OpenMP threads can be several times slower than one; when the
    machine is quiet two are faster. Used only when ``train.threads == -1`` (results then depend on
    the thread schedule, so bitwise resume reproducibility needs a fixed thread count).
    """

    def __init__(self, max_threads: int = 2, period: int = 200, probe: int = 6):
        self.choices = [1, max_threads]
        self.period, self.probe = period, probe
        self.times: dict[int, list[float]] = {c: [] for c in self.choices}
        self.best = max_threads

    def before(self, step: int) -> int:
        """Set and return the thread count for ``step``."""
        phase = step % self.period
        n = self.choices[phase // self.probe] if phase < 2 * self.probe else self.best
        torch.set_num_threads(n)
        return n

    def after(self, step: int, threads: int, seconds: float) -> None:
        """Record the time of ``step``; choose the faster setting after both probes."""
        phase = step % self.period
        if phase < 2 * self.probe and phase % self.probe > 0:  # skip the first step of each probe
            self.times[threads].append(seconds)
        if phase == 2 * self.probe - 1:
            means = {c: sum(t) / max(1, len(t)) for c, t in self.times.items()}
            self.best = min(means, key=means.get)
            self.times = {c: [] for c in self.choices}


def make_batch(
    data: SliceDataset, cfg: Config, step: int, items: range
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """This process's share ``items`` (positions in the global batch) of the batch of ``step``.

    Whole-image prior: ``(x0, None, 1)``, image k seeded by ``(step, k)``. Patch prior: ``(patches,
    coordinates, patches per image)``, where position k is an image (its patches are cut together) and
    the patch size is seeded by the step alone. Either way a resumed run, or one with another number
    of processes, sees the same global batch.
    """
    t, c = cfg.train, cfg.model.in_channels
    gens = [make_generator(seed_for(t.seed, "batch", step, k)) for k in items]
    if cfg.model.family == "patch":
        size = patch_size_for(cfg.data, make_generator(seed_for(t.seed, "patch-size", step)))
        x0, pos = patch_items(data, cfg.data, size, gens, c)
        return x0, pos, x0.shape[0] // max(1, len(gens))
    return training_items(data, cfg.data, gens, c), None, 1


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the batch of step ``start + i`` (:func:`make_batch`), so worker processes can make
    batches ahead of time in step order without changing them."""

    def __init__(self, data: SliceDataset, cfg: Config, items: range, start: int):
        self.data, self.cfg, self.items, self.start = data, cfg, items, start

    def __len__(self) -> int:
        return max(0, self.cfg.train.max_steps - self.start)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        return make_batch(self.data, self.cfg, self.start + i, self.items)


def step_batches(data: SliceDataset, cfg: Config, items: range, start: int, pin: bool = False) -> Iterator:
    """Batches of steps ``start, start + 1, ...``: made in this process, or by ``train.workers``
    DataLoader processes (identical batches either way)."""
    steps = StepBatches(data, cfg, items, start)
    if cfg.train.workers == 0:
        return (steps[i] for i in range(len(steps)))
    loader = torch.utils.data.DataLoader(
        steps, batch_size=None, num_workers=cfg.train.workers, prefetch_factor=4, pin_memory=pin
    )
    return iter(loader)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_items(batch_size: int, rank: int, world: int) -> range:
    """Positions in the global batch that ``rank`` computes (``batch_size / world`` of them)."""
    if batch_size % world:
        raise InputError(
            f"train.batch_size={batch_size} is the global batch and must be divisible by the "
            f"{world} processes"
        )
    b = batch_size // world
    return range(rank * b, (rank + 1) * b)


def _mean_over_ranks(value: float, device: torch.device) -> float:
    """Mean of ``value`` over the ranks (all ranks must call it)."""
    if _world()[1] == 1:
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / _world()[1]


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any rank (all ranks must call it)."""
    if _world()[1] == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _save(state: TrainState, cfg: Config, out_dir: Path) -> None:
    ckpt = checkpoint_dict(state, cfg)
    save_checkpoint(ckpt, out_dir / "last.pt")
    meta = {"elapsed_s": state.elapsed_s, "history_tail": state.history[-1:]}
    export_prior(ckpt, out_dir / "prior.pt", meta=meta)


def train(
    cfg: Config,
    train_data: SliceDataset,
    val_data: SliceDataset | None,
    out_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    resume: bool = False,
    init: str | Path | None = None,
    callback: Callback | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainState:
    """Train until ``train.max_steps``, ``train.max_minutes`` or a stop request; checkpoint on exit.

    Args:
        cfg: resolved configuration.
        train_data, val_data: slice datasets (val may be None).
        out_dir: run directory; ``last.pt`` (full state) and ``prior.pt`` (EMA + config) are written there.
        device: torch device.
        resume: continue from ``out_dir/last.pt``.
        init: a fresh run (not ``resume``) starts from this prior's EMA weights (:func:`init_from_prior`).
        callback: ``callback(event, info)`` for "step", "val", "preview" and "checkpoint" events; a
            "preview" carries the EMA prior as a complex-image ``denoiser`` to sample from.
        stop_requested: polled every step (e.g. set by a SIGTERM/SIGINT handler).

    Returns:
        the final :class:`TrainState`.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    rank, world = _world()
    emit = callback if (callback is not None and rank == 0) else (lambda e, i: None)
    state = init_state(cfg, device)
    if resume:
        restore(state, out_dir / "last.pt", cfg)
    elif init is not None:
        init_from_prior(state, Path(init), cfg)
    ddp_model = state.model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        ddp_model = torch.nn.parallel.DistributedDataParallel(state.model, device_ids=ids)
    val_x = (
        validation_batch(val_data, cfg.train.val_images, cfg.model.in_channels).to(device)
        if val_data
        else None
    )
    t = cfg.train
    per_step = t.batch_size // cfg.data.patches_per_image if cfg.model.family == "patch" else t.batch_size
    items = rank_items(per_step, rank, world)  # a patch prior's batch positions are images
    window_s, window_n = 0.0, 0
    tuner = ThreadTuner() if t.threads == -1 and device.type == "cpu" else None
    batches = step_batches(train_data, cfg, items, state.step, pin=device.type == "cuda")
    while state.step < t.max_steps:
        threads = tuner.before(state.step) if tuner else 0
        step_t = time.perf_counter()
        x0, pos, per_item = next(batches)
        x0, pos = x0.to(device, non_blocking=True), None if pos is None else pos.to(device, non_blocking=True)
        noise_gens = [make_generator(seed_for(t.seed, "noise", state.step, k), device) for k in items]
        noise_gens = [g for g in noise_gens for _ in range(per_item)]  # a patch's noise: its image's
        loss = _mean_over_ranks(train_step(state, ddp_model, x0, cfg, noise_gens, pos), device)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {state.step}")
        step_s = time.perf_counter() - step_t
        if tuner:
            tuner.after(state.step - 1, threads, step_s)
        window_s, window_n = window_s + step_s, window_n + t.batch_size
        if state.step % t.log_every == 0:
            info = {"step": state.step, "loss": loss, "lr": learning_rate(cfg, state.step - 1)}
            info.update(images_per_s=window_n / window_s, elapsed_s=state.elapsed_s)
            info.update(threads=torch.get_num_threads())
            emit("step", info)
            window_s, window_n = 0.0, 0
        if rank == 0 and val_x is not None and t.val_every and state.step % t.val_every == 0:
            record = {"step": state.step, **validation_losses(state.ema, val_x, cfg, t.batch_size)}
            state.history.append(record)
            emit("val", record)
        if rank == 0 and t.preview_every and state.step % t.preview_every == 0:
            emit("preview", {"step": state.step, "denoiser": wrap_model(state.ema, to_dict(cfg))})
        state.elapsed_s += time.perf_counter() - step_t  # wall time, including validation/previews
        over_time = t.max_minutes > 0 and state.elapsed_s >= 60 * t.max_minutes
        stop = _any_rank(stop_requested() or over_time, device)
        if stop or state.step % t.ckpt_every == 0 or state.step >= t.max_steps:
            if rank == 0:
                _save(state, cfg, out_dir)
                emit("checkpoint", {"step": state.step, "path": str(out_dir / "last.pt")})
        if stop:
            break
    return state
