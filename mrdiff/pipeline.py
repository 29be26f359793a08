"""The per-volume reconstruction pipeline shared by ``mrdiff recon`` and ``mrdiff bench``.

read slice -> mask (the file's own, or a retrospective one seeded from the file name) -> coil maps
(ESPIRiT, once per slice) -> method (baseline, supervised network or diffusion) -> magnitude,
centre-cropped to the recon size. Optionally, parameters are first chosen per volume by held-out
k-space cross-validation on a few central slices (:func:`tune_volume`), and every slice's held-out
error is recorded as a no-reference quality score (``reconstruct_volume(..., heldout=Split())``).
With ``--adapt``, a LoRA adapter of the diffusion prior is first fitted to the volume
(:func:`adapt_volume`, :mod:`mrdiff.adapt`) and reconstructs every slice in the prior's place.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import time
import warnings
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mrdiff.adapt import AdapterFit, AdaptSpec
from mrdiff.baselines import BASELINES, DEFAULT_LAMBDA, NOISE_LAMBDA, TUNABLE, noise_lambda
from mrdiff.coils import estimate_maps
from mrdiff.errors import InputError
from mrdiff.io import VolumeInfo, center_crop, read_slice
from mrdiff.masks import make_mask
from mrdiff.noise import make_generator, seed_for
from mrdiff.operators import CartesianOperator
from mrdiff.overrides import method_params
from mrdiff.priors.lora import AdaptedDenoiser, with_adapters
from mrdiff.tuning import (
    CENTRE,
    COVER,
    MIN_SKILL_ERROR,
    OUTER,
    Split,
    TuneResult,
    candidate_score,
    check_tunable,
    fit_operator,
    fold_parts,
    holdout_sets,
    replaces,
    slice_scores,
    tune,
)

#: CCDF's initialiser when the user names none (``--set init=...`` chooses another)
DEFAULT_INIT = "cs-l1"
#: prefix of the initialiser's own parameters in a diffusion method's params (:func:`split_init`)
INIT_PREFIX = "init_"
#: the classical method a diffusion method backs off to under ``--auto`` (:func:`check_fallback`)
FALLBACK = "cs-l1"
#: a whole-image prior is refused on inputs more than this factor larger or smaller than its training
#: size (a 32-px prior on 128^2 data did worse than zero-filling); within it, it runs with a warning
#: (brain128-cpu at 256^2 is a published comparison). A patch prior works at any size.
MAX_RESOLUTION_RATIO = 2.0


@dataclass(frozen=True)
class MaskSpec:
    """Retrospective undersampling used when a file has no ``mask`` of its own."""

    kind: str = "random"
    accel: float = 4.0
    center_fraction: float = 0.08
    seed: int | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method and everything it needs; ``params`` are method-specific keyword arguments."""

    name: str
    params: dict = field(default_factory=dict)
    denoiser: object | None = None
    nfe: int = 50
    samples: int = 1
    seed: int = 0
    device: str = "cpu"
    batch: int = 1


@dataclass(frozen=True)
class AutoSpec:
    """Held-out k-space cross-validation of a method's parameters, once per volume.

    ``tunable``: None (everything the method declares) or ``{name: None | (lo, hi)}``; ``slices``
    central slices are tuned together and the choice applies to every slice. ``samples``: posterior
    samples averaged per trial reconstruction (None: as many as the final reconstruction).
    ``fallback``: the classical method a diffusion method backs off to when the held-out samples say
    it predicts them worse (:func:`check_fallback`); None: never back off.
    """

    tunable: dict | None = None
    split: Split = Split()
    slices: int = 3
    points: int = 7
    refine: int = 0
    samples: int | None = None
    fallback: str | None = FALLBACK


@dataclass
class VolumeResult:
    """Magnitude outputs ``(S, h, w)`` float32, plus per-slice residual and timing."""

    reconstruction: np.ndarray
    zero_filled: np.ndarray
    std: np.ndarray | None
    residual: np.ndarray
    seconds_per_slice: float
    nfe: int
    mask: torch.Tensor
    heldout_error: np.ndarray | None = None
    samples: np.ndarray | None = None
    heldout_note: str | None = None


def _registry(module: str, name: str) -> dict:
    """``module.name`` as a dict, imported on first use (lazily: the supervised networks pull in
    ``fastmri.models``). An import error propagates: a broken ``mrdiff.consistency`` must fail loudly,
    not make every diffusion method vanish from the method list."""
    return dict(getattr(importlib.import_module(module), name))


