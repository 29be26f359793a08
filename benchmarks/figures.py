"""Benchmark figures: representative slices with error maps, PSNR versus NFE, real undersampled inputs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrdiff.atomic import atomic_path  # noqa: E402
from mrdiff.io import VolumeInfo, center_crop, read_slice  # noqa: E402

ERROR_GAIN = 5


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _read(path: Path) -> tuple[np.ndarray, list[int]]:
    with h5py.File(path, "r") as f:
        return np.asarray(f["reconstruction"][()]), json.loads(f.attrs["slices"])


def _one_per_method(records: list[dict], mask: str, accel: float) -> list[dict]:
    """Seed-0 records of (mask, accel), one per method (its largest NFE), in input order."""
    chosen: dict[str, dict] = {}
    for r in records:
        if r["mask"] == mask and float(r["accel"]) == float(accel) and r["seed"] == 0:
            label = r["method"]["label"]
            if label not in chosen or r["method"]["nfe"] > chosen[label]["method"]["nfe"]:
                chosen[label] = r
    return list(chosen.values())


def slices_figure(
    records: list[dict], volume: VolumeInfo, out_dir: Path, mask: str, accel: float, path: Path
) -> Path | None:
    """Target and each method's reconstruction (top) with ``|error| x 5`` (bottom), middle slice."""
    recs = _one_per_method(records, mask, accel)
    if not recs or volume.target_key is None:
        return None
    recon0, slices = _read(out_dir / "recons" / recs[0]["key"] / volume.path.name)
    j = len(slices) // 2
    target = center_crop(read_slice(volume, slices[j]).target.numpy(), volume.recon_size)
    vmax = float(np.percentile(target, 99.5)) or 1.0
    fig, axes = plt.subplots(2, len(recs) + 1, figsize=(2.2 * (len(recs) + 1), 4.6), squeeze=False)
    axes[0, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target", fontsize=8)
    axes[1, 0].axis("off")
    for i, rec in enumerate(recs, start=1):
        img = _read(out_dir / "recons" / rec["key"] / volume.path.name)[0][j]
        psnr = next((v.get("PSNR") for v in rec["volumes"] if v["volume"] == volume.path.name), None)
        axes[0, i].imshow(img, cmap="gray", vmin=0, vmax=vmax)
        axes[0, i].set_title(
            f"{rec['method']['label']}" + (f"\n{psnr:.2f} dB (vol)" if psnr else ""), fontsize=8
        )
        axes[1, i].imshow(np.abs(img - target) * ERROR_GAIN, cmap="inferno", vmin=0, vmax=vmax)
        axes[1, i].set_title(f"|error| x{ERROR_GAIN}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{volume.path.name} slice {slices[j]}, {mask} {accel:g}x", fontsize=9)
    return _save(fig, path)


def nfe_figure(
    agg: list[dict], diffusion: set[str], path: Path, references=("cs-l1", "unet", "varnet")
) -> Path | None:
    """PSNR versus NFE for the diffusion methods, one panel per (mask, accel); baselines dashed."""
    groups = sorted({(r["mask"], r["accel"]) for r in agg if r["method"] in diffusion})
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.4), squeeze=False)
    for ax, (mask, accel) in zip(axes[0], groups):
        rows = [r for r in agg if r["mask"] == mask and r["accel"] == accel]
        for name in sorted({r["method"] for r in rows if r["method"] in diffusion}):
            pts = sorted((r["nfe"], r["PSNR_mean"]) for r in rows if r["method"] == name)
            ax.plot(*zip(*pts), marker="o", label=name)
        for i, ref in enumerate(r for r in rows if r["method"] in references):
            ax.axhline(ref["PSNR_mean"], ls="--", lw=1, color=f"C{7 + i % 3}", label=ref["method"])
        ax.set_xscale("log")
        ax.set_xticks(sorted({r.get("nfe_requested", r["nfe"]) for r in rows if r["method"] in diffusion}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.set_xlabel("NFE (denoiser calls per sample)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{mask} {accel:g}x", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="best")
    return _save(fig, path)


def real_figure(records: list[dict], volumes: list[VolumeInfo], out_dir: Path, path: Path) -> Path | None:
    """Real undersampled inputs: zero-filled and each method's reconstruction, no ground truth."""
    if not records or not volumes:
        return None
    fig, axes = plt.subplots(
        len(volumes), len(records) + 1, figsize=(2.2 * (len(records) + 1), 2.4 * len(volumes)), squeeze=False
    )
    for row, info in enumerate(volumes):
        for col, rec in enumerate(records):
            file = out_dir / "recons" / rec["key"] / info.path.name
            with h5py.File(file, "r") as f:
                img, zf = f["reconstruction"][0], f["zero_filled"][0] if "zero_filled" in f else None
            vmax = float(np.percentile(img, 99.5)) or 1.0
            if col == 0 and zf is not None:
                axes[row, 0].imshow(zf, cmap="gray", vmin=0, vmax=float(np.percentile(zf, 99.5)) or 1.0)
                axes[row, 0].set_title(f"{info.path.stem[:22]}\nzero-filled", fontsize=7)
            vol = next(v for v in rec["volumes"] if v["volume"] == info.path.name)
            axes[row, col + 1].imshow(img, cmap="gray", vmin=0, vmax=vmax)
            axes[row, col + 1].set_title(
                f"{rec['method']['label']}\nDC residual {vol['residual']:.3f}", fontsize=7
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("real undersampled k-space (no ground truth)", fontsize=9)
    return _save(fig, path)
