"""PSNR versus NFE for every diffusion method, and where each one saturates (issue 13, item 6).

Reads the cell records that one or more ``mrdiff bench --nfe ...`` runs wrote into ``RUN/cells``
(e.g. every method at NFE 5-200, then CCDF and DDS at NFE 1000 into the same folder), and writes:

- ``psnr_vs_nfe.png``: one curve per method and (mask, acceleration), baselines dashed;
- ``nfe_curves.md``: PSNR per NFE, the smallest NFE within ``--tolerance`` dB of the method's best,
  and for every method with a long-run point (``--reference-nfe``) the smallest NFE within
  ``--tolerance`` dB of it: the speed goal "<= 50 NFE within 0.3 dB of 1000".

It runs nothing. Usage (val only: NFE and parameters are chosen from it)::

    mrdiff bench --data data/open-brain-128 --split val --methods ccdf,dds,pocs,ilvr,repaint,mcg,dps \
        --masks random --accels 4 --slices-per-volume 2 --nfe 5,10,20,50,100,200 --samples 1 \
        --out runs/nfe-val
    mrdiff bench ... --methods ccdf,dds --nfe 1000 --out runs/nfe-val
    mrdiff bench ... --methods zf,cs-l1 --out runs/nfe-val
    python -m benchmarks.nfe_curves runs/nfe-val --out benchmarks/results/nfe-val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.figures import nfe_figure
from benchmarks.report import aggregate_rows, volume_rows, write_text
from mrdiff.errors import InputError
from mrdiff.pipeline import diffusion_methods


def read_records(run: Path) -> list[dict]:
    """Every cell record under ``run/cells`` (sorted by file name)."""
    paths = sorted((run / "cells").glob("*.json"))
    if not paths:
        raise InputError(f"{run}: no cell records under cells/ (run `mrdiff bench --out {run}` first)")
    return [json.loads(p.read_text()) for p in paths]


def saturation(curve: dict[int, float], reference: float | None, tolerance: float) -> int | None:
    """The smallest NFE of ``curve`` ({nfe: PSNR}) within ``tolerance`` dB of ``reference`` (a PSNR,
    e.g. the curve's best or its long-run point; None gives None)."""
    if reference is None:
        return None
    return min(n for n, p in curve.items() if p >= reference - tolerance)


def curves(agg: list[dict], diffusion: set[str]) -> dict[tuple, dict[int, float]]:
    """``{(method, mask, accel): {nfe: PSNR}}`` of the diffusion rows (requested NFE)."""
    out: dict[tuple, dict[int, float]] = {}
    for r in agg:
        if r["method"] in diffusion:
            out.setdefault((r["method"], r["mask"], r["accel"]), {})[r["nfe_requested"]] = r["PSNR_mean"]
    return out


def markdown(agg: list[dict], diffusion: set[str], reference_nfe: int, tolerance: float) -> str:
    """A PSNR-per-NFE table per (mask, acceleration), with the saturation column, and the baselines."""
    lines = []
    table = curves(agg, diffusion)
    for mask, accel in sorted({(m, a) for _, m, a in table}):
        nfes = sorted({n for (_, m, a), c in table.items() if (m, a) == (mask, accel) for n in c})
        lines += [f"### {mask} {accel:g}x", ""]
        head = " | ".join(f"NFE {n}" for n in nfes)
        lines += [
            f"| method | {head} | within {tolerance:g} dB of its best from NFE"
            f" | within {tolerance:g} dB of NFE {reference_nfe} from NFE |"
        ]
        lines += ["|---" * (len(nfes) + 3) + "|"]
        for (method, m, a), c in sorted(table.items()):
            if (m, a) != (mask, accel):
                continue
            best = max(c.values())
            cells = [("**%.2f**" if c[n] == best else "%.2f") % c[n] if n in c else "" for n in nfes]
            sat = [saturation(c, ref, tolerance) for ref in (best, c.get(reference_nfe))]
            shown = " | ".join("" if n is None else str(n) for n in sat)
            lines.append(f"| {method} | {' | '.join(cells)} | {shown} |")
        refs = [r for r in agg if r["method"] not in diffusion and (r["mask"], r["accel"]) == (mask, accel)]
        lines += [""] + [f"- {r['method']}: {r['PSNR_mean']:.2f} dB" for r in refs] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.nfe_curves RUN --out DIR``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a `mrdiff bench --out` folder")
    p.add_argument("--out", type=Path, required=True, help="where to write the figure and the table")
    p.add_argument("--reference-nfe", type=int, default=1000, help="the long-run NFE (default 1000)")
    p.add_argument("--tolerance", type=float, default=0.3, help="dB below the long run (default 0.3)")
    args = p.parse_args(argv)
    records = read_records(args.run)
    agg = aggregate_rows(volume_rows(records))
    diffusion = {r["method"]["label"] for r in records if r["method"]["name"] in diffusion_methods()}
    args.out.mkdir(parents=True, exist_ok=True)
    nfe_figure(agg, diffusion, args.out / "psnr_vs_nfe.png", references=("zf", "cs-l1", "unet", "varnet"))
    write_text(args.out / "nfe_curves.md", markdown(agg, diffusion, args.reference_nfe, args.tolerance))
    print(json.dumps({"out": str(args.out), "cells": len(records)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