def diffusion_methods() -> dict:
    """The registered measurement-consistency methods (``mrdiff.consistency.REGISTRY``)."""
    return _registry("mrdiff.consistency", "REGISTRY")


def supervised_methods() -> dict:
    """The registered supervised networks (U-Net, VarNet; ``mrdiff.supervised.SUPERVISED``)."""
    return _registry("mrdiff.supervised", "SUPERVISED")


def all_methods() -> list[str]:
    """Every method name ``mrdiff recon`` accepts."""
    return [*BASELINES, *supervised_methods(), *diffusion_methods()]


def check_method(name: str) -> None:
    """Raise InputError for an unknown method."""
    if name not in all_methods():
        raise InputError(f"unknown method '{name}' (choose from {', '.join(all_methods())})")


def method_tunable(name: str) -> dict:
    """What a method declares tunable, ``{name: (lo, hi, scale)}`` (empty if nothing)."""
    if name in BASELINES:
        return dict(TUNABLE.get(name, {}))
    return dict(getattr(diffusion_methods().get(name), "tunable", {}))


def method_defaults(name: str) -> dict:
    """A method's default parameter values (the starting point of a search)."""
    if name in BASELINES or name in supervised_methods():
        fn = BASELINES.get(name) or supervised_methods()[name]
        sig = inspect.signature(fn).parameters.values()
        out = {p.name: p.default for p in sig if p.default is not inspect.Parameter.empty}
        return {**out, "lamda": DEFAULT_LAMBDA[name]} if name in DEFAULT_LAMBDA else out
    cls = diffusion_methods().get(name)
    return dict(cls.defaults) if cls is not None else {}


def search_start(name: str, y: torch.Tensor, op: CartesianOperator) -> dict:
    """Where an ``--auto`` search starts: :func:`method_defaults`, with the values that are read off the
    scan itself in their place (CS-L1's lambda in proportion to the measured noise,
    :func:`mrdiff.baselines.noise_lambda`). The start is what :func:`mrdiff.tuning.tune` keeps unless a
    candidate beats it by more than its standard errors. Data with no measurable noise (a noiseless
    simulation) keep the default; the value is held inside the declared range."""
    start = method_defaults(name)
    if name in NOISE_LAMBDA:
        lam, (lo, hi) = noise_lambda(y, op, NOISE_LAMBDA[name]), TUNABLE[name]["lamda"][:2]
        if math.isfinite(lam) and lam > 0:
            start["lamda"] = min(max(lam, lo), hi)
    return start


def split_init(params: dict) -> tuple[dict, dict]:
    """A diffusion method's own parameters, and those of the baseline it starts from.

    ``init`` names the baseline and ``init_<key>`` sets that baseline's ``key``, e.g.
    ``{"init": "cs-l1", "init_lamda": 0.001, "sigma_t0": 0.05}`` -> ``({"sigma_t0": 0.05},
    {"lamda": 0.001})``. Flat keys keep ``--set`` and the provenance record one level deep.
    """
    own = {k: v for k, v in params.items() if k != "init" and not k.startswith(INIT_PREFIX)}
    init = {k[len(INIT_PREFIX) :]: v for k, v in params.items() if k.startswith(INIT_PREFIX)}
    return own, init


def init_method(name: str, params: dict) -> str | None:
    """The baseline a diffusion method starts from: ``params["init"]``, else :data:`DEFAULT_INIT` for
    a method that needs one (CCDF), else None."""
    if name not in diffusion_methods():
        return None
    init = params.get("init")
    if init is None and getattr(diffusion_methods()[name], "needs_init", False):
        return DEFAULT_INIT
    return init


def check_init(name: str, params: dict) -> None:
    """InputError (one line, before any compute) for an ``init`` the method cannot use: on a method
    that does not start from a baseline, or naming something other than a baseline/supervised method."""
    init, init_params = params.get("init"), split_init(params)[1]
    if init is None and not init_params:
        return
    if not getattr(diffusion_methods().get(name), "needs_init", False):
        takers = [n for n, c in diffusion_methods().items() if getattr(c, "needs_init", False)]
        raise InputError(f"method '{name}' takes no init (only {', '.join(takers)} start from a baseline)")
    choices = {**BASELINES, **supervised_methods()}
    init = init_method(name, params)
    if init not in choices:
        raise InputError(
            f"init '{init}' is not a baseline or supervised method (choose from {', '.join(choices)})"
        )
    try:
        method_params(init, choices[init], init_params)
    except InputError as err:
        raise InputError(f"{err} (set through {INIT_PREFIX}<key>)") from None


