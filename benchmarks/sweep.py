"""Hyper-parameter sweep on `val` (never `test`): grid points run as ordinary benchmark cells.

Every grid point becomes a row labelled ``method@key=value,...``; the best point per method (highest
PSNR averaged over the swept masks and accelerations) is written to a params file that ``mrdiff
bench`` reads. For diffusion methods the NFE is chosen as the smallest swept NFE whose PSNR is within
``NFE_TOLERANCE_DB`` of that method's best, to keep the CPU benchmark affordable.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import yaml

from benchmarks.harness import MethodConfig
from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError
from mrdiff.pipeline import all_methods, diffusion_methods

#: the documented grid: method -> {parameter: values}; "init" selects CCDF's baseline initialiser
GRID: dict[str, dict[str, list]] = {
    "sense": {"iters": [10, 30]},
    "cs-l1": {"lamda": [0.0005, 0.002, 0.008]},
    "cs-tv": {"lamda": [0.0005, 0.002, 0.008]},
    "pocs": {},
    "ilvr": {"factor": [2.0, 4.0]},
    "ccdf": {"init": ["unet"], "sigma_t0": [0.15, 0.3, 1.0]},
    "repaint": {},
    "mcg": {"zeta": [0.5, 1.0]},
    "dps": {"zeta": [2.0, 5.0, 10.0]},  # 0.5-2 never reached the default 5 (issue 13: DPS below zf)
    "dds": {"eta": [0.5, 0.85]},
}
NFE_TOLERANCE_DB = 0.25


def _label(name: str, params: dict) -> str:
    return name + ("@" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def grid_configs(methods: list[str], nfes: list[int]) -> list[MethodConfig]:
    """One row per grid point (times each NFE for diffusion methods)."""
    out = []
    for name in methods:
        if name not in all_methods():
            raise InputError(f"sweep: unknown method '{name}' (choose from {', '.join(all_methods())})")
        grid = GRID.get(name, {})
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values))
            if name in diffusion_methods():
                out += [MethodConfig(_label(name, params), name, params, n) for n in nfes]
            else:
                out.append(MethodConfig(_label(name, params), name, params, 0))
    return out


def choose(agg: list[dict], configs: list[MethodConfig]) -> dict:
    """Best settings per method from aggregate rows: ``{name: {method, nfe, params, val_psnr}}``."""
    by_label = {(c.label, c.nfe): c for c in configs}
    scores: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in agg:
        key = (r["method"], r.get("nfe_requested", r["nfe"]))
        if key in by_label:
            scores[key].append(r["PSNR_mean"])
    mean = {k: sum(v) / len(v) for k, v in scores.items()}
    best: dict[str, dict] = {}
    for name in dict.fromkeys(c.name for c in configs):
        cands = [(k, s) for k, s in mean.items() if by_label[k].name == name]
        if not cands:
            continue
        top = max(s for _, s in cands)
        tol = NFE_TOLERANCE_DB if name in diffusion_methods() else 0.0
        near = [(k, s) for k, s in cands if s >= top - tol]
        (label, nfe), score = min(near, key=lambda t: (t[0][1], -t[1]))
        cfg = by_label[(label, nfe)]
        best[name] = {
            "method": name,
            "params": dict(cfg.params),
            "val_psnr": round(score, 3),
            "best_val_psnr": round(top, 3),
        }
        if name in diffusion_methods():
            best[name]["nfe"] = nfe
    return best


def write_params(path: Path, best: dict, command: str) -> None:
    """Write the params file read by ``mrdiff bench`` (atomically)."""
    header = (
        f"# Chosen on the `val` split by:\n#   {command}\n# (best mean PSNR over the swept masks; "
        f"diffusion NFE = smallest within {NFE_TOLERANCE_DB} dB of the best). Never tuned on `test`.\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump({"methods": best}, sort_keys=False))
