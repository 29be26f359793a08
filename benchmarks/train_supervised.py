"""Train the supervised baselines (fastMRI U-Net, E2E-VarNet) on the `train` split: a small CPU preset.

Masks: fastMRI random 1-D masks, 4x (centre fraction 0.08) and 8x (0.04) mixed 50/50, drawn afresh
per batch (seeded from the step). Resumable: a checkpoint with optimiser and sampler state is written
atomically every ``--save-every`` seconds and training stops when the total wall-clock budget is
spent. ``--ship`` writes the shipped weights (model only) and a model card with their SHA-256.

    nice -n 10 python -m benchmarks.train_supervised --kind unet --data data/open-brain-128 \
        --minutes 15 --ship mrdiff/weights/unet-brain128.pt
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mrdiff.atomic import atomic_path
from mrdiff.checkpoints import load_torch, sha256_file
from mrdiff.io import center_crop, list_volumes, open_volume, read_slice
from mrdiff.masks import make_mask
from mrdiff.metrics import volume_metrics
from mrdiff.noise import make_generator
from mrdiff.supervised import PRESETS, build_model, save_checkpoint, training_loss

TRAIN_MASKS = ((4, 0.08), (8, 0.04))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=sorted(PRESETS), required=True, help="which network")
    p.add_argument("--data", type=Path, required=True, help="prepared root with train/ and val/")
    p.add_argument("--minutes", type=float, default=15.0, help="total wall-clock budget (over resumes)")
    p.add_argument("--batch", type=int, default=2, help="slices per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine-decayed to 5%%)")
    p.add_argument("--run", type=Path, default=Path("runs/supervised"), help="resumable checkpoints")
    p.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--ship", type=Path, default=None, help="write shipped weights + model card here")
    p.add_argument("--val-slices", type=int, default=8, help="val slices scored for the model card")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of slice and mask sampling")
    return p.parse_args(argv)


def slice_index(split_dir: Path) -> list[tuple[object, int]]:
    """Every (volume info, slice) of a split directory."""
    return [(info, s) for info in map(open_volume, list_volumes(split_dir)) for s in range(info.shape[0])]


def batch(index, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fully sampled k-space ``(B, C, H, W)`` and targets ``(B, h, w)`` of the chosen slices."""
    parts = [read_slice(*index[r]) for r in rows]
    return torch.stack([p.kspace for p in parts]), torch.stack([p.target for p in parts])


def train_mask(step: int, seed: int, shape: tuple[int, int]) -> torch.Tensor:
    """The mask of one step: random 1-D, 4x or 8x alternating, seeded from (seed, step)."""
    accel, cf = TRAIN_MASKS[step % len(TRAIN_MASKS)]
    return make_mask("random", shape, accel, cf, "train", seed * 1_000_003 + step)


def load_state(path: Path, model, opt) -> dict:
    """Resume from ``path`` if it exists; returns ``{step, elapsed, losses}``."""
    if not path.exists():
        return {"step": 0, "elapsed": 0.0, "losses": []}
    ckpt = load_torch(path)
    model.load_state_dict(ckpt["state_dict"])
    opt.load_state_dict(ckpt["optimizer"])
    return {"step": int(ckpt["step"]), "elapsed": float(ckpt["elapsed"]), "losses": list(ckpt["losses"])}


def save_state(path: Path, kind: str, model, opt, state: dict) -> None:
    """Atomic resumable checkpoint."""
    save_checkpoint(path, kind, model, PRESETS[kind], {"optimizer": opt.state_dict(), **state})


