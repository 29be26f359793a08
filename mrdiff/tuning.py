"""Held-out k-space cross-validation: choose a method's parameters from the measurements alone.

The measured samples outside the fully sampled centre are split, seeded and deterministically, into
a fit set and a held-out set (whole lines for line masks, single points for 2-D masks; the centre,
which also feeds ESPIRiT, is never held out, unless ``Split(region=CENTRE)`` asks for single centre
lines instead: :func:`centre_sets`). A method reconstructs from the fit set only, through a
*new* operator built with the smaller mask, and is scored by the normalised prediction error on the
held-out samples, ``||M_ho (A x - y)||^2 / ||M_ho y||^2``. This is K-fold cross-validation of the
measurement prediction (Ward, "Compressed sensing with cross validation", IEEE Trans. Inf. Theory
55:5773, 2009; the disjoint k-space split of SSDU, Yaman et al., MRM 84:3172, 2020). It needs no
ground truth, so it both tunes parameters (:func:`tune`) and scores a finished reconstruction on a
real scan (:func:`fold_parts`, :func:`slice_scores`).

``run(y, op, params) -> x`` is any method: ``y`` ``(B, C, H, W)`` masked k-space, ``op`` a
``CartesianOperator``, ``params`` keyword parameters, ``x`` a complex ``(B, H, W)`` image on the
scale of ``y``. A method declares its searchable parameters as ``{name: (lo, hi, scale)}`` with
``scale`` one of :data:`SCALES` (its ``tunable`` next to its ``defaults``), or a discrete choice as
``{name: (values, "choice")}``, e.g. CCDF's initialiser ``{"init": (("cs-l1", "unet"), "choice")}``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrdiff.coils import calibration_block
from mrdiff.errors import InputError
from mrdiff.operators import CartesianOperator

SCALES = ("log", "linear", "int", "choice")
GOLDEN = (math.sqrt(5) - 1) / 2

Run = Callable[[torch.Tensor, CartesianOperator, dict], torch.Tensor]


#: ``Split.folds`` value asking for folds that together hold out every eligible line/point once
COVER = 0

#: ``Split.folds`` value asking for :data:`COVER` folds on line masks and :data:`POINT_FOLDS` on 2-D
#: masks: what ``--auto`` uses unless told otherwise. The benchmark's 128² line masks have 9-30
#: measured lines outside the centre, and they differ: distance to the nearest other line, frequency,
#: energy. Three folds of 10 % hold out 3-9 of them, too few to stand for the rest: on `val` at 45 dB,
#: equispaced 8x, the 6 lines of 3 folds scored CS-L1's lambda 1e-4 best (0.89 against 0.98 for the
#: default 0.01; -0.60 dB), while all 15 lines (7 folds) scored every lambda 0.97-1.11, no skill, so
#: the default is kept (``benchmarks/results/self-tuning/cs-lambda-cover/``). Covering every line is
#: ordinary K-fold cross-validation (K = 1 / fraction); it costs about 3x the trials of 3 folds. A 2-D
#: mask has thousands of measured points, and 3 folds of 10 % sample them well.
AUTO = -1

#: folds of a 2-D (point) mask under :data:`AUTO`
POINT_FOLDS = 3

#: ``Split.region`` values: hold out measured lines/points outside the fully sampled centre, or single
#: lines of the centre itself (line masks only; see :func:`holdout_sets`)
OUTER, CENTRE = "outer", "centre"

#: most centre lines held out (one per fold) under :data:`CENTRE` with :data:`AUTO` folds
CENTRE_FOLDS = 8


@dataclass(frozen=True)
class Split:
    """How measured k-space is split and scored.

    ``fraction`` of the non-centre samples is held out per fold; ``folds`` disjoint held-out sets are
    drawn from a generator seeded with ``seed`` (``folds=0``: as many as it takes to hold out every
    eligible line/point once, :data:`COVER`; the default ``folds=-1``, :data:`AUTO`: that for line
    masks and 3 for 2-D masks). ``pool``: score the folds' energy-pooled error
    ``sum_f ||M_f (A x_f - y)||^2 / sum_f ||M_f y||^2`` instead of the mean of per-fold ratios (see
    :func:`split_score`). ``region``: :data:`OUTER` (the samples outside the centre) or :data:`CENTRE`
    (one line of the centre per fold; ``fraction`` and ``seed`` do not apply)."""

    fraction: float = 0.1
    folds: int = AUTO
    seed: int = 0
    pool: bool = False
    region: str = OUTER


#: default held-out error a candidate must beat (by more than one standard error) to replace a start
#: value: it must predict at least 5 % of the held-out energy. An error of 1 is what predicting zero
#: scores, yet errors a little below 1 carry no ranking either: on `val` (30 dB) at equispaced 8x,
#: where each fold holds out one line of the regular pattern, every (slice, fold) cell of 11
#: classical rows scored >= 0.974 and the rows' Spearman rho against true NMSE was -0.36 to -0.11
#: (``benchmarks/results/self-tuning/heldout-scores/30db-8x-equispaced.json``); every pick there gave
#: up 1.1 dB. The slices of a volume share each fold's held-out lines, so their cells are not
#: independent and a consistent edge of 1-2 % passes the standard-error margin (on `test`, CS-L1's
#: lambda 1e-4 at 0.986 against 0.999, -3.6 dB). Of the published `--auto` choices that beat the
#: fixed values, all scored <= 0.77 but one: DDS on the twix phantom at random 4x (0.986, +0.68 dB),
#: which this default gives up.
MIN_SKILL_ERROR = 0.95


@dataclass(frozen=True)
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes:
        params: the base parameters with the chosen values filled in (what to reconstruct with).
        chosen: only the tuned parameters and their chosen values.
        error: held-out score of ``params`` (:func:`split_score` of the split's folds).
        base_error: the same for the starting parameters (``nan`` if a start value was out of range).
        trials: reconstructions run (candidates x folds), not counting those read from a ``memo``.
        seconds: wall time of the search.
        table: every candidate evaluated, ``[{"params": {...}, "error": e}, ...]``.
        folds: held-out sets the split gave (with :data:`COVER` / :data:`AUTO`, known only here).
        reused: reconstructions (candidates x folds) whose scores came from a ``memo`` (an earlier,
            interrupted search of the same request) instead of being run.
        start: the tuned parameters' start values (those the search had to beat; e.g. CS-L1's
            noise-proportional lambda, :func:`mrdiff.pipeline.search_start`).
        fallback: the comparison with a classical fallback and whether the method backed off to it
            (:func:`mrdiff.pipeline.check_fallback`; empty when none was made).
    """

    params: dict
    chosen: dict
    error: float
    base_error: float
    trials: int
    seconds: float
    table: list = field(default_factory=list)
    folds: int = 0
    reused: int = 0
    start: dict = field(default_factory=dict)
    fallback: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The choice and its cost as plain, JSON-safe values (``default_cv_error`` None when unknown;
        ``reused_trials`` only when a memo supplied some)."""
        return {
            "chosen": self.chosen,
            "start": self.start,
            "cv_error": round(self.error, 6),
            "default_cv_error": None if math.isnan(self.base_error) else round(self.base_error, 6),
            "trials": self.trials,
            "folds_used": self.folds,
            "seconds": round(self.seconds, 2),
            **({"reused_trials": self.reused} if self.reused else {}),
            **({"fallback": self.fallback} if self.fallback else {}),
        }


class TrialLog(MutableMapping):
    """A :func:`tune` ``memo`` kept in a JSON-lines file, so that a search cut off after hours resumes
    where it stopped instead of starting again.

    The first line is ``{"context": ...}``: whatever decides a candidate's score besides its parameters
    (method, mask, slices, split, prior...). A file whose context differs, or that cannot be read, is
    started afresh; a line cut short by a kill is skipped. Each scored candidate is appended and synced
    at once (``{"params": [[name, value], ...], "error": e, "cells": [...]}``), so the file also keeps
    the whole search, with its per-(fold, item) errors, for later analysis."""

    def __init__(self, path: str | Path, context: dict):
        self.path, self.entries = Path(path), {}
        header = json.dumps({"context": context}, sort_keys=True, default=str)
        try:
            text = self.path.read_text() if self.path.is_file() else ""
        except (OSError, UnicodeDecodeError):
            text = ""  # unreadable: started afresh below
        lines = text.splitlines()
        if lines and lines[0] == header:
            if not text.endswith("\n"):
                with self.path.open("a") as f:
                    f.write("\n")  # end the line a kill cut short, so the next entry starts its own
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                    key = tuple((k, _frozen(v)) for k, v in row["params"])
                    self.entries[key] = (float(row["error"]), torch.tensor(row["cells"], dtype=torch.float64))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(header + "\n")

    @staticmethod
    def stages(directory: str | Path, context: dict, prefix: str = "") -> Callable[[str], TrialLog]:
        """``stage -> TrialLog`` at ``directory/<prefix><stage>.jsonl`` with ``context`` plus the stage:
        the ``memo`` factory :func:`mrdiff.pipeline.tune_volume` takes (one log per search stage)."""
        return lambda stage: TrialLog(Path(directory) / f"{prefix}{stage}.jsonl", {**context, "stage": stage})

    def __getitem__(self, key):
        return self.entries[key]

    def __setitem__(self, key, value):
        error, cells = value
        row = {"params": [list(kv) for kv in key], "error": float(error), "cells": cells.tolist()}
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[key] = value

    def __delitem__(self, key):
        raise TypeError("a TrialLog only grows")

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)


def _plain(value):
    """A numpy scalar as the Python number it holds, anything else as its string (for ``json.dumps``)."""
    return value.item() if hasattr(value, "item") else str(value)


def _frozen(value):
    """A JSON-loaded parameter value as a hashable one (lists become tuples)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _mask_2d(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A mask broadcastable to ``(H, W)`` as a bool ``(H, W)`` tensor; batched masks are refused."""
    m = mask.bool().cpu()
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim > 2:
        raise InputError(
            f"held-out k-space needs one mask for the whole batch, got shape {tuple(mask.shape)}"
        )
    return torch.broadcast_to(m, tuple(shape)).clone()


def centre_region(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The fully sampled centred block (ACS) of ``mask`` as a bool ``(H, W)`` tensor (never held out)."""
    rows, cols = calibration_block(_mask_2d(mask, shape), shape)
    (H, W), region = shape, torch.zeros(tuple(shape), dtype=torch.bool)
    r0, c0 = H // 2 - rows // 2, W // 2 - cols // 2  # centred as ESPIRiT crops it
    region[r0 : r0 + rows, c0 : c0 + cols] = True
    return region


def _like(held: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A held-out ``(H, W)`` mask in the shape of ``mask`` (``(W,)``, ``(1, W)``, ``(H, W)``, ...)."""
    if mask.ndim == 1:
        return held[0]
    held = held[:1] if mask.shape[-2] == 1 else held
    return (held[:, :1] if mask.shape[-1] == 1 else held).reshape(mask.shape)


def _line_axis(m: torch.Tensor) -> int | None:
    """1 if every column is all-in or all-out (phase-encode lines along W), 0 for rows, else None."""
    if bool((m == m[:1]).all()):
        return 1
    if bool((m == m[:, :1]).all()):
        return 0
    return None


def holdout_sets(mask: torch.Tensor, shape: tuple[int, int], split: Split) -> list[torch.Tensor]:
    """``split.folds`` disjoint held-out masks, each shaped like ``mask`` (``(W,)`` or ``(H, W)``).

    Line masks lose whole lines, 2-D masks single points; the fully sampled centre is never held out.
    Each fold holds out ``take = max(1, round(fraction * n))`` of the ``n`` eligible lines/points, drawn
    by a ``torch.Generator`` seeded with ``split.seed``, so the split is a function of its inputs only.
    With ``split.folds == COVER`` (or :data:`AUTO` on a line mask) a random permutation of all ``n`` is
    cut into ``n // take`` folds (sizes differ by at most one), so every eligible line/point is held out
    exactly once; :data:`AUTO` on a 2-D mask draws :data:`POINT_FOLDS` folds.

    With ``split.region == CENTRE`` see :func:`centre_sets`.

    Raises:
        InputError: nothing outside the centre is measured, or too little for the folds asked.
    """
    if not 0 < split.fraction < 1 or split.folds < AUTO:
        raise InputError(f"held-out fraction must be in (0, 1) and folds >= 0 (or AUTO, -1), got {split}")
    if split.region not in (OUTER, CENTRE):
        raise InputError(f"held-out region must be '{OUTER}' or '{CENTRE}', got '{split.region}'")
    m = _mask_2d(mask, shape)
    if split.region == CENTRE:
        return centre_sets(m, mask, split.folds)
    eligible = m & ~centre_region(m, shape)
    axis = _line_axis(m)
    units = eligible.any(0) if axis == 1 else eligible.any(1) if axis == 0 else eligible.flatten()
    idx = torch.nonzero(units).flatten()
    n = idx.numel()
    take = max(1, round(split.fraction * n))
    cover = split.folds == COVER or (split.folds == AUTO and axis is not None)
    folds = max(1, n // take) if cover else POINT_FOLDS if split.folds == AUTO else split.folds
    if n == 0 or (not cover and take * folds > n):
        raise InputError(
            f"nothing to hold out: {n} measured {'lines' if axis is not None else 'points'} outside the "
            f"fully sampled centre, {folds} fold(s) of {take} needed"
        )
    perm = idx[torch.randperm(n, generator=torch.Generator().manual_seed(split.seed))]
    parts = perm.tensor_split(folds) if cover else perm[: take * folds].split(take)
    return _held_masks(units, parts, axis, m, mask)


def _held_masks(units: torch.Tensor, parts, axis: int | None, m: torch.Tensor, mask: torch.Tensor) -> list:
    """One held-out mask (shaped like ``mask``) per index set in ``parts``: those entries of ``units``
    (lines along ``axis``, or points when ``axis`` is None) within the measured ``m`` ``(H, W)``."""
    out = []
    for part in parts:
        chosen = torch.zeros_like(units)
        chosen[part] = True
        held = chosen[None, :] if axis == 1 else chosen[:, None] if axis == 0 else chosen.reshape(m.shape)
        out.append(_like(torch.broadcast_to(held, tuple(m.shape)) & m, mask))
    return out


def centre_sets(m: torch.Tensor, mask: torch.Tensor, folds: int) -> list[torch.Tensor]:
    """Held-out sets of single lines of the fully sampled centre of a line mask ``m`` ``(H, W)``, one
    per fold, shaped like ``mask``: every centre line (``folds`` :data:`COVER`), at most
    :data:`CENTRE_FOLDS` (:data:`AUTO`) or ``folds`` lines, evenly spread over the centre.

    Why: a held-out outer line of a regular (equispaced) pattern leaves a gap twice the pattern's, which
    the full mask never has, and the outer lines of an 8x mask carry little signal above the noise, so
    their error ranks little (on `val` at equispaced 8x every lambda of CS-L1 scored 0.97-1.1, about
    what predicting zero scores). A centre line has its neighbours measured and its signal far above the
    noise. On `val` (CS-L1's lambda, 4 line masks x 2 SNRs) every centre error was <= 0.18, and its
    minimum fell at or next to the lambda of best PSNR; the picks, after :func:`tune`'s guards, were no
    better than the outer lines' (``benchmarks/results/self-tuning/centre-holdout/``), and across 19
    classical and diffusion rows at equispaced 8x they ranked CCDF's U-Net start backwards (rho 0.22
    against 0.68 for the outer lines: the U-Net never sees a hole in the centre), so :data:`OUTER`
    stays the default. The coil maps are those of the whole scan (estimated from the centre, held-out
    line included), as for every split: the split scores reconstructions, not the calibration.

    Raises:
        InputError: not a line mask, or a centre of fewer than 3 lines.
    """
    axis = _line_axis(m)
    if axis is None:
        raise InputError("held-out centre lines need a 1-D line mask; use the outer region on a 2-D mask")
    region = centre_region(m, tuple(m.shape))
    units = region.any(0) if axis == 1 else region.any(1)
    idx = torch.nonzero(units).flatten()
    if idx.numel() < 3:
        raise InputError(f"nothing to hold out: the fully sampled centre has {idx.numel()} line(s), 3 needed")
    count = idx.numel() if folds == COVER else CENTRE_FOLDS if folds == AUTO else folds
    picks = np.unique(np.round(np.linspace(0, idx.numel() - 1, min(count, idx.numel()))).astype(int))
    return _held_masks(units, [idx[i : i + 1] for i in picks.tolist()], axis, m, mask)


def fit_operator(op: CartesianOperator, held: torch.Tensor) -> CartesianOperator:
    """A new operator measuring ``op``'s mask minus the held-out samples (``op`` is not touched)."""
    mask = op.mask
    return CartesianOperator(mask & ~held.to(mask.device).reshape(mask.shape), op.maps)


def heldout_parts(
    x: torch.Tensor, y: torch.Tensor, op: CartesianOperator, held: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out prediction error energy and held-out energy, ``||M_ho (A x - y)||^2`` and
    ``||M_ho y||^2``, each float64 ``(B,)``.

    Args:
        x: reconstruction ``(B, H, W)`` made without the held-out samples.
        y: all measured k-space ``(B, C, H, W)``.
        op: an operator with the coil maps of ``y`` (its mask is not used).
        held: the held-out mask, broadcastable to ``(H, W)``.
    """
    ho = CartesianOperator(held.to(y.device), op.maps)
    y_ho = y * held.to(y.device)
    num = (ho.A(x.to(y.dtype)) - y_ho).flatten(1).norm(dim=1) ** 2
    return num.double().cpu(), (y_ho.flatten(1).norm(dim=1) ** 2).double().cpu()


def heldout_error(
    x: torch.Tensor, y: torch.Tensor, op: CartesianOperator, held: torch.Tensor
) -> torch.Tensor:
    """Normalised prediction error on held-out k-space, ``||M_ho (A x - y)||^2 / ||M_ho y||^2``, ``(B,)``
    (arguments as :func:`heldout_parts`)."""
    return fold_ratios(*heldout_parts(x, y, op, held)).float()


def fold_parts(
    run: Run, y: torch.Tensor, op: CartesianOperator, params: dict, sets: list
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`heldout_parts` of ``run`` with ``params`` reconstructed without each held-out set in
    turn: error and held-out energies, each ``(folds, B)``."""
    parts = []
    for held in sets:
        fit = fit_operator(op, held)
        x = run(y * fit.mask.to(y.device), fit, dict(params))
        parts.append(heldout_parts(x, y, op, held))
    return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])


def fold_ratios(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Each fold's held-out error ``num / den`` from :func:`heldout_parts` or :func:`fold_parts`
    (0 where nothing was held out)."""
    return num / den.clamp_min(1e-30)


def pooled_error(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Per item, the folds' held-out error pooled by energy, ``sum_f num / sum_f den`` ``(B,)``, from
    :func:`fold_parts` ``(folds, B)``."""
    return num.sum(0) / den.sum(0).clamp_min(1e-30)


def slice_scores(num: torch.Tensor, den: torch.Tensor, pool: bool) -> torch.Tensor:
    """Per item, the folds' held-out errors from :func:`fold_parts` ``(folds, B)`` as one score ``(B,)``:
    the mean of the per-fold ratios, or with ``pool`` the energy-pooled ratio (see :func:`split_score`)."""
    if pool:
        return pooled_error(num, den)
    return fold_ratios(num, den).mean(0)


def split_score(num: torch.Tensor, den: torch.Tensor, pool: bool) -> float:
    """One number from :func:`fold_parts`, averaged over the batch items.

    ``pool=False``: the mean over folds and items of the per-fold ratios ``num / den``. Each fold is
    normalised by its own held-out energy, so a fold of high-frequency lines, where every method
    scores near 1, weighs as much as one next to the centre. ``pool=True``: per item, the
    energy-pooled ratio ``sum_f num / sum_f den``, which with folds covering every measured line is
    the held-out error of a leave-fold-out prediction of *all* outer measurements, weighted as the
    NMSE on unmeasured k-space weights them (K-fold CV error pooled over folds, as in Ward 2009).
    """
    return float(slice_scores(num, den, pool).mean())


def check_tunable(declared: dict, request: dict | None, method: str = "method") -> dict:
    """Validate a tuning request against a method's declared ``tunable`` ranges.

    Args:
        declared: ``{name: (lo, hi, scale)}`` from the method.
        request: ``None`` (tune everything declared) or ``{name: None | (lo, hi)}``; a range replaces
            the declared one and keeps its scale.
        method: name used in error messages.

    Returns:
        ``{name: (lo, hi, scale)}`` to search (``{name: (values, "choice")}`` for a choice, which
        takes no range).

    Raises:
        InputError: nothing declared, an unknown name, or an empty / invalid range.
    """
    if not declared:
        raise InputError(f"{method}: has no tunable parameters")
    wanted = dict.fromkeys(declared) if request is None else dict(request)
    unknown = sorted(set(wanted) - set(declared))
    if unknown:
        raise InputError(f"{method}: cannot tune {', '.join(unknown)} (tunable: {', '.join(declared)})")
    out = {}
    for name, rng in wanted.items():
        if declared[name][-1] == "choice":
            values = tuple(declared[name][0])
            if rng is not None or not values:
                raise InputError(
                    f"{method}: '{name}' is a choice among {', '.join(map(str, values))}; "
                    "tune it without a range"
                )
            out[name] = (values, "choice")
            continue
        scale = declared[name][2]
        lo, hi = declared[name][:2] if rng is None else rng
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (scale == "log" and lo <= 0):
            raise InputError(f"{method}: empty or invalid range for '{name}': {lo}..{hi} ({scale} scale)")
        if scale not in SCALES:
            raise InputError(
                f"{method}: unknown scale '{scale}' for '{name}' (choose from {', '.join(SCALES)})"
            )
        out[name] = (lo, hi, scale)
    return out


def candidates(spec: tuple, points: int) -> list:
    """The values searched for one checked tunable ``spec``: a choice's values, else :func:`grid`."""
    return list(spec[0]) if spec[-1] == "choice" else grid(*spec, points)


def in_range(spec: tuple, value) -> bool:
    """Whether ``value`` lies in the checked tunable ``spec`` (a choice's values, or ``[lo, hi]``)."""
    if spec[-1] == "choice":
        return value in spec[0]
    return isinstance(value, (int, float)) and spec[0] <= value <= spec[1]


def grid(lo: float, hi: float, scale: str, points: int) -> list:
    """``points`` candidates over ``[lo, hi]``: geometric (log), even (linear) or log-spaced integers."""
    if scale == "linear":
        return [float(f"{v:.4g}") for v in np.linspace(lo, hi, points)]
    values = np.geomspace(lo, hi, points)
    if scale == "int":
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.3g}") for v in values]


def golden_section(f: Callable[[float], float], a: float, b: float, iters: int) -> float:
    """Golden-section minimisation of a unimodal ``f`` on ``[a, b]`` (Kiefer, Proc. AMS 4:502, 1953)."""
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    return c if fc <= fd else d


def tune(
    run: Run,
    y: torch.Tensor,
    op: CartesianOperator,
    tunable: dict,
    split: Split = Split(),
    base: dict | None = None,
    points: int = 7,
    refine: int = 0,
    max_error: float = MIN_SKILL_ERROR,
    progress: Callable[[dict, float], None] | None = None,
    memo: MutableMapping | None = None,
) -> TuneResult:
    """Choose parameters of ``run`` by held-out k-space cross-validation (coordinate-wise search).

    Each parameter in turn (the others at their current best) is searched over a ``points``-value
    grid (a choice: all its values) plus its current value, then, for continuous scales, refined
    by ``refine`` golden-section steps between the best grid point's neighbours (in log space for
    log scales). A candidate's score is its held-out error over the split's folds (mean of per-fold
    ratios, or energy-pooled with ``split.pool``: :func:`split_score`), averaged over the batch items.

    A candidate replaces the current value only if it beats both by more than one standard error over the
    (fold, item) cells: ``max_error`` (its own cells' standard error) and the current value's error (the
    standard error of their paired difference). Both are :func:`cell_standard_error`'s: the larger of the
    cells' and the fold-clustered standard error, as the items share each fold. An error of 1 is what
    predicting zero on the held-out samples scores, so a method at or near it has no skill there and its
    ranking of parameters is noise (on `val`, DDS at random 8x: every candidate scored 1.04-1.1, and the
    lowest of them lost 2.7 dB); ``max_error`` defaults to :data:`MIN_SKILL_ERROR` (0.95). The margins are
    the one-standard-error rule of cross-validation (Breiman et al., CART, 1984; Hastie, Tibshirani &
    Friedman, ESL 2nd ed., Sec. 7.10), with the start value in the place of the simplest model. Alone
    (``max_error=1``) they did not catch a consistent but meaningless edge: on `test` at equispaced 8x (3
    folds, one held-out line each) CS-L1's lambda 1e-4 scored 0.986 against the default's 0.999 in a tight
    spread and lost 3.6 dB; :data:`MIN_SKILL_ERROR` does.

    Args:
        run: ``run(y, op, params) -> x`` (see the module docstring).
        y: measured k-space ``(B, C, H, W)``; items share ``op``'s mask.
        op: the operator of ``y`` (never modified; each fold builds its own).
        tunable: ``{name: (lo, hi, scale) | (values, "choice")}``, already checked
            (:func:`check_tunable`), searched in this order.
        split: the held-out split.
        base: starting parameters (current values, and fixed values of untuned parameters).
        points: grid size per parameter (>= 2).
        refine: golden-section steps after the grid (continuous scales only).
        max_error: held-out error a candidate must beat to replace a current value.
        progress: called as ``progress(values, error)`` after each new candidate is scored (``values``:
            its tuned parameters).
        memo: scores of candidates already run for this same request (e.g. a :class:`TrialLog` of an
            interrupted search), read instead of running them again; new scores are added to it.

    Returns:
        :class:`TuneResult`.
    """
    if points < 2:
        raise InputError(f"tuning needs at least 2 grid points, got {points}")
    t0, sets = time.perf_counter(), holdout_sets(op.mask, tuple(y.shape[-2:]), split)
    cache: dict = {}  # candidate -> (score, its per-(fold, item) errors for the standard errors)
    memo = {} if memo is None else memo
    reused = 0

    def scored(params: dict) -> tuple[float, torch.Tensor]:
        nonlocal reused
        key = tuple(sorted(params.items()))
        if key in cache:
            return cache[key]
        if key in memo:
            cache[key], reused = memo[key], reused + 1
            return cache[key]
        cache[key] = memo[key] = candidate_score(run, y, op, params, sets, split.pool)
        if progress is not None:
            progress({k: params[k] for k in tunable if k in params}, cache[key][0])
        return cache[key]

    def score(params: dict) -> float:
        return scored(params)[0]

    def beats(new: dict, old: dict) -> bool:
        (mine, cells), (theirs, others) = scored(new), scored(old)
        return replaces(mine, cells, theirs, others, max_error, len(sets))

    current = dict(base or {})
    start = {k: current[k] for k in tunable if current.get(k) is not None}
    base_error = score(current) if len(start) == len(tunable) else float("nan")
    for name, spec in tunable.items():
        values, scale = candidates(spec, points), spec[-1]
        if name in start and in_range(spec, start[name]) and start[name] not in values:
            values = [start[name], *values]
        errs = [score({**current, name: v}) for v in values]
        best = values[int(np.argmin(errs))]
        if refine > 0 and scale in ("log", "linear"):
            best = _refine(score, current, name, sorted(values), best, scale, refine)
        trial = {**current, name: best}
        if current.get(name) is None or beats(trial, current):
            current[name] = best
    table = [{"params": dict(k), "error": e} for k, (e, _) in cache.items()]
    error = score(current)
    return TuneResult(
        current,
        {k: current[k] for k in tunable},
        error,
        base_error,
        (len(cache) - reused) * len(sets),
        time.perf_counter() - t0,
        table,
        len(sets),
        reused * len(sets),
        start,
    )


def candidate_score(
    run: Run, y: torch.Tensor, op: CartesianOperator, params: dict, sets: list, pool: bool
) -> tuple[float, torch.Tensor]:
    """One candidate's held-out score over the held-out ``sets`` (:func:`split_score`) and its
    per-(fold, item) errors, fold-major (:func:`fold_ratios`, flattened), for the standard errors."""
    num, den = fold_parts(run, y, op, params, sets)
    return split_score(num, den, pool), fold_ratios(num, den).flatten()


def replaces(
    score: float,
    cells: torch.Tensor,
    current: float,
    current_cells: torch.Tensor,
    max_error: float,
    folds: int = 1,
) -> bool:
    """:func:`tune`'s guards: whether a candidate (``score`` over its per-(fold, item) errors ``cells``,
    fold-major as :func:`fold_ratios` flattens them, ``folds`` folds) replaces the current value
    (``current``, ``current_cells``, paired cell by cell). It must beat ``max_error`` by more than its
    cells' standard error and ``current`` by more than the standard error of the paired differences
    (the one-standard-error rule, ESL Sec. 7.10), both as :func:`cell_standard_error` takes them."""
    return max_error - score > cell_standard_error(cells, folds) and current - score > cell_standard_error(
        cells - current_cells, folds
    )


def standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` (0 with fewer than 2)."""
    if values.numel() < 2:
        return 0.0
    return float(values.double().std() / math.sqrt(values.numel()))


def cell_standard_error(cells: torch.Tensor, folds: int = 1) -> float:
    """Standard error of the mean of per-(fold, item) held-out errors (or paired differences of them),
    ``cells`` fold-major over ``folds`` folds: the larger of the cells' own standard error and the
    fold-clustered one (the standard error of the folds' item means).

    The items of a batch (slices of one volume) share each fold's held-out lines or points, so their
    cells are not independent: a fold whose lines happen to favour a candidate does so on every slice,
    and the cells' standard error is too small (cluster-robust inference; Cameron & Miller, J. Human
    Resources 2015). The fold-clustered error counts each fold once. With few folds (2-3 on point
    masks) it rests on 1-2 degrees of freedom and can come out small by chance, so the larger of the
    two is used: never a looser guard than the cells' error alone."""
    flat = cells.flatten()
    own = standard_error(flat)
    if folds < 2 or flat.numel() % folds:
        return own
    return max(own, standard_error(flat.reshape(folds, -1).mean(1)))


def _refine(score, current: dict, name: str, values: list, best, scale: str, iters: int):
    """Golden-section search for ``name`` between the neighbours of ``best`` in the sorted grid."""
    i = values.index(best)
    a, b = values[max(i - 1, 0)], values[min(i + 1, len(values) - 1)]
    to, back = (math.log, math.exp) if scale == "log" else (float, float)
    found = back(
        golden_section(lambda u: score({**current, name: float(f"{back(u):.4g}")}), to(a), to(b), iters)
    )
    found = float(f"{found:.4g}")
    return found if score({**current, name: found}) <= score({**current, name: best}) else best
