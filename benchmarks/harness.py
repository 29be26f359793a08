"""The benchmark grid: every method on every (mask, acceleration, seed) cell, resumable.

Each cell reconstructs the chosen slices of every volume with ``mrdiff.pipeline.reconstruct_volume``
(the very function behind ``mrdiff recon``), writes the reconstructions as fastMRI submission files,
scores them with ``mrdiff.metrics`` (fastMRI ``evaluate.py``) and finally writes
``cells/<key>.json`` atomically. A rerun skips every cell whose JSON exists.

ESPIRiT maps depend only on (slice, mask), not on the method, so they are estimated once per cell
group before any method is timed (:func:`prewarm_maps` fills a cache that the pipeline then reads);
``seconds_per_slice`` therefore excludes map estimation for every method alike, and the map time is
recorded separately.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import mrdiff.pipeline as pipeline
from mrdiff.adapt import AdaptSpec
from mrdiff.atomic import atomic_path
from mrdiff.coils import estimate_maps
from mrdiff.errors import InputError
from mrdiff.io import VolumeInfo, center_crop, read_slice, write_reconstruction
from mrdiff.masks import MASK_KINDS, sampling_fraction
from mrdiff.metrics import volume_metrics
from mrdiff.pipeline import AutoSpec, MaskSpec, MethodSpec, maps_key, reconstruct_volume, volume_mask
from mrdiff.provenance import run_record, tuning_context
from mrdiff.tuning import OUTER, Split, TrialLog

#: fastMRI's centre fractions for 1-D masks (4x: 8%, 8x: 4%); 2-D Poisson keeps an 8% square
CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
POISSON_CENTER_FRACTION = 0.08


def center_fraction(mask: str, accel: float) -> float:
    """Centre fraction used for ``mask`` at ``accel`` (fastMRI convention for 1-D masks)."""
    if mask == "poisson":
        return POISSON_CENTER_FRACTION
    return CENTER_FRACTIONS.get(int(accel), 0.32 / accel) if float(accel).is_integer() else 0.32 / accel


@dataclass(frozen=True)
class MethodConfig:
    """A benchmark row: ``label`` (shown), registered ``name``, parameters, NFE and samples.

    ``auto``: held-out k-space cross-validation settings (:func:`auto_settings`) when the row tunes its
    parameters per volume (`mrdiff bench --auto`), else None.
    ``adapt``: test-time adaptation settings (``AdaptSpec.settings()``) when the row fits a LoRA
    adapter of the prior per volume (`mrdiff bench --adapt`), else None.
    """

    label: str
    name: str
    params: dict = field(default_factory=dict)
    nfe: int = 50
    samples: int = 1
    auto: dict | None = None
    adapt: dict | None = None

    @property
    def is_diffusion(self) -> bool:
        """True for methods of ``mrdiff.consistency.REGISTRY``."""
        return self.name in pipeline.diffusion_methods()


def auto_settings(auto: AutoSpec) -> dict:
    """An :class:`AutoSpec` as plain values (stored in the row, so a change reruns the cell)."""
    t = auto.tunable
    tunable = None if t is None else {k: None if v is None else list(v) for k, v in t.items()}
    return {
        "tunable": tunable,
        "fraction": auto.split.fraction,
        "folds": auto.split.folds,
        "slices": auto.slices,
        "points": auto.points,
        "refine": auto.refine,
        # only when set, so that cells run before the option existed still resume
        **({} if auto.samples is None else {"samples": auto.samples}),
        **({"pool": True} if auto.split.pool else {}),
        **({} if auto.split.region == OUTER else {"region": auto.split.region}),
        **({} if auto.fallback is None else {"fallback": auto.fallback}),
    }


def auto_from_settings(d: dict) -> AutoSpec:
    """Inverse of :func:`auto_settings`."""
    t = d["tunable"]
    tunable = None if t is None else {k: None if v is None else tuple(v) for k, v in t.items()}
    split = Split(d["fraction"], d["folds"], 0, d.get("pool", False), d.get("region", OUTER))
    samples, fallback = d.get("samples"), d.get("fallback")
    return AutoSpec(tunable, split, d["slices"], d["points"], d["refine"], samples, fallback)


@dataclass(frozen=True)
class Cell:
    """One method on one (mask, acceleration, seed)."""

    method: MethodConfig
    mask: str
    accel: float
    seed: int

    @property
    def key(self) -> str:
        """File-system name of the cell."""
        nfe = f"__nfe{self.method.nfe}" if self.method.is_diffusion else ""
        return f"{self.method.label}__{self.mask}__{self.accel:g}x{nfe}__s{self.seed}"

    @property
    def mask_spec(self) -> MaskSpec:
        """Seed 0 uses fastMRI's per-file mask seed; seed s > 0 mixes s in."""
        cf = center_fraction(self.mask, self.accel)
        return MaskSpec(self.mask, float(self.accel), cf, None if self.seed == 0 else self.seed)


