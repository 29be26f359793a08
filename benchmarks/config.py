"""Which rows a benchmark runs: method configurations (from the val sweep) and slice subsets.

A params file (YAML, written by ``mrdiff bench --sweep``) maps a row label to its registered method,
NFE and parameters, e.g.::

    methods:
      cs-l1: {method: cs-l1, params: {lamda: 0.002}}
      ccdf-unet: {method: ccdf, nfe: 10, params: {init: unet, sigma_t0: 1.0}}

A label not in the file is a registered method name with its defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from benchmarks.harness import MethodConfig
from mrdiff.baselines import BASELINES
from mrdiff.errors import InputError
from mrdiff.overrides import method_params
from mrdiff.pipeline import all_methods, check_init, diffusion_methods, split_init, supervised_methods
from mrdiff.resources import package_path

DEFAULT_PARAMS = package_path("benchmarks", "params", "open-brain-128.yaml")  # package data


def read_params(path: Path | None) -> dict:
    """The ``methods`` mapping of a params file (empty when ``path`` is None or missing)."""
    if path is None or not Path(path).exists():
        if path is not None and Path(path) != DEFAULT_PARAMS:
            raise InputError(f"{path}: no such params file")
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    methods = data.get("methods", {})
    if not isinstance(methods, dict):
        raise InputError(f"{path}: 'methods' must be a mapping of label -> settings")
    return methods


def method_config(
    label: str, table: dict, nfe: int | None = None, samples: int | None = None
) -> MethodConfig:
    """The row ``label``: from the params table, else the registered method with defaults.

    ``nfe`` (when given) overrides the table's NFE of a diffusion method; ``samples`` (when given) the
    table's ``samples``, else the method's ``default_samples``.
    """
    entry = dict(table.get(label, {"method": label}))
    name = entry.get("method", label)
    if name not in all_methods():
        raise InputError(
            f"unknown method '{label}' (choose from {', '.join(all_methods())} or a params label)"
        )
    params = dict(entry.get("params") or {})
    try:
        check_init(name, params)  # the same one-line error as `mrdiff recon`, before any cell runs
    except InputError as err:
        raise InputError(f"row '{label}': {err}") from None
    is_diff = name in diffusion_methods()
    _validate(name, split_init(params)[0])
    n = int(nfe if (nfe is not None and is_diff) else entry.get("nfe", 50))
    if not is_diff:
        return MethodConfig(label, name, params, 0, 1)
    k = samples if samples is not None else entry.get("samples", diffusion_methods()[name].default_samples)
    if int(k) < 1:
        raise InputError(f"method '{label}': samples must be >= 1, got {k}")
    return MethodConfig(label, name, params, n, int(k))


def _validate(name: str, params: dict) -> None:
    """Reject parameters the method does not take, before anything runs."""
    if name in diffusion_methods():
        diffusion_methods()[name](**params)
    else:
        method_params(name, {**BASELINES, **supervised_methods()}[name], params)


def method_configs(
    labels: list[str], table: dict, nfes: list[int] | None, samples: int | None = None
) -> list[MethodConfig]:
    """Rows for ``labels``; a diffusion row appears once per NFE in ``nfes`` (or once at its own NFE)."""
    out = []
    for label in labels:
        base = method_config(label, table, None, samples)
        if base.name in diffusion_methods() and nfes:
            out += [method_config(label, table, n, samples) for n in nfes]
        else:
            out.append(base)
    return out


def pick_slices(n_slices: int, count: int | None) -> list[int]:
    """``count`` slices evenly spread over the central 60% of a volume (all when None or too many)."""
    if count is None or count >= n_slices:
        return list(range(n_slices))
    if count < 1:
        raise InputError(f"--slices-per-volume must be >= 1, got {count}")
    lo, hi = int(np.floor(0.2 * (n_slices - 1))), int(np.ceil(0.8 * (n_slices - 1)))
    picks = np.unique(np.round(np.linspace(lo, hi, count)).astype(int)).tolist()
    return picks if len(picks) == count else list(range(n_slices))[:count]


def split_list(text: str | None, kind=str) -> list:
    """``"a,b"`` -> ``["a", "b"]`` converted with ``kind``."""
    if not text:
        return []
    try:
        return [kind(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"cannot read '{text}' as a comma-separated list of {kind.__name__}") from None
