"""Benchmark tables: per-volume metrics CSV, the fastMRI aggregate (mean +- 2 std) and markdown.

Aggregation follows ``fastmri/evaluate.py``: each (volume, seed) reconstruction is one sample, and
each metric is reported as the mean and twice the standard deviation over those samples
(``mrdiff.metrics.aggregate``, i.e. ``runstats.Statistics``).
"""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mrdiff.atomic import atomic_path
from mrdiff.metrics import METRIC_NAMES, aggregate

VOLUME_FIELDS = [
    "method",
    "base_method",
    "mask",
    "accel",
    "center_fraction",
    "seed",
    "volume",
    "n_slices",
    "NMSE",
    "PSNR",
    "SSIM",
    "nfe",
    "nfe_requested",
    "samples",
    "seconds_per_slice",
    "device",
    "residual",
    "sampling_fraction",
    "params",
]
AGG_FIELDS = [
    "method",
    "mask",
    "accel",
    "nfe",
    "nfe_requested",
    "samples",
    "n",
    *[f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "2std")],
    "seconds_per_slice",
    "device",
    "shift",
]


def volume_rows(records: list[dict]) -> list[dict]:
    """Flatten cell records into one row per (cell, volume) with a target."""
    rows = []
    for rec in records:
        m = rec["method"]
        for v in rec["volumes"]:
            if "PSNR" not in v:
                continue
            rows.append(
                {
                    "method": m["label"],
                    "base_method": m["name"],
                    "mask": rec["mask"],
                    "accel": rec["accel"],
                    "center_fraction": rec["center_fraction"],
                    "seed": rec["seed"],
                    "volume": v["volume"],
                    "n_slices": v["n_slices"],
                    "NMSE": v["NMSE"],
                    "PSNR": v["PSNR"],
                    "SSIM": v["SSIM"],
                    "nfe": v["nfe"],
                    "nfe_requested": m["nfe"],
                    "samples": int(m.get("samples", 1)),
                    "seconds_per_slice": v["seconds_per_slice"],
                    "device": rec["device"],
                    "residual": v["residual"],
                    "sampling_fraction": v["sampling_fraction"],
                    "params": _params(m["params"]),
                }
            )
    return rows


def _params(params: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(params.items()))


def is_shift(method: str, mask: str, accel: float, supervised: tuple[str, ...] = ("unet", "varnet")) -> bool:
    """Supervised rows outside their training distribution (random 1-D masks at 4x/8x)."""
    base = method.split("-")[0]
    return base in supervised and (mask != "random" or float(accel) not in (4.0, 8.0))


def aggregate_rows(rows: list[dict]) -> list[dict]:
    """One row per (method, mask, accel, nfe, K): fastMRI mean and 2*std over (volume, seed) samples."""
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for r in rows:
        key = (
            r["method"],
            r["mask"],
            float(r["accel"]),
            int(r.get("nfe_requested", r["nfe"])),
            r.get("samples", 1),
        )
        groups.setdefault(key, []).append(r)
    out = []
    for (method, mask, accel, nfe_requested, samples), members in groups.items():
        agg = aggregate(members)
        row = {
            "method": method,
            "mask": mask,
            "accel": accel,
            "nfe": int(members[0]["nfe"]),
            "nfe_requested": nfe_requested,
            "samples": int(samples),
            "n": len(members),
        }
        for name in METRIC_NAMES:
            row[f"{name}_mean"], row[f"{name}_2std"] = agg[name]["mean"], agg[name]["2std"]
        slices = np.array([m["n_slices"] for m in members], float)
        secs = np.array([m["seconds_per_slice"] for m in members], float)
        row["seconds_per_slice"] = float((secs * slices).sum() / slices.sum())
        row["device"] = members[0]["device"]
        row["shift"] = is_shift(method, mask, accel)
        out.append(row)
    return out


def _csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_text(path: Path, text: str) -> None:
    """Atomic text write."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def markdown_table(agg: list[dict]) -> str:
    """Markdown table grouped by (mask, accel), best PSNR first; the winner of each group in bold."""
    lines = []
    for mask, accel in OrderedDict.fromkeys((r["mask"], r["accel"]) for r in agg):
        group = sorted(
            [r for r in agg if r["mask"] == mask and r["accel"] == accel], key=lambda r: -r["PSNR_mean"]
        )
        lines += [
            f"\n### {mask} {accel:g}x\n",
            "| method | NFE | K | NMSE | PSNR (dB) | SSIM | s/slice | device | n |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(group):
            name = f"**{r['method']}**" if i == 0 else r["method"]
            name += " (shift)" if r["shift"] else ""
            lines.append(
                f"| {name} | {r['nfe']} | {r.get('samples', 1)} | "
                f"{r['NMSE_mean']:.4f} ± {r['NMSE_2std']:.4f} | "
                f"{r['PSNR_mean']:.2f} ± {r['PSNR_2std']:.2f} | "
                f"{r['SSIM_mean']:.4f} ± {r['SSIM_2std']:.4f} | "
                f"{r['seconds_per_slice']:.2f} | {r['device']} | {r['n']} |"
            )
    return "\n".join(lines) + "\n"


def losses(agg: list[dict], reference: tuple[str, ...] = ("cs-l1", "unet", "varnet")) -> list[str]:
    """Plain sentences naming where each method loses to a reference baseline in PSNR."""
    out = []
    for mask, accel in OrderedDict.fromkeys((r["mask"], r["accel"]) for r in agg):
        group = {r["method"]: r for r in agg if r["mask"] == mask and r["accel"] == accel}
        refs = [group[n] for n in reference if n in group]
        if not refs:
            continue
        best_ref = max(refs, key=lambda r: r["PSNR_mean"])
        for name, r in group.items():
            if name not in reference and r["PSNR_mean"] < best_ref["PSNR_mean"]:
                out.append(
                    f"- {mask} {accel:g}x: {name} ({r['PSNR_mean']:.2f} dB) loses to "
                    f"{best_ref['method']} ({best_ref['PSNR_mean']:.2f} dB)."
                )
    return out


def write_tables(records: list[dict], out: Path, command: str, notes: list[str] | None = None) -> list[dict]:
    """Write ``metrics_per_volume.csv``, ``results.csv`` and ``results.md``; returns the aggregate rows."""
    rows = volume_rows(records)
    agg = aggregate_rows(rows)
    write_text(out / "metrics_per_volume.csv", _csv_text(rows, VOLUME_FIELDS))
    write_text(out / "results.csv", _csv_text(agg, AGG_FIELDS))
    text = [
        "# Benchmark results",
        "",
        "Reproduce with:",
        "",
        "```",
        command,
        "```",
        "",
        "Metrics: fastMRI `evaluate.py` (NMSE, PSNR, SSIM per volume on the centre-cropped magnitude; "
        "mean ± 2·std over (volume, seed) samples, n in the last column). Seconds per slice exclude "
        "ESPIRiT map estimation, which all methods share. `(shift)`: a supervised network tested "
        "outside its training masks (random 1-D at 4x/8x).",
        "",
    ]
    text += list(notes or [])
    text.append(markdown_table(agg))
    lost = losses(agg)
    if lost:
        text += ["", "## Where methods lose (PSNR vs the best of CS-L1 / U-Net / VarNet)", "", *lost]
    write_text(out / "results.md", "\n".join(text) + "\n")
    return agg