def plan(methods: list[MethodConfig], masks: list[str], accels: list[float], seeds: int) -> list[Cell]:
    """All cells, grouped by (mask, accel, seed) so shared maps are reused across methods."""
    bad = [m for m in masks if m not in MASK_KINDS]
    if bad:
        raise InputError(f"unknown mask(s) {bad} (choose from {', '.join(MASK_KINDS)})")
    if any(not a >= 1 for a in accels) or seeds < 1:
        raise InputError("accelerations must be >= 1 and --seeds >= 1")
    return [Cell(m, mk, a, s) for mk in masks for a in accels for s in range(seeds) for m in methods]


def prewarm_maps(volumes: list[VolumeInfo], cell: Cell, slices: dict[str, list[int]], cache: dict) -> float:
    """Estimate (into ``cache``) the maps of every slice of ``cell``'s mask before any method is timed.

    Returns the seconds spent; maps already in ``cache`` cost nothing.
    """
    t0 = time.perf_counter()
    for info in volumes:
        mask = volume_mask(info, cell.mask_spec)
        for s in slices[info.path.name]:
            key = maps_key(info, s, mask)
            if key not in cache and info.shape[1] > 1:
                y = read_slice(info, s).kspace * mask.to(torch.bool)
                cache[key] = estimate_maps(y, mask)
    return time.perf_counter() - t0


def _target(info: VolumeInfo, slices: list[int]) -> np.ndarray | None:
    if info.target_key is None:
        return None
    return np.stack([center_crop(read_slice(info, s).target.numpy(), info.recon_size) for s in slices])


def _volume_spec(
    m: MethodConfig, spec: MethodSpec, info, cell: Cell, maps_cache, progress=None, trials: Path | None = None
) -> tuple[MethodSpec, dict]:
    """``spec`` for one volume after the row's per-volume steps: parameters tuned by held-out
    cross-validation (``auto``), then the prior adapted to the volume (``adapt``); and what they did.

    Both work on the central slices of the whole volume, as ``mrdiff recon --auto`` on the file does,
    not on the central ones of the benchmarked subset (``--slices-per-volume`` spreads those), so a
    row's choice does not depend on how many slices are scored; ``tuned_slices`` records them.
    ``trials``: where the search keeps its scored candidates, ``trials/<cell>/<volume>.<stage>.jsonl``
    (:class:`mrdiff.tuning.TrialLog`), so that a cell cut off mid-search resumes (None: nowhere)."""
    extra = {}
    if m.auto is not None:
        tuning = None if progress is None else lambda p, e: progress(cell.key, {"tuning": p, "cv_error": e})
        auto = auto_from_settings(m.auto)
        tuned = pipeline.tuning_slices(info, auto)
        memo = None
        if trials is not None:
            context = tuning_context(spec, cell.mask_spec, info.mask is not None, auto, info.path.name, tuned)
            memo = TrialLog.stages(trials / cell.key, context, f"{info.path.stem}.")
        res = pipeline.tune_volume(info, spec, cell.mask_spec, auto, maps_cache, None, tuning, memo)
        spec = pipeline.tuned_spec(spec, res)
        extra["auto"] = {**res.record(), "tuned_slices": tuned}
    if m.adapt is not None and spec.name == m.name:  # not when it backed off to its classical fallback
        adapt = AdaptSpec.from_settings(m.adapt)
        adapted, extra["adapt"] = pipeline.adapt_volume(info, spec, cell.mask_spec, adapt, maps_cache, None)
        spec = replace(spec, denoiser=adapted)
    return spec, extra


