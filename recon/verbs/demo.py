"""`mrdiff demo`: reconstruct the bundled demo input with the best available method and draw a figure."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import h5py
import numpy as np

from mrdiff.errors import InputError
from mrdiff.io import center_crop, list_volumes, open_volume
from mrdiff.metrics import volume_metrics
from mrdiff.pipeline import diffusion_methods
from mrdiff.resources import package_path
from recon.verbs import SUMMARIES
from recon.verbs import recon as recon_verb

HELP = SUMMARIES["demo"]

DEMO_DIR = package_path("data_prep", "demo")  # package data, so an installed wheel finds it too
DIFFUSION_DEFAULT = "ccdf"  # the diffusion method that beat cs-l1 on val at 4x and 8x
CLASSICAL_DEFAULT = "cs-l1"


def demo_methods() -> list[str]:
    """The diffusion default (CCDF, when the shipped prior exists) and the L1-wavelet CS baseline.

    Both run, so the demo shows honestly whether the prior beats classical CS on this input.
    """
    from mrdiff.priors import default_prior_path

    methods = [CLASSICAL_DEFAULT]
    if DIFFUSION_DEFAULT in diffusion_methods() and Path(default_prior_path()).exists():
        methods.insert(0, DIFFUSION_DEFAULT)
    return methods


def _row(src: Path, out: Path) -> tuple[list, dict | None, float]:
    """Panels (zero-filled, recon, target, error) for slice 0 of one file, metrics if a target exists,
    and the reconstruction's seconds per slice."""
    info = open_volume(src)
    with h5py.File(out, "r") as f:
        rec, zf = f["reconstruction"][()], f["zero_filled"][()]
        seconds = float(f.attrs.get("seconds_per_slice", float("nan")))
    panels = [("zero-filled", zf[0]), ("reconstruction", rec[0])]
    metrics = None
    if info.target_key:
        with h5py.File(src, "r") as f:
            target = center_crop(f[info.target_key][:1], info.recon_size)
        metrics = volume_metrics(target, rec)
        panels += [("target", target[0]), ("|error| x5", np.abs(rec[0] - target[0]) * 5)]
    return panels, metrics, seconds


def format_report(report: dict) -> str:
    """The demo's numbers as a short table for a person (``--json`` prints ``report`` itself)."""
    lines = [f"{'input':<34} {'method':<8} {'PSNR dB':>8} {'SSIM':>6} {'s/slice':>8}"]
    for name, rows in report["files"].items():
        for i, (method, row) in enumerate(rows.items()):
            label = name if i == 0 else ""
            if row["metrics"] is None:
                psnr, ssim, note = "-", "-", "  (no fully sampled reference)"
            else:
                psnr, ssim, note = f"{row['metrics']['PSNR']:.2f}", f"{row['metrics']['SSIM']:.3f}", ""
            lines.append(
                f"{label:<34} {method:<8} {psnr:>8} {ssim:>6} {row['seconds_per_slice']:>8.1f}{note}"
            )
        best = _best(rows)
        if best:
            lines.append(f"{'':<34} best PSNR: {best}")
    lines.append(f"figure: {report['figure']}")
    return "\n".join(lines)


def _best(rows: dict) -> str | None:
    """The method with the highest PSNR among ``rows`` (None without a reference or with one method)."""
    scored = {m: r["metrics"]["PSNR"] for m, r in rows.items() if r["metrics"] is not None}
    return max(scored, key=scored.get) if len(scored) > 1 else None


def _figure(rows: list[tuple[str, list]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mrdiff.atomic import atomic_path

    ncol = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3 * ncol, 3.2 * len(rows)), squeeze=False)
    for r, (name, panels) in enumerate(rows):
        vmax = float(np.percentile(panels[1][1], 99.5)) or 1.0
        for c in range(ncol):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                ax.imshow(panels[c][1], cmap="gray", vmin=0, vmax=vmax)
                ax.set_title(f"{name}: {panels[c][0]}" if c == 0 else panels[c][0], fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _reconstruct(src: Path, method: str, out: Path) -> None:
    """Slice 0 of ``src`` with ``method`` (random 4x mask where the file has none), written to ``out``."""
    argv = [str(src), "--method", method, "--out", str(out), "--slices", "0"]
    argv += ["--mask", "random", "--accel", "4", "--center-fraction", "0.08"]
    argv += ["--no-heldout"]  # the demo shows PSNR/SSIM, not the held-out error (which doubles its cost)
    with contextlib.redirect_stdout(io.StringIO()):  # recon's machine summary; the demo reports itself
        recon_verb.main(argv)


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff demo`."""
    p = argparse.ArgumentParser(prog="mrdiff demo", description=HELP)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (default: ccdf with the shipped prior, and cs-l1)",
    )
    p.add_argument("--input", type=Path, default=DEMO_DIR, help="demo input directory or file")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = p.parse_args(argv)
    if not args.input.exists():
        raise InputError(f"{args.input}: demo input not found")
    methods = args.methods.split(",") if args.methods else demo_methods()
    rows, report = [], {"methods": methods, "files": {}}
    for src in list_volumes(args.input):
        report["files"][src.name] = {}
        for method in methods:
            out = args.out / method / src.name
            _reconstruct(src, method, out)
            panels, metrics, seconds = _row(src, out)
            rows.append((f"{src.stem} [{method}]", panels))
            report["files"][src.name][method] = {
                "metrics": metrics,
                "seconds_per_slice": seconds,
                "output": str(out),
            }
    _figure(rows, args.out / "demo.png")
    report["figure"] = str(args.out / "demo.png")
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
