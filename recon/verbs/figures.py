"""PNG figures for `mrdiff recon --png`: zero-filled | reconstruction | std | |error| per slice."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrdiff.atomic import atomic_path  # noqa: E402
from mrdiff.io import center_crop, read_slice  # noqa: E402


def _panels(zf, recon, std, target) -> list[tuple[str, np.ndarray, str]]:
    vmax = float(np.percentile(target if target is not None else recon, 99.5)) or 1.0
    panels = [("zero-filled", zf, "gray"), ("reconstruction", recon, "gray")]
    if std is not None:
        panels.append(("posterior std", std, "magma"))
    if target is not None:
        panels.append(("target", target, "gray"))
        panels.append(("|error| x5", np.abs(recon - target) * 5, "gray"))
    return [(t, a, c, vmax) for t, a, c in panels]


def save_panels(path: Path, panels, title: str) -> None:
    """Write a row of images to ``path`` atomically."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3), squeeze=False)
    for ax, (name, img, cmap, vmax) in zip(axes[0], panels):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=None if cmap != "gray" else vmax)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def slice_figures(info, result, slices, out_dir: Path, stem: str) -> list[Path]:
    """One PNG per reconstructed slice; returns the written paths."""
    slices = list(range(info.shape[0])) if slices is None else slices
    written = []
    for j, s in enumerate(slices):
        target = None
        if info.target_key:
            target = center_crop(read_slice(info, s).target.numpy(), info.recon_size)
        std = None if result.std is None else result.std[j]
        panels = _panels(result.zero_filled[j], result.reconstruction[j], std, target)
        path = out_dir / f"{stem}_slice{s:03d}.png"
        save_panels(path, panels, f"{info.path.name} slice {s}: residual {result.residual[j]:.3g}")
        written.append(path)
    return written