def check_prior_fits(denoiser: object | None, info: VolumeInfo) -> None:
    """Check a diffusion prior's training resolution and family against an input's ``(H, W)``.

    A patch prior (``model.family == "patch"``) fits any size. A whole-image prior trained at ``r``
    runs with a :class:`UserWarning` on another size within :data:`MAX_RESOLUTION_RATIO`, and is
    refused beyond it (InputError). Denoisers without a training config (test doubles) pass.
    """
    config = getattr(denoiser, "config", None) or {}
    if "model" not in config or config["model"].get("family", "image") == "patch":
        return
    r, (H, W) = int(config["data"]["resolution"]), info.shape[2:]
    if (H, W) == (r, r):
        return
    what = f"{info.path}: {H}x{W} input, but the prior is a whole-image prior trained at {r}x{r}"
    if max(H, W) / r > MAX_RESOLUTION_RATIO or r / min(H, W) > MAX_RESOLUTION_RATIO:
        raise InputError(
            f"{what} (more than {MAX_RESOLUTION_RATIO:g}x off; use a patch prior, e.g. the default)"
        )
    warnings.warn(f"{what}; results may be worse than at its own size", UserWarning, stacklevel=2)


def central_slices(pool: list[int], count: int) -> list[int]:
    """``count`` consecutive entries around the middle of ``pool`` (all if fewer)."""
    count = max(1, min(count, len(pool)))
    start = (len(pool) - count) // 2
    return list(pool[start : start + count])


def tuning_slices(info: VolumeInfo, auto: AutoSpec, slices: list[int] | None = None) -> list[int]:
    """The slices :func:`tune_volume` tunes on: ``auto.slices`` central ones of ``slices`` (default all)."""
    return central_slices(list(range(info.shape[0])) if slices is None else list(slices), auto.slices)


def check_auto(info: VolumeInfo, spec: MethodSpec, mask_spec: MaskSpec, auto: AutoSpec) -> dict:
    """Validate a tuning request for one volume before anything runs; returns the ranges to search.

    Raises:
        InputError: nothing tunable, unknown parameter, empty range, or nothing to hold out.
    """
    tunable = check_tunable(method_tunable(spec.name), auto.tunable, spec.name)
    holdout_sets(volume_mask(info, mask_spec), tuple(info.shape[2:]), auto.split)
    if auto.fallback is not None and not (auto.fallback in BASELINES and method_tunable(auto.fallback)):
        known = ", ".join(sorted(TUNABLE))
        raise InputError(f"fallback must be a classical method with tunables ({known}): '{auto.fallback}'")
    return tunable


def _runner(spec: MethodSpec, info: VolumeInfo, idx: list[int], inits: dict | None = None):
    """``run(y, op, params) -> x`` for the tuner: fresh per-slice generators on every call.

    ``inits``: when the initialiser is being chosen, ``{candidate: its tuned parameters}``; each
    candidate then runs with its own (:func:`with_init_params`)."""

    starts: dict = {}  # initialiser outputs per (fold, initialiser, its parameters): computed once

    def run(y, op, params):
        gens = [make_generator(seed_for(spec.seed, info.path.name, i), spec.device) for i in idx]
        merged = with_init_params(spec.name, {**spec.params, **params}, inits)
        return _run_method(replace(spec, params=merged), y, op, gens, starts=starts)["mean"]

    return run


def with_init_params(name: str, params: dict, inits: dict | None) -> dict:
    """``params`` with the ``init_*`` keys replaced by ``inits[chosen init]`` (prefixed), when the
    initialiser is being chosen (``inits`` not None): parameters set for one candidate must not reach
    another that does not take them."""
    if inits is None:
        return params
    own = {k: v for k, v in params.items() if not k.startswith(INIT_PREFIX)}
    chosen = inits.get(init_method(name, params), {})
    return {**own, **{INIT_PREFIX + k: v for k, v in chosen.items()}}


#: golden-section steps added to an initialiser's own search (at least): it is a classical method, a
#: small fraction of the diffusion search's cost, and a 5-point grid over CS-L1's three decades of
#: lambda missed the best value by half a decade (45 dB test, Poisson 4x: 0.0032 against 0.001)
INIT_REFINE = 3


