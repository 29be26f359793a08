"""Would ``--auto`` back a diffusion method off to auto CS-L1? (issue 13: the phantom requirement)

Two ways to look at the rule of :func:`mrdiff.pipeline.check_fallback` without rerunning searches:

- ``scores FILE.json ...``: replay it on the held-out scores of ``benchmarks.heldout_rank`` (`val`:
  every configuration's per-slice cover-fold scores and its PSNR). The CS-L1 row with the lowest score
  stands for auto CS-L1; each diffusion row backs off if CS-L1 beats it under the tuner's guards, with
  the slices as the cells (those files keep per-slice scores, not per-fold ones). Printed for the
  ``mean`` and the ``pooled`` score, with the PSNR each decision gives up or gains.
- ``cells --data DIR CELL.json ...``: run the check itself on the choices of published benchmark cells
  (a bench cell record: method, its parameters, the ``--auto`` settings and the chosen values), on the
  volumes of ``DIR``, with the shipped prior; prints the decision and the errors behind it.

Usage::

    python -m benchmarks.fallback_check scores benchmarks/results/self-tuning/heldout-scores/45db-4x-*.json
    python -m benchmarks.fallback_check cells --data data/open-brain-128/test RUN/cells/ccdf+auto__*.json \\
        [--json runs/fallback.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Cell, MethodConfig, auto_from_settings
from benchmarks.tuning_common import append_jsonl, one_line_errors
from mrdiff.errors import InputError
from mrdiff.io import open_volume
from mrdiff.pipeline import MethodSpec, check_fallback, diffusion_methods
from mrdiff.tuning import MIN_SKILL_ERROR, replaces


def replay_scores(path: Path, score: str) -> list[dict]:
    """The back-off decision for every diffusion row of one ``heldout_rank`` file under ``score``."""
    record = json.loads(path.read_text())[0]
    rows = record["rows"]
    cs = min((r for r in rows if r["method"] == "cs-l1"), key=lambda r: float(np.mean(r[score])))
    theirs = torch.tensor(cs[score], dtype=torch.float64)
    out = []
    for row in rows:
        if row["method"] not in diffusion_methods():
            continue
        mine = torch.tensor(row[score], dtype=torch.float64)
        used = replaces(float(theirs.mean()), theirs, float(mine.mean()), mine, MIN_SKILL_ERROR)
        out.append(
            {
                "file": path.stem,
                "score": score,
                "row": f"{row['method']} {json.dumps(row['params'])}",
                "cs": json.dumps(cs["params"]),
                "error": round(float(mine.mean()), 4),
                "cs_error": round(float(theirs.mean()), 4),
                "backs_off": used,
                "cs_minus_row_db": round(cs["psnr"] - row["psnr"], 2),
            }
        )
    return out


def _scores(args) -> int:
    for path in args.files:
        for score in ("mean", "pooled"):
            for r in replay_scores(path, score):
                right = (r["cs_minus_row_db"] > 0) == r["backs_off"]
                print(
                    f"{r['file']:20s} {score:6s} {r['row']:42s} {r['error']:.3f} vs CS {r['cs_error']:.3f}: "
                    f"{'BACK OFF' if r['backs_off'] else 'keep    '} (CS - row {r['cs_minus_row_db']:+.2f} dB"
                    f"{'' if right else ', wrong way'})"
                )
                append_jsonl(args.json, r)
    return 0


def cell_spec(record: dict) -> tuple[MethodSpec, Cell, object]:
    """The method spec at a published cell's chosen values, its cell and its ``--auto`` request."""
    m = record["method"]
    if m.get("auto") is None or m["name"] not in diffusion_methods():
        raise InputError(f"{record.get('key')}: not a diffusion --auto cell")
    config = MethodConfig(m["label"], m["name"], m["params"], m["nfe"], m["samples"], m["auto"])
    cell = Cell(config, record["mask"], float(record["accel"]), int(record["seed"]))
    spec = MethodSpec(m["name"], dict(m["params"]), None, m["nfe"], m["samples"], cell.seed, "cpu", 1)
    return spec, cell, auto_from_settings({**m["auto"], "fallback": "cs-l1"})


def _cells(args) -> int:
    from mrdiff.priors import load_prior

    denoiser = load_prior(None, "cpu")
    for path in args.files:
        record = json.loads(path.read_text())
        spec, cell, auto = cell_spec(record)
        if record.get("prior_sha256") not in ("", None, denoiser.sha256):
            print(f"{path.name}: warning: published with prior {record['prior_sha256'][:8]}", file=sys.stderr)
        spec = replace(spec, denoiser=denoiser)
        for row in record["volumes"]:
            info = open_volume(args.data / row["volume"])
            chosen = {**spec.params, **row["auto"]["chosen"]}
            fb = check_fallback(info, spec, cell.mask_spec, auto, chosen, {})
            out = {"cell": record["key"], "volume": row["volume"], "PSNR": row["PSNR"], "fallback": fb}
            print(json.dumps(out), flush=True)
            append_jsonl(args.json, out)
    return 0


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scores", help="replay on benchmarks.heldout_rank files (val)")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--json", type=Path, default=None, help="append every decision here (JSON lines)")
    c = sub.add_parser("cells", help="run the check on published bench cells' choices")
    c.add_argument("files", nargs="+", type=Path)
    c.add_argument("--data", type=Path, required=True, help="the split directory the cells ran on")
    c.add_argument("--json", type=Path, default=None, help="append every decision here (JSON lines)")
    args = p.parse_args(argv)
    return _scores(args) if args.what == "scores" else _cells(args)


if __name__ == "__main__":
    raise SystemExit(main())
