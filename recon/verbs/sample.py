"""`mrdiff sample`: unconditional samples from a prior, with a memorisation check against training data.

For each sample the nearest training image is found (magnitudes normalised by image_scale, over the
eight flips/rotations the training augmentation uses) and its RMS distance reported next to the same
distance for held-out (val) images. Samples much closer to the training set than val images are would
indicate memorisation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError
from mrdiff.noise import make_generator, seed_for
from mrdiff.scaling import image_scale
from recon.verbs import SUMMARIES
from recon.verbs.common import check_destination

GUIDANCE_INTERVAL = (0.4, 80.0)
HELP = SUMMARIES["sample"]


def draw_samples(denoiser, n: int, steps: int, sampler: str, seed: int, size: int) -> torch.Tensor:
    """Unconditional samples (n, size, size) complex64 (:func:`mrdiff.sampling.sample_prior`).

    One generator per sample (seeded by ``(seed, i)``), Karras schedule over the prior's sigma range.
    """
    from mrdiff.sampling import sample_prior

    gens = [make_generator(seed_for(seed, "sample", i), denoiser.device) for i in range(n)]
    return sample_prior(denoiser, (size, size), steps, gens, sampler).cpu()


def normalised_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| / image_scale(x) for complex or real (N, H, W)."""
    return (x.abs() / image_scale(x)[:, None, None]).float()


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of square images (N, H, W)."""
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rots + [r.flip(-1) for r in rots]


def nearest(query: torch.Tensor, train: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS distance from each query (Q, H, W) to its nearest train image (N, H, W), over dihedral copies.

    Returns:
        (Q,) distances and (Q,) indices into ``train``.
    """
    t = train.flatten(1)
    t2 = t.square().sum(1)
    best_d = torch.full((query.shape[0],), float("inf"))
    best_i = torch.zeros(query.shape[0], dtype=torch.long)
    for q in dihedral(query):
        q = q.flatten(1)
        q2 = q.square().sum(1)
        for start in range(0, t.shape[0], chunk):
            d2 = q2[:, None] + t2[None, start : start + chunk] - 2 * q @ t[start : start + chunk].T
            d, i = d2.clamp_min(0).min(dim=1)
            better = d < best_d
            best_d, best_i = torch.where(better, d, best_d), torch.where(better, i + start, best_i)
    return (best_d / t.shape[1]).sqrt(), best_i


def memorisation_report(samples: torch.Tensor, train, val) -> dict:
    """Nearest-training-image distances of samples and of val images (magnitudes, normalised)."""
    train_mag = normalised_magnitude(train.images)
    d_s, i_s = nearest(normalised_magnitude(samples), train_mag)
    report = {
        "train_images": int(train_mag.shape[0]),
        "sample_nearest_rms": [round(float(d), 5) for d in d_s],
        "sample_nearest_name": [train.names[int(i)] for i in i_s],
        "sample_median": float(d_s.median()),
        "sample_min": float(d_s.min()),
    }
    if val is not None:
        d_v, _ = nearest(normalised_magnitude(val.images[: min(64, len(val))]), train_mag)
        report.update(val_images=int(d_v.numel()), val_median=float(d_v.median()), val_min=float(d_v.min()))
    return report, train_mag[i_s]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrdiff sample", description=HELP)
    p.add_argument("--prior", default=None, help="prior file or training checkpoint (default: shipped)")
    p.add_argument("-n", type=int, default=16, help="number of samples")
    p.add_argument("--out", required=True, help="output PNG grid (a .json report is written beside it)")
    p.add_argument("--steps", type=int, default=32, help="sampler steps (Heun uses 2 NFE per step)")
    p.add_argument("--sampler", default="heun", choices=["heun", "ancestral", "ddim"], help="prior step")
    p.add_argument("--seed", type=int, default=0, help="base seed (one generator per sample)")
    p.add_argument("--size", type=int, default=0, help="image size (default: the prior's resolution)")
    p.add_argument("--data", default=None, help="data root with train/ (and val/) for the memorisation check")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    g = p.add_argument_group("autoguidance (Karras et al., NeurIPS 2024)")
    g.add_argument("--guide", default=None, help="weaker prior of the same data (an earlier checkpoint)")
    g.add_argument("--guidance", type=float, default=2.0, help="guidance weight w (1 = off)")
    g.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        default=GUIDANCE_INTERVAL,
        metavar=("LO", "HI"),
        help="sigma range where guidance applies",
    )
    return p


def main(argv: list[str]) -> int:
    """Sample, write the grid (and nearest-training grid), print the memorisation numbers."""
    from mrdiff.data import SliceDataset
    from mrdiff.priors import load_prior
    from mrdiff.priors.guidance import AutoGuided
    from recon.verbs.train import save_grid

    args = _parser().parse_args(argv)
    if args.n < 1 or args.steps < 1:
        raise InputError("-n and --steps must be positive")
    check_destination(Path(args.out))  # before the sampling, not after it
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    denoiser = load_prior(args.prior, device="cuda" if cuda else "cpu")
    if args.guide:
        guide = load_prior(args.guide, device=denoiser.device)
        denoiser = AutoGuided(denoiser, guide, args.guidance, *args.guidance_interval)
    size = args.size or denoiser.resolution
    t0 = time.perf_counter()
    samples = draw_samples(denoiser, args.n, args.steps, args.sampler, args.seed, size)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    save_grid(normalised_magnitude(samples).numpy(), out)
    report = {"prior": str(args.prior or "shipped"), "sha256": denoiser.sha256, "n": args.n}
    report.update(steps=args.steps, sampler=args.sampler, seed=args.seed, seconds=round(seconds, 2))
    if args.guide:
        report["autoguidance"] = {"guide": str(args.guide), "guide_sha256": guide.sha256}
        report["autoguidance"].update(weight=args.guidance, interval=list(args.guidance_interval))
    print(f"{args.n} samples in {seconds:.1f} s -> {out}")
    if args.data:
        root = Path(args.data)
        train_dir = root / "train" if (root / "train").is_dir() else root
        res, rel = size, float(denoiser.config["data"]["min_rel_scale"])  # compare at the samples' size
        train = SliceDataset(train_dir, res, rel)
        val = SliceDataset(root / "val", res, rel) if (root / "val").is_dir() else None
        mem, nearest_imgs = memorisation_report(samples, train, val)
        report["memorisation"] = mem
        save_grid(nearest_imgs.numpy(), out.with_name(out.stem + "_nearest.png"))
        line = f"nearest-train RMS: samples median {mem['sample_median']:.4f} (min {mem['sample_min']:.4f})"
        if val is not None:
            line += f"; val images median {mem['val_median']:.4f} (min {mem['val_min']:.4f})"
        print(line)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return 0