@torch.no_grad()
def evaluate(kind: str, model, index, n: int) -> dict:
    """Mean PSNR/SSIM over ``n`` evenly spaced val slices at 4x and 8x random masks."""
    from mrdiff.supervised import unet_magnitude, varnet_magnitude

    fn = unet_magnitude if kind == "unet" else varnet_magnitude
    rows = np.linspace(0, len(index) - 1, min(n, len(index))).astype(int).tolist()
    k, target = batch(index, rows)
    out = {}
    for accel, cf in TRAIN_MASKS:
        mask = make_mask("random", k.shape[-2:], accel, cf, index[0][0].path.name)
        pred = fn(model.eval(), k * mask, mask)
        pred = center_crop(pred, target.shape[-2:])
        m = volume_metrics(target.numpy(), pred.numpy())
        out[f"{accel}x"] = {key: round(v, 4) for key, v in m.items()}
    model.train()
    return out


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) training until the budget is spent; returns the final state."""
    torch.set_num_threads(args.threads)
    index = slice_index(args.data / "train")
    model = build_model(args.kind).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ckpt_path = args.run / f"{args.kind}.pt"
    state = load_state(ckpt_path, model, opt)
    gen = make_generator(args.seed)
    budget, last_save, t0 = args.minutes * 60, time.perf_counter(), time.perf_counter() - state["elapsed"]
    H, W = index[0][0].shape[-2:]
    while time.perf_counter() - t0 < budget:
        step = state["step"]
        gen.manual_seed(args.seed * 7919 + step)
        rows = torch.randint(len(index), (args.batch,), generator=gen).tolist()
        k, target = batch(index, rows)
        frac = min(1.0, (time.perf_counter() - t0) / budget)
        for group in opt.param_groups:
            group["lr"] = float(args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))))
        loss = training_loss(args.kind, model, k, train_mask(step, args.seed, (H, W)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = {**state, "step": step + 1, "elapsed": time.perf_counter() - t0}
        state["losses"] = (state["losses"] + [loss.item()])[-200:]
        if time.perf_counter() - last_save > args.save_every:
            save_state(ckpt_path, args.kind, model, opt, state)
            last_save = time.perf_counter()
            print(
                json.dumps({"step": state["step"], "elapsed": round(state["elapsed"]), "loss": loss.item()})
            )
    save_state(ckpt_path, args.kind, model, opt, state)
    return {"model": model, "state": state, "index": index}


def model_card(args, state: dict, n_train: int, val: dict, sha: str, n_params: int) -> str:
    """Markdown model card for the shipped weights."""
    name = "fastMRI U-Net" if args.kind == "unet" else "E2E-VarNet (fastmri.models.VarNet)"
    return f"""# {args.ship.name}: {name}, CPU preset trained on open-brain-128 `train`

- sha256: `{sha}`
- architecture: `fastmri.models.{"Unet" if args.kind == "unet" else "VarNet"}` with {PRESETS[args.kind]}
  ({n_params} parameters); loaded by `mrdiff.supervised.load_model` with `weights_only=True`.
- training data: {n_train} slices of `{args.data}/train` (simulated 8-coil k-space from Colin27 and
  MNI152 T1 magnitude; see data_prep/README.md for licences). Never trained or tuned on `test`.
- masks: fastMRI random 1-D, 4x (centre fraction 0.08) and 8x (0.04) alternating, fresh per step.
- loss: L1 on magnitudes divided by the target maximum; Adam lr {args.lr} cosine-decayed to 5%,
  batch {args.batch}, {state["step"]} steps, {state["elapsed"] / 60:.1f} min wall clock on a shared
  2-core CPU ({args.threads} torch thread), seed {args.seed}. The budget is wall clock and this
  process got a small share of the CPU, so the step count, not the minutes, measures the training.
- final training loss (mean of last 200 steps): {np.mean(state["losses"]):.4f}
- `val` (random masks, {args.val_slices} slices; fastMRI metrics): {json.dumps(val)}
- reproduce: `python -m benchmarks.train_supervised --kind {args.kind} --data {args.data} \\
  --minutes {args.minutes:g} --batch {args.batch} --ship {args.ship}`
- limitations: tiny network and minutes of CPU training: far below published fastMRI numbers;
  trained only on 1-D random masks at 4x/8x and T1 contrast, so other masks/contrasts are a
  distribution shift (reported as such in benchmarks/results).
"""


def main(argv: list[str] | None = None) -> int:
    """Train, then optionally ship weights and a model card."""
    args = parse(argv)
    out = train(args)
    if args.ship is not None:
        model, state = out["model"], out["state"]
        val = evaluate(args.kind, model, slice_index(args.data / "val"), args.val_slices)
        info = {"step": state["step"], "elapsed": state["elapsed"], "val": json.dumps(val)}
        save_checkpoint(args.ship, args.kind, model, PRESETS[args.kind], info)
        sha = sha256_file(args.ship)
        n_params = sum(p.numel() for p in model.parameters())
        card = model_card(args, state, len(out["index"]), val, sha, n_params)
        with atomic_path(args.ship.with_suffix(".md")) as tmp:
            tmp.write_text(card)
        print(json.dumps({"shipped": str(args.ship), "sha256": sha, "val": val}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