def run_cell(
    cell: Cell,
    volumes: list[VolumeInfo],
    slices: dict[str, list[int]],
    out: Path,
    denoiser: object | None,
    device: str,
    maps_cache: dict | None = None,
    progress: Callable[[str, dict | None], None] | None = None,
) -> dict:
    """Reconstruct, write and score one cell; returns its record (also written to ``cells/``).
    ``progress(key, {"tuning": values, "cv_error": e})`` follows an ``auto`` row's search, and
    ``progress(key, {"slices_done": n, "of": total})`` the reconstruction slice by slice."""
    m = cell.method
    spec = MethodSpec(
        m.name, dict(m.params), denoiser if m.is_diffusion else None, m.nfe, m.samples, cell.seed, device, 1
    )
    rows, t0, done = [], time.perf_counter(), 0
    total = sum(len(slices[info.path.name]) for info in volumes)
    with tqdm(total=total, desc=cell.key, unit="slice", leave=False, disable=None) as bar:  # terminals only

        def advanced(n: int) -> None:
            """The bar on a terminal, and one ``progress`` event per batch of slices (logs, no tty)."""
            nonlocal done
            bar.update(n)
            done += n
            if progress is not None:
                progress(cell.key, {"slices_done": done, "of": total})

        for info in volumes:
            idx = slices[info.path.name]
            vspec, extra = _volume_spec(m, spec, info, cell, maps_cache, progress, out / "tuning")
            result = reconstruct_volume(info, vspec, cell.mask_spec, idx, advanced, maps_cache=maps_cache)
            attrs = {
                **run_record(vspec, cell.mask_spec, info.mask is not None),
                "method": m.label,
                "base_method": m.name,
                "nfe": result.nfe,
                "seconds_per_slice": result.seconds_per_slice,
                "device": device,
                "slices": idx,
                "mask": cell.mask,
                "accel": cell.accel,
                "seed": cell.seed,
                "prior_sha256": getattr(denoiser, "sha256", "") if m.is_diffusion else "",
            }
            attrs.update(extra)
            write_reconstruction(
                out / "recons" / cell.key / info.path.name,
                result.reconstruction,
                attrs,
                {"residual": result.residual, "mask": result.mask.numpy(), "zero_filled": result.zero_filled},
            )
            row = {
                "volume": info.path.name,
                "n_slices": len(idx),
                "slices": [int(i) for i in idx],
                "nfe": result.nfe,
                "seconds_per_slice": result.seconds_per_slice,
                "residual": float(np.mean(result.residual)),
                "sampling_fraction": sampling_fraction(result.mask, info.shape[2:]),
            }
            row.update(extra)
            target = _target(info, idx)
            if target is not None:
                row.update(volume_metrics(target, result.reconstruction))
            rows.append(row)
    record = {
        "key": cell.key,
        "method": asdict(m),
        "mask": cell.mask,
        "accel": cell.accel,
        "seed": cell.seed,
        "center_fraction": cell.mask_spec.center_fraction,
        "device": device,
        "prior_sha256": getattr(denoiser, "sha256", "") if m.is_diffusion else "",
        "seconds": time.perf_counter() - t0,
        "volumes": rows,
    }
    with atomic_path(out / "cells" / f"{cell.key}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return record


def load_record(out: Path, cell: Cell) -> dict | None:
    """The finished record of ``cell``, or None."""
    path = out / "cells" / f"{cell.key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def is_current(
    record: dict | None, cell: Cell, prior_sha256: str | None, slices: dict[str, list[int]] | None = None
) -> bool:
    """True if ``record`` is a finished run of exactly ``cell``'s method configuration, on the same
    slices of the same volumes (``slices``: volume name -> indices; None: do not check), and, for a
    diffusion method, with the prior of sha256 ``prior_sha256`` (None: do not check the prior).

    A rerun after changing a method's parameters, the slice selection or the prior must not reuse
    old numbers. Records written before cells stored their slice indices are matched on the slice count.
    """
    if record is None or record.get("method") is None:
        return False
    if {"auto": None, "adapt": None, **record["method"]} != json.loads(json.dumps(asdict(cell.method))):
        return False
    if record.get("center_fraction") != cell.mask_spec.center_fraction:
        return False
    if slices is not None and not _same_slices(record.get("volumes", []), slices):
        return False
    rows = record.get("volumes", [])
    if cell.method.auto is not None and any("tuned_slices" not in r.get("auto", {}) for r in rows):
        return False  # tuned before 2026-12-02 on the central ones of the scored slices: tune again
    return not cell.method.is_diffusion or prior_sha256 is None or record.get("prior_sha256") == prior_sha256


def _same_slices(rows: list[dict], slices: dict[str, list[int]]) -> bool:
    """Whether a record's per-volume rows cover exactly the requested volumes and slices."""
    done = {row.get("volume"): row for row in rows}
    if set(done) != set(slices):
        return False
    for name, idx in slices.items():
        row = done[name]
        stored = row.get("slices")
        if stored is None and row.get("n_slices") != len(idx):
            return False
        if stored is not None and [int(i) for i in stored] != [int(i) for i in idx]:
            return False
    return True


def run_grid(
    cells: list[Cell],
    volumes: list[VolumeInfo],
    slices: dict[str, list[int]],
    out: Path,
    denoiser_fn: Callable[[], object],
    device: str,
    progress: Callable[[str, dict | None], None] | None = None,
    prior_sha256: str | None = None,
) -> dict:
    """Run every cell without a current record (see :func:`is_current`); returns
    ``{ran, skipped, maps_seconds, seconds, cells}`` (``cells``: the keys of this grid's records, so
    that publishing copies these and no leftover record of an earlier grid in ``out``).

    ``denoiser_fn`` is called once, and only if a cell to run needs the diffusion prior.
    """
    todo = [c for c in cells if not is_current(load_record(out, c), c, prior_sha256, slices)]
    stats = {"ran": 0, "skipped": len(cells) - len(todo), "maps_seconds": 0.0, "seconds": 0.0}
    stats["cells"] = [c.key for c in cells]
    denoiser = denoiser_fn() if any(c.method.is_diffusion for c in todo) else None
    t0, warmed = time.perf_counter(), set()
    maps_cache: dict = {}
    for cell in todo:
        group = (cell.mask, cell.accel, cell.seed)
        if group not in warmed:
            stats["maps_seconds"] += prewarm_maps(volumes, cell, slices, maps_cache)
            warmed.add(group)
        record = run_cell(cell, volumes, slices, out, denoiser, device, maps_cache, progress)
        stats["ran"] += 1
        if progress:
            progress(cell.key, record)
    stats["seconds"] = time.perf_counter() - t0
    return stats