def tune_inits(
    spec: MethodSpec,
    info: VolumeInfo,
    idx: list[int],
    y,
    op,
    values,
    auto: AutoSpec,
    progress=None,
    memo: Callable[[str], MutableMapping] | None = None,
) -> tuple[dict, dict]:
    """Tune every candidate initialiser that declares tunables on its own held-out error, so that
    the choice between initialisers compares each at its best (e.g. CS-L1 at its cross-validated
    lambda against the U-Net). Returns ``{candidate: chosen}`` and ``{candidate: its TuneResult}``
    for the candidates searched. ``memo(stage)``: :func:`mrdiff.tuning.tune`'s memo for the stage
    ``"init-<candidate>"``."""
    inits, runs = {}, {}
    for name in values:
        declared = method_tunable(name)
        if not declared:
            inits[name] = {}
            continue
        init_spec = MethodSpec(name, {}, device=spec.device, seed=spec.seed)
        labelled = None if progress is None else (lambda p, e, name=name: progress({"init": name, **p}, e))
        res = tune(
            _runner(init_spec, info, idx),
            y,
            op,
            check_tunable(declared, None, name),
            auto.split,
            search_start(name, y, op),
            auto.points,
            max(auto.refine, INIT_REFINE),
            progress=labelled,
            memo=None if memo is None else memo(f"init-{name}"),
        )
        inits[name], runs[name] = res.chosen, res
    return inits, runs


def tuned_spec(spec: MethodSpec, res: TuneResult) -> MethodSpec:
    """What to reconstruct with after :func:`tune_volume`: ``spec`` with the chosen parameters, or,
    when the method backed off, its fallback with the fallback's own chosen parameters."""
    if res.fallback.get("used"):
        name, params = res.fallback["method"], dict(res.fallback["params"])
        return MethodSpec(name, params, seed=spec.seed, device=spec.device, batch=spec.batch)
    return replace(spec, params=res.params)


def fallback_split(split: Split) -> Split:
    """The split :func:`check_fallback` compares on: every measured line/point outside the centre held
    out once (:data:`~mrdiff.tuning.COVER`), scored by held-out energy (``pool``), seeded as ``split``."""
    return replace(split, folds=COVER, pool=True, region=OUTER)


def check_fallback(
    info: VolumeInfo,
    spec: MethodSpec,
    mask_spec: MaskSpec,
    auto: AutoSpec,
    params: dict,
    maps_cache: dict | None = None,
    slices: list[int] | None = None,
    progress: Callable[[dict, float], None] | None = None,
    memo: Callable[[str], MutableMapping] | None = None,
) -> dict:
    """Back a tuned diffusion method off to its classical fallback when the data side with the latter.

    The fallback (``auto.fallback``, CS-L1) is tuned as ``--auto`` tunes it alone (:func:`tune_volume`
    with the same search settings), so backing off gives what ``--method cs-l1 --auto`` gives. Then
    both, the method at its tuned ``params`` and its final K (``spec.samples``, whatever the
    trials averaged: a one-sample trial predicts worse than the K-sample mean that is written, which
    on the phantom tipped Poisson cells to CS-L1), predict every held-out line/point once
    (:func:`fallback_split`, energy-pooled: what predicts the unmeasured k-space best by the measure
    NMSE weights). The method backs off if the fallback replaces it under :func:`mrdiff.tuning.tune`'s
    own guards (:func:`mrdiff.tuning.replaces`): it shows skill (below
    :data:`~mrdiff.tuning.MIN_SKILL_ERROR`) and beats the method by more than one standard error of
    their paired difference. A prior that does not fit the scan is then set aside instead of filling
    the unmeasured k-space with what it knows (the issue's "backing off the prior when the data
    disagree with it"); where neither shows skill, the method stays (the held-out samples cannot tell
    them apart).

    Chosen on `val` (``benchmarks/results/self-tuning/fallback/``): on the held-out scores of 19
    classical and diffusion rows at 45 dB random and Poisson 4x, the energy-pooled comparison backed
    off exactly the diffusion rows that lost to CS-L1 by 0.16-8.9 dB and kept every row that beat it,
    with two misses the other way (rows 0.3 and 0.8 dB below CS-L1 kept); the mean of per-fold
    errors also backed off two CCDF rows that beat CS-L1 by 0.4 dB.

    Returns:
        ``{"method", "params" (its chosen), "error", "method_error" (both on the comparison split),
        "folds", "used", "trials", "seconds"}``, or ``{"method", "used": False, "skipped": why}`` when
        the mask has nothing outside the centre to hold out.
    """
    t0, name = time.perf_counter(), auto.fallback
    mask = volume_mask(info, mask_spec)
    idx = tuning_slices(info, auto, slices)
    y, op = _batch(info, idx, mask, spec.device, maps_cache)
    split = fallback_split(auto.split)
    try:
        sets = holdout_sets(op.mask, tuple(y.shape[-2:]), split)
    except InputError as e:
        return {"method": name, "used": False, "skipped": str(e)}
    classical = MethodSpec(name, {}, device=spec.device, seed=spec.seed)
    labelled = None if progress is None else (lambda p, e: progress({"fallback": name, **p}, e))
    stages = None if memo is None else (lambda stage: memo(f"fallback-{name}-{stage}"))
    alone = replace(auto, tunable=None, samples=None, fallback=None)  # as `--method cs-l1 --auto`
    own = tune_volume(info, classical, mask_spec, alone, maps_cache, slices, labelled, stages)
    trials = own.trials

    def scored(who: str, method: MethodSpec, values: dict) -> tuple[float, torch.Tensor]:
        nonlocal trials
        store = {} if memo is None else memo(f"fallback-score-{who}")
        key = tuple(sorted(values.items()))
        if key not in store:
            store[key] = candidate_score(_runner(method, info, idx), y, op, values, sets, split.pool)
            trials += len(sets)
        return store[key]

    theirs, their_cells = scored(name, classical, own.params)
    # the method at its final K: the output the choice is between (not a cheaper trial's K)
    mine, my_cells = scored(f"{spec.name}-k{spec.samples}", spec, params)
    return {
        "method": name,
        "params": own.chosen,
        "error": round(theirs, 6),
        "method_error": round(mine, 6),
        "folds": len(sets),
        "used": replaces(theirs, their_cells, mine, my_cells, MIN_SKILL_ERROR, len(sets)),
        "trials": trials,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def tune_volume(
    info: VolumeInfo,
    spec: MethodSpec,
    mask_spec: MaskSpec = MaskSpec(),
    auto: AutoSpec = AutoSpec(),
    maps_cache: dict | None = None,
    slices: list[int] | None = None,
    progress: Callable[[dict, float], None] | None = None,
    memo: Callable[[str], MutableMapping] | None = None,
) -> TuneResult:
    """Choose ``spec``'s parameters for one volume by held-out k-space cross-validation
    (:func:`mrdiff.tuning.tune`) on ``auto.slices`` central slices (of ``slices``, default all)
    reconstructed together. The result's ``params`` then serve every slice of the volume.

    When ``init`` (CCDF's initialiser) is tuned, each candidate's own tunables are chosen first on
    its own held-out error (:func:`tune_inits`), then the method is searched with every candidate at
    its best; ``chosen`` then also holds the chosen initialiser's ``init_*`` values, and
    ``base_error`` is that of the starting parameters with the tuned initialiser. ``trials``,
    ``seconds`` and ``table`` cover both stages. ``progress(params, error)`` follows every candidate
    (an initialiser's own search with ``"init"`` in ``params``). ``memo(stage)``: a store of scored
    candidates per stage (``"method"``, ``"init-<candidate>"``; e.g. a :class:`mrdiff.tuning.TrialLog`),
    so that an interrupted search resumes (:func:`mrdiff.tuning.tune`).

    Then a diffusion method is compared with ``auto.fallback`` (:func:`check_fallback`, its stages
    ``"fallback-..."``); the result's ``fallback`` says whether it backed off, and :func:`tuned_spec`
    gives what to reconstruct with."""
    tunable = check_auto(info, spec, mask_spec, auto)
    mask = volume_mask(info, mask_spec)
    idx = tuning_slices(info, auto, slices)
    y, op = _batch(info, idx, mask, spec.device, maps_cache)
    base = {**search_start(spec.name, y, op), **spec.params}
    inits, first = None, {}
    if "init" in tunable:
        inits, first = tune_inits(spec, info, idx, y, op, tunable["init"][0], auto, progress, memo)
    run = _runner(spec if auto.samples is None else replace(spec, samples=auto.samples), info, idx, inits)
    stage = None if memo is None else memo("method")
    res = tune(run, y, op, tunable, auto.split, base, auto.points, auto.refine, progress=progress, memo=stage)
    if inits is not None:
        params = with_init_params(spec.name, res.params, inits)
        chosen = {**res.chosen, **{k: v for k, v in params.items() if k.startswith(INIT_PREFIX)}}
        table = [{**row, "init": name} for name, r in first.items() for row in r.table] + res.table
        runs = [*first.values(), res]
        res = replace(
            res,
            params=params,
            chosen=chosen,
            trials=sum(r.trials for r in runs),
            seconds=sum(r.seconds for r in runs),
            reused=sum(r.reused for r in runs),
            table=table,
        )
    if auto.fallback is None or spec.name not in diffusion_methods():
        return res
    fallback = check_fallback(info, spec, mask_spec, auto, res.params, maps_cache, slices, progress, memo)
    return replace(res, fallback=fallback)


def check_adapt(info: VolumeInfo, spec: MethodSpec, mask_spec: MaskSpec, adapt: AdaptSpec) -> torch.Tensor:
    """Validate an adaptation request for one volume before anything runs; returns the held-out mask.

    Raises:
        InputError: not a diffusion method, a bad setting, or nothing to hold out.
    """
    if spec.name not in diffusion_methods():
        raise InputError(f"--adapt adapts a diffusion prior; '{spec.name}' is not a diffusion method")
    adapt.check()
    return holdout_sets(volume_mask(info, mask_spec), tuple(info.shape[2:]), replace(adapt.split, folds=1))[0]


def adapt_volume(
    info: VolumeInfo,
    spec: MethodSpec,
    mask_spec: MaskSpec = MaskSpec(),
    adapt: AdaptSpec | None = None,
    maps_cache: dict | None = None,
    slices: list[int] | None = None,
) -> tuple[AdaptedDenoiser, dict]:
    """Fit one LoRA adapter of ``spec.denoiser`` to a volume (DDIP, Chung & Ye, ECCV 2024; see
    :mod:`mrdiff.adapt`); returns the adapted denoiser (frozen) and a summary of the fit.

    ``adapt.slices`` central slices (of ``slices``, default all) are reconstructed together from the
    fit set only, by ``spec``'s method through the one reverse loop, with :class:`AdapterFit` as its
    callback; the adapter then serves every slice of the volume.
    """
    from mrdiff.reconstruct import prior_scale

    t0, adapt = time.perf_counter(), adapt or AdaptSpec()
    held = check_adapt(info, spec, mask_spec, adapt)
    mask = volume_mask(info, mask_spec)
    idx = central_slices(list(range(info.shape[0])) if slices is None else list(slices), adapt.slices)
    y, op = _batch(info, idx, mask, spec.device, maps_cache)
    fit = fit_operator(op, held)
    y_fit = y * fit.mask.to(y.device)
    scale = prior_scale(y_fit, fit, spec.denoiser)
    denoiser = with_adapters(spec.denoiser, adapt.rank, adapt.sigma).to(spec.device)
    fitter = AdapterFit(denoiser, y / scale[:, None, None, None], op, held, adapt, spec.seed)
    gens = [make_generator(seed_for(spec.seed, info.path.name, i), spec.device) for i in idx]
    _run_method(replace(spec, denoiser=denoiser, samples=1), y_fit, fit, gens, callback=fitter, scale=scale)
    denoiser.requires_grad_(False)
    summary = {**adapt.settings(), "slices": idx, **fitter.summary()}
    return denoiser, {**summary, "seconds": round(time.perf_counter() - t0, 2)}


def volume_mask(info: VolumeInfo, spec: MaskSpec) -> torch.Tensor:
    """The file's acquired mask, else a retrospective mask seeded from the file name."""
    if info.mask is not None:
        return info.mask
    _, _, H, W = info.shape
    return make_mask(spec.kind, (H, W), spec.accel, spec.center_fraction, info.path.name, spec.seed)


def maps_key(info: VolumeInfo, index: int, mask: torch.Tensor) -> tuple[str, int, str]:
    """Cache key of a slice's coil maps: they depend only on (file, slice, mask), not on the method."""
    digest = hashlib.sha1(mask.detach().cpu().numpy().tobytes() + repr(tuple(mask.shape)).encode())
    return str(info.path.resolve()), index, digest.hexdigest()


def _slice_inputs(info: VolumeInfo, index: int, mask: torch.Tensor, maps_cache: dict | None = None):
    """Masked k-space ``(C, H, W)``, maps ``(C, H, W)`` or None, target or None.

    With ``maps_cache`` (a dict), ESPIRiT maps are looked up by :func:`maps_key` and stored there, so
    several methods run on the same slice and mask share one estimate (as ``mrdiff bench`` does). A
    read-only mapping (``types.MappingProxyType``) is looked up but never filled, so memory stays bounded
    by what it already holds (``mrdiff recon`` reuses the tuning slices' maps that way).
    """
    data = read_slice(info, index)
    y = data.kspace * mask.to(torch.bool)
    if not bool(y.abs().sum() > 0):
        raise InputError(f"{info.path}: slice {index} has no measured k-space under the mask")
    if data.kspace.shape[0] == 1:
        return y, None, data.target
    key = maps_key(info, index, mask)
    maps = None if maps_cache is None else maps_cache.get(key)
    if maps is None:
        maps = estimate_maps(y, mask)
        if isinstance(maps_cache, dict):
            maps_cache[key] = maps
    return y, maps, data.target


def _batch(info: VolumeInfo, idx: list[int], mask, device: str, maps_cache: dict | None):
    """Stacked masked k-space ``(B, C, H, W)`` of slices ``idx`` and their operator."""
    parts = [_slice_inputs(info, i, mask, maps_cache) for i in idx]
    y = torch.stack([p[0] for p in parts]).to(device)
    maps = None if parts[0][1] is None else torch.stack([p[1] for p in parts]).to(device)
    return y, CartesianOperator(mask.to(device), maps)


def _run_method(spec: MethodSpec, y, op, generators, starts: dict | None = None, **loop) -> dict:
    """Run one method on a batch; returns complex ``mean`` (B,H,W), optional ``std``, ``nfe``.

    ``starts``: a dict in which a diffusion method's initialiser output is kept per (mask, initialiser,
    parameters), so that a search that runs the method many times on the same fit set computes each
    start once (the initialisers are deterministic). ``loop``: further keywords of
    :func:`mrdiff.reconstruct.reconstruct` (``callback``, ``scale``) for a diffusion method."""
    if spec.name in BASELINES:
        return {"mean": BASELINES[spec.name](y, op, **spec.params), "std": None, "nfe": 0}
    sup = supervised_methods()
    if spec.name in sup:
        return {"mean": sup[spec.name](y, op, **spec.params), "std": None, "nfe": 1}
    from mrdiff.reconstruct import reconstruct

    params, init_params = split_init(spec.params)
    init_name = init_method(spec.name, spec.params)
    init, key = None, None
    if init_name is not None:
        if starts is not None:
            key = (op.mask.cpu().numpy().tobytes(), init_name, tuple(sorted(init_params.items())))
        init = None if key is None else starts.get(key)
        if init is None:
            init = _run_method(MethodSpec(init_name, init_params), y, op, generators)["mean"]
        if key is not None:
            starts[key] = init
    res = reconstruct(
        y,
        op,
        spec.name,
        spec.denoiser,
        nfe=spec.nfe,
        samples=spec.samples,
        generators=generators,
        params=params,
        init=init,
        **loop,
    )
    return {"mean": res.mean, "std": res.std, "nfe": res.nfe, "samples": res.samples}


def reconstruct_volume(
    info: VolumeInfo,
    spec: MethodSpec,
    mask_spec: MaskSpec = MaskSpec(),
    slices: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
    maps_cache: dict | None = None,
    heldout: Split | None = None,
    keep_samples: bool = False,
) -> VolumeResult:
    """Reconstruct the given slices (default: all) of one volume.

    ``maps_cache``: optional dict shared between calls so coil maps are estimated once per
    (file, slice, mask); see :func:`maps_key`.

    ``heldout``: also reconstruct each slice without each held-out fold of this split in turn and
    record its held-out error per slice (``heldout_error``; NaN when the mask has nothing to hold out,
    and ``heldout_note`` says why),
    one fold's ``||M_ho (A x - y)||^2 / ||M_ho y||^2``, scored over the folds as ``--auto`` scores them
    (:func:`mrdiff.tuning.slice_scores`). It costs one more reconstruction per slice and fold and needs
    no ground truth.

    ``keep_samples``: also return the K posterior samples of diffusion methods, centre-cropped complex
    ``(S, K, h, w)`` (``samples``), e.g. to measure what averaging fewer of them would give.

    Slices are batched ``spec.batch`` at a time; each slice draws from its own generator seeded
    with ``(spec.seed, file name, slice)`` so results do not depend on the batching.
    """
    check_method(spec.name)
    check_init(spec.name, spec.params)
    if spec.name in diffusion_methods():
        check_prior_fits(spec.denoiser, info)
    mask = volume_mask(info, mask_spec)
    slices = list(range(info.shape[0])) if slices is None else slices
    sets, note = _heldout_sets(mask, info, heldout)
    outs, zfs, stds, res_all, ho_all, kept, nfe, t0 = [], [], [], [], [], [], 0, time.perf_counter()
    for start in range(0, len(slices), max(1, spec.batch)):
        idx = slices[start : start + max(1, spec.batch)]
        part = _batch_result(
            spec,
            info,
            idx,
            mask,
            maps_cache,
            (sets, heldout.pool) if heldout is not None else None,
            keep_samples,
        )
        nfe = part["nfe"]
        outs.append(part["mean"])
        zfs.append(part["zf"])
        if part["std"] is not None:
            stds.append(part["std"])
        res_all.append(part["residual"])
        if part["samples"] is not None:
            kept.append(part["samples"])
        if heldout is not None:
            ho_all.append(part["heldout"])
        if progress:
            progress(len(idx))
    seconds = (time.perf_counter() - t0) / max(1, len(slices))
    return VolumeResult(
        torch.cat(outs).numpy(),
        torch.cat(zfs).numpy(),
        torch.cat(stds).numpy() if stds else None,
        torch.cat(res_all).numpy(),
        seconds,
        nfe,
        mask,
        np.concatenate(ho_all) if heldout is not None else None,
        torch.cat(kept).numpy() if kept else None,
        note,
    )


def _batch_result(
    spec: MethodSpec,
    info: VolumeInfo,
    idx: list[int],
    mask,
    maps_cache: dict | None,
    heldout: tuple[list, bool] | None,
    keep_samples: bool = False,
) -> dict:
    """Reconstruct slices ``idx`` together; only the recon-size outputs leave this function, so the
    batch's k-space, maps, operator and full-grid images are freed before the next batch is read (in one
    loop body they stayed alive while the next batch was built: two batches in memory at once).

    Returns:
        ``mean``, ``zf``, ``std`` (or None) float32 ``(B, h, w)``, ``residual`` ``(B,)``, ``heldout``
        ``(B,)`` (None without ``heldout``, the held-out sets and whether to pool them), ``nfe`` and,
        with ``keep_samples``, the complex samples ``(B, K, h, w)`` (else None).
    """
    y, op = _batch(info, idx, mask, spec.device, maps_cache)
    gens = [make_generator(seed_for(spec.seed, info.path.name, i), spec.device) for i in idx]
    out = _run_method(spec, y, op, gens)
    return {
        "mean": _cropped(out["mean"].abs(), info),
        "zf": _cropped(BASELINES["zf"](y, op).abs(), info),
        "std": None if out["std"] is None else _cropped(out["std"], info),
        "residual": op.residual(out["mean"].to(y.dtype), y).float().cpu(),
        "heldout": None if heldout is None else _heldout_scores(spec, info, idx, y, op, *heldout),
        "nfe": out["nfe"],
        "samples": _cropped_samples(out, info) if keep_samples else None,
    }


def _cropped_samples(out: dict, info: VolumeInfo) -> torch.Tensor | None:
    """A copy of the recon-size centre of the K complex samples ``(B, K, h, w)`` (None for a method
    without samples)."""
    samples = out.get("samples")
    return None if samples is None else center_crop(samples, info.recon_size).cpu().clone()


def _cropped(x: torch.Tensor, info: VolumeInfo) -> torch.Tensor:
    """A copy of the recon-size centre of ``x`` ``(B, H, W)`` as float32 on the CPU (a copy, not a view:
    a view would keep each batch's full ``H x W`` outputs alive until the volume is done)."""
    return center_crop(x, info.recon_size).float().cpu().clone()


def _heldout_sets(mask, info: VolumeInfo, split: Split | None) -> tuple[list, str | None]:
    """The held-out sets of ``split`` and why there are none: ``([], reason)`` when the mask has nothing
    outside the centre to hold out, ``([], None)`` without a split.

    Raises:
        InputError: ``split`` asks for :data:`~mrdiff.tuning.CENTRE` lines the mask cannot give (a 2-D
            mask, a centre of fewer than 3 lines): a region the user chose is an error, not a silent NaN.
    """
    if split is None:
        return [], None
    try:
        return holdout_sets(mask, tuple(info.shape[2:]), split), None
    except InputError as err:
        if split.region == CENTRE:
            raise
        return [], str(err)


def _heldout_scores(
    spec: MethodSpec, info: VolumeInfo, idx: list[int], y, op, sets: list, pool: bool
) -> np.ndarray:
    """Per-slice held-out error of ``spec`` over ``sets`` (NaN without a held-out set), float ``(B,)``."""
    if not sets:
        return np.full(len(idx), np.nan, np.float32)
    return slice_scores(*fold_parts(_runner(spec, info, idx), y, op, {}, sets), pool).float().cpu().numpy()
