"""Held-out k-space cross-validation (mrdiff.tuning): the split, and a closed-form tuning problem."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mrdiff.errors import InputError
from mrdiff.masks import make_mask
from mrdiff.noise import complex_randn, make_generator
from mrdiff.operators import CartesianOperator, conjugate_gradient
from mrdiff.tuning import (
    AUTO,
    CENTRE,
    CENTRE_FOLDS,
    COVER,
    MIN_SKILL_ERROR,
    POINT_FOLDS,
    Split,
    TrialLog,
    cell_standard_error,
    centre_region,
    check_tunable,
    fit_operator,
    fold_parts,
    fold_ratios,
    golden_section,
    grid,
    heldout_error,
    holdout_sets,
    replaces,
    split_score,
    tune,
)
from tests.conftest import coil_maps

SHAPE = (32, 32)


@pytest.mark.parametrize("kind", ["random", "poisson"])
def test_split_deterministic_disjoint_and_outside_centre(kind):
    mask = make_mask(kind, SHAPE, 3, 0.125, "file.h5")
    split = Split(fraction=0.15, folds=3, seed=4)
    sets = holdout_sets(mask, SHAPE, split)
    again = holdout_sets(mask, SHAPE, split)
    assert len(sets) == 3 and all(torch.equal(a, b) for a, b in zip(sets, again))
    centre = centre_region(mask, SHAPE)
    assert centre.any()
    m2 = torch.broadcast_to(mask, SHAPE)
    total = torch.zeros(SHAPE, dtype=torch.int64)
    for held in sets:
        assert held.shape == mask.shape and held.dtype == torch.bool and held.any()
        h2 = torch.broadcast_to(held, SHAPE)
        assert not (h2 & ~m2).any(), "held-out samples must be measured samples"
        assert not (h2 & centre).any(), "the centre is never held out"
        total += h2.long()
    assert int(total.max()) == 1, "folds are disjoint"
    other = holdout_sets(mask, SHAPE, Split(fraction=0.15, folds=3, seed=5))
    assert not all(torch.equal(a, b) for a, b in zip(sets, other))


@pytest.mark.parametrize("kind", ["random", "poisson"])
def test_cover_folds_hold_out_every_outer_sample_once(kind):
    mask = make_mask(kind, SHAPE, 3, 0.125, "file.h5")
    outer = torch.broadcast_to(mask, SHAPE) & ~centre_region(mask, SHAPE)
    sets = holdout_sets(mask, SHAPE, Split(fraction=0.15, folds=COVER, seed=2))
    total = sum(torch.broadcast_to(h, SHAPE).long() for h in sets)
    assert torch.equal(total, outer.long()), "each measured outer line/point held out exactly once"
    units = outer.any(0).sum() if kind == "random" else outer.sum()
    take = round(0.15 * int(units))
    assert len(sets) == int(units) // take
    first = holdout_sets(mask, SHAPE, Split(fraction=0.15, folds=1, seed=2))[0]
    assert first.sum() == take and (first & ~sets[0]).sum() <= 1  # same permutation, same start


def test_auto_folds_cover_line_masks_and_sample_point_masks():
    lines = make_mask("equispaced", SHAPE, 4, 0.125, "file.h5")
    auto, cover = (holdout_sets(lines, SHAPE, Split(0.15, f, 4)) for f in (AUTO, COVER))
    assert len(auto) == len(cover) > POINT_FOLDS and all(torch.equal(a, c) for a, c in zip(auto, cover))
    points = make_mask("poisson", SHAPE, 3, 0.125, "file.h5")
    auto, three = (holdout_sets(points, SHAPE, Split(0.15, f, 4)) for f in (AUTO, POINT_FOLDS))
    assert len(auto) == POINT_FOLDS and all(torch.equal(a, b) for a, b in zip(auto, three))
    with pytest.raises(InputError, match="folds"):
        holdout_sets(lines, SHAPE, Split(0.15, AUTO - 1, 4))


@pytest.mark.parametrize("kind", ["equispaced", "random"])
def test_centre_region_holds_out_single_centre_lines(kind):
    shape = (64, 64)
    mask = make_mask(kind, shape, 4, 0.25, "file.h5")  # a 16-line centre
    centre = centre_region(mask, shape)
    lines = int(centre.any(0).sum())
    assert lines > CENTRE_FOLDS
    split = Split(folds=AUTO, region=CENTRE)
    sets, again = (
        holdout_sets(mask, shape, split),
        holdout_sets(mask, shape, Split(0.3, AUTO, 7, False, CENTRE)),
    )
    assert len(sets) == CENTRE_FOLDS and all(torch.equal(a, b) for a, b in zip(sets, again))
    total = torch.zeros(shape, dtype=torch.int64)
    for held in sets:
        h2 = torch.broadcast_to(held, shape)
        assert held.shape == mask.shape and h2.any(0).sum() == 1, "one whole line per fold"
        assert not (h2 & ~centre).any(), "only centre lines"
        total += h2.long()
    assert int(total.max()) == 1
    cols = torch.nonzero(total.any(0)).flatten()
    first, last = torch.nonzero(centre.any(0)).flatten()[[0, -1]]
    assert cols[0] == first and cols[-1] == last, "spread over the whole centre"
    every = holdout_sets(mask, shape, Split(folds=COVER, region=CENTRE))
    assert torch.equal(sum(torch.broadcast_to(h, shape).long() for h in every), centre.long())
    assert len(holdout_sets(mask, shape, Split(folds=3, region=CENTRE))) == 3


def test_centre_region_refuses_point_masks_and_thin_centres():
    points = make_mask("poisson", SHAPE, 3, 0.125, "file.h5")
    with pytest.raises(InputError, match="line mask"):
        holdout_sets(points, SHAPE, Split(region=CENTRE))
    thin = torch.zeros(32, dtype=torch.bool)
    thin[[2, 8, 15, 16, 24]] = True
    with pytest.raises(InputError, match="nothing to hold out"):
        holdout_sets(thin, SHAPE, Split(region=CENTRE))
    with pytest.raises(InputError, match="region"):
        holdout_sets(points, SHAPE, Split(region="middle"))


def test_pooled_score_weights_folds_by_their_energy():
    num = torch.tensor([[0.5, 1.0], [9.0, 2.0]], dtype=torch.float64)  # (folds, items)
    den = torch.tensor([[1.0, 4.0], [10.0, 2.0]], dtype=torch.float64)
    assert split_score(num, den, pool=False) == pytest.approx((0.5 + 0.25 + 0.9 + 1.0) / 4)
    assert split_score(num, den, pool=True) == pytest.approx((9.5 / 11 + 3.0 / 6) / 2)


def test_line_masks_hold_out_whole_lines():
    mask1d = make_mask("random", SHAPE, 2, 0.125, "f.h5")
    mask2d = torch.broadcast_to(mask1d, SHAPE).clone()  # a line mask stored as (H, W), like real files
    for mask in (mask1d, mask2d, mask1d[None], mask1d[None, None, None]):
        for held in holdout_sets(mask, SHAPE, Split(0.2, 2, 0)):
            assert held.shape == mask.shape
            h2 = torch.broadcast_to(held.reshape(held.shape[-2:] if held.ndim > 1 else held.shape), SHAPE)
            assert bool((h2 == h2[:1]).all()), "every held-out column is held out entirely"


def test_nothing_to_hold_out():
    centre_only = torch.zeros(32, dtype=torch.bool)
    centre_only[12:20] = True
    with pytest.raises(InputError, match="nothing to hold out"):
        holdout_sets(centre_only, SHAPE, Split())
    with pytest.raises(InputError, match="nothing to hold out"):
        holdout_sets(torch.ones(SHAPE, dtype=torch.bool), SHAPE, Split())


def test_fit_operator_is_new_and_smaller():
    mask = make_mask("random", SHAPE, 2, 0.125, "f.h5")
    op = CartesianOperator(mask)
    held = holdout_sets(mask, SHAPE, Split(0.2, 1, 0))[0]
    fit = fit_operator(op, held)
    assert fit is not op and torch.equal(op.mask, mask)
    assert torch.equal(fit.mask, mask & ~held)


def test_check_tunable_rejects_bad_requests():
    declared = {"lamda": (1e-4, 1e-1, "log"), "iters": (1, 30, "int")}
    assert check_tunable(declared, None) == declared
    assert check_tunable(declared, {"lamda": (1e-3, 1e-2)}) == {"lamda": (1e-3, 1e-2, "log")}
    with pytest.raises(InputError, match="cannot tune foo"):
        check_tunable(declared, {"foo": None}, "cs-l1")
    for bad in [(1e-2, 1e-2), (1e-1, 1e-3), (0.0, 1.0), (float("nan"), 1.0)]:
        with pytest.raises(InputError, match="empty or invalid range"):
            check_tunable(declared, {"lamda": bad})
    with pytest.raises(InputError, match="no tunable"):
        check_tunable({}, None, "zf")


def test_grid_and_golden_section():
    assert grid(1e-4, 1e-1, "log", 4) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert grid(1, 30, "int", 7) == sorted(set(grid(1, 30, "int", 7)))
    assert grid(0.5, 1.0, "linear", 3) == [0.5, 0.75, 1.0]
    assert abs(golden_section(lambda u: (u - 0.3) ** 2, 0.0, 1.0, 30) - 0.3) < 1e-4


def _tikhonov_problem(signal_var: float, noise_var: float, B: int = 4):
    """Multi-coil k-space of an i.i.d. complex Gaussian image: Tikhonov is then the posterior mean, so
    the held-out prediction error is smallest at ``lamda = noise_var / signal_var`` (Wiener)."""
    g = make_generator(11)
    H, W = SHAPE
    maps = torch.from_numpy(coil_maps(4, H, W))[None].expand(B, -1, -1, -1).clone()
    mask = make_mask("poisson", SHAPE, 2, 0.125, "tikhonov.h5")
    op = CartesianOperator(mask, maps)
    x = math.sqrt(signal_var) * complex_randn((B, H, W), g)
    y = op.A(x) + math.sqrt(noise_var) * complex_randn((B, 4, H, W), g) * mask
    return y, op


def _tikhonov(y, op, params):
    """``argmin ||A x - y||^2 + lamda ||x||^2`` by CG (exact to the tolerance)."""
    return conjugate_gradient(op.normal, op.AH(y), iters=200, tol=1e-7, damping=params["lamda"])


def test_tune_finds_the_wiener_lambda():
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    calls = []

    def run(yf, fit, params):
        calls.append(params["lamda"])
        return _tikhonov(yf, fit, params)

    res = tune(run, y, op, {"lamda": (1e-3, 10.0, "log")}, Split(0.2, 3, 0), {"lamda": 1e-3}, 9, refine=6)
    assert abs(math.log10(res.chosen["lamda"] / 0.2)) < 0.15, res.table  # measured: 0.186
    assert res.error <= res.base_error and res.trials == len(calls) and res.params == res.chosen
    assert res.error < min(t["error"] for t in res.table if t["params"]["lamda"] in (1e-3, 10.0))


def test_an_interrupted_search_resumes_from_its_trial_log(tmp_path):
    """A search cut off part-way (here: the run fails on its 6th reconstruction) leaves its scored
    candidates in the log; the rerun reads them, runs only the rest, and ends where an uninterrupted
    search ends. Another context, or a line cut short, is not trusted."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    args = (y, op, {"lamda": (1e-3, 10.0, "log")}, Split(0.2, 3, 0), {"lamda": 1e-3}, 5)
    whole = tune(lambda yf, fit, p: _tikhonov(yf, fit, p), *args, refine=2)
    calls, path, context = [], tmp_path / "t" / "log.jsonl", {"volume": "a.h5", "slices": [1, 2]}

    def failing(yf, fit, params):
        calls.append(params["lamda"])
        if len(calls) == 6:
            raise KeyboardInterrupt
        return _tikhonov(yf, fit, params)

    with pytest.raises(KeyboardInterrupt):
        tune(failing, *args, refine=2, memo=TrialLog(path, context))
    assert len(path.read_text().splitlines()) == 1 + 5 // 3  # the header and one whole candidate (3 folds)
    with path.open("a") as f:
        f.write('{"params": [["lamda", 0.5')  # a line cut short by a kill
    calls.clear()
    resumed = tune(
        lambda yf, fit, p: calls.append(p) or _tikhonov(yf, fit, p),
        *args,
        refine=2,
        memo=TrialLog(path, context),
    )
    assert resumed.params == whole.params and resumed.error == pytest.approx(whole.error)
    assert resumed.reused == 3 and resumed.trials == whole.trials - 3 == len(calls)
    assert resumed.record()["reused_trials"] == 3 and "reused_trials" not in whole.record()
    calls.clear()
    again = tune(
        lambda yf, fit, p: calls.append(p) or _tikhonov(yf, fit, p),
        *args,
        refine=2,
        memo=TrialLog(path, context),
    )
    assert not calls and again.trials == 0 and again.params == whole.params  # all read back
    other = TrialLog(path, {**context, "slices": [2, 3]})
    assert len(other) == 0 and len(path.read_text().splitlines()) == 1  # another request: started afresh


def test_pooled_cover_tuning_scores_what_fold_parts_pools():
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    split = Split(0.2, COVER, 0, pool=True)
    res = tune(_tikhonov, y, op, {"lamda": (1e-2, 10.0, "log")}, split, {"lamda": 1e-2}, 5)
    assert abs(math.log10(res.chosen["lamda"] / 0.2)) < 0.35, res.table
    sets = holdout_sets(op.mask, SHAPE, split)
    num, den = fold_parts(_tikhonov, y, op, res.params, sets)
    assert res.error == pytest.approx(float((num.sum(0) / den.sum(0)).mean()), rel=1e-9)
    assert res.trials == len(res.table) * len(sets) and len(sets) > 3


def test_heldout_error_is_zero_for_the_truth_and_one_for_zero():
    g = make_generator(0)
    mask = make_mask("random", SHAPE, 2, 0.125, "f.h5")
    op = CartesianOperator(mask)
    x = complex_randn((2, *SHAPE), g)
    held = holdout_sets(mask, SHAPE, Split(0.2, 1, 0))[0]
    assert torch.allclose(heldout_error(x, op.A(x), op, held), torch.zeros(2), atol=1e-10)
    assert torch.allclose(heldout_error(torch.zeros_like(x), op.A(x), op, held), torch.ones(2))


def test_every_declared_range_runs_through_one_tune():
    """One ``tune`` drives every method (classical and diffusion) over its declared ranges."""
    from mrdiff.baselines import BASELINES, TUNABLE
    from mrdiff.consistency import REGISTRY
    from mrdiff.pipeline import split_init
    from mrdiff.reconstruct import reconstruct
    from tests.test_consistency import _gens, _problem

    prior, op, y, _ = _problem(coils=True)
    split = Split(0.3, 1, 0)
    for name, cls in REGISTRY.items():
        tunable = check_tunable(cls.tunable, None, name)

        def run(yf, fit, params, name=name):  # the initialiser (a pipeline choice) is A^H y here
            own = split_init(params)[0]
            return reconstruct(
                yf, fit, name, prior, nfe=4, generators=_gens(2), params=own, init=fit.AH(yf)
            ).mean

        res = tune(run, y, op, tunable, split, dict(cls.defaults), points=2)
        assert set(res.chosen) == set(cls.tunable) and math.isfinite(res.error), name
    for name, declared in TUNABLE.items():
        run = lambda yf, fit, params, name=name: BASELINES[name](yf, fit, **params)  # noqa: E731
        res = tune(run, y, op, check_tunable(declared, None, name), split, {}, points=2)
        assert set(res.chosen) == set(declared) and math.isnan(res.base_error), name


def _cells(run, y, op, params, sets):
    """The per-(fold, item) held-out errors ``tune`` takes its standard errors over."""
    return fold_ratios(*fold_parts(run, y, op, params, sets)).flatten()


def test_no_skill_keeps_the_start_value():
    """Candidates that predict held-out k-space worse than zero (error >= 1) do not replace the start."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)

    def run(yf, fit, params):  # a method with no skill: its output ignores the data's structure
        return params["gain"] * complex_randn((y.shape[0], *SHAPE), make_generator(1))

    res = tune(run, y, op, {"gain": (0.1, 10.0, "log")}, Split(0.2, 2, 0), {"gain": 5.0}, 5)
    assert res.chosen == {"gain": 5.0} and min(t["error"] for t in res.table) >= 1
    assert tune(
        run, y, op, {"gain": (0.1, 10.0, "log")}, Split(0.2, 2, 0), {"gain": 5.0}, 5, max_error=2.0
    ).chosen["gain"] == pytest.approx(0.1)


@pytest.mark.parametrize("weak, chosen", [(0.6, "a"), (1.0, "b")])
def test_a_gain_within_one_standard_error_keeps_the_start(weak, chosen):
    """One-standard-error rule: ``b`` (the Wiener estimate on items 0-1, scaled by ``weak`` on 2-3)
    against the start ``a`` (scaled by 0.7 everywhere). With ``weak`` 0.6, ``b`` scores lower on
    average but by less than the standard error of the paired differences, so ``a`` stays; with 1.0
    it is better on every item and wins."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    scale = {"a": torch.full((4,), 0.7), "b": torch.tensor([1.0, 1.0, weak, weak])}
    run = lambda yf, fit, p: _tikhonov(yf, fit, {"lamda": 0.2}) * scale[p["est"]][:, None, None]  # noqa: E731
    split = Split(0.2, 2, 0)
    sets = holdout_sets(op.mask, SHAPE, split)
    cells = {k: _cells(run, y, op, {"est": k}, sets) for k in "ab"}
    gap, diff = float(cells["a"].mean() - cells["b"].mean()), cells["b"] - cells["a"]
    assert gap > 0  # the lowest mean error alone would pick b in both cases
    assert (gap < float(diff.std()) / math.sqrt(diff.numel())) == (chosen == "a")
    res = tune(run, y, op, check_tunable({"est": (("a", "b"), "choice")}, None), split, {"est": "a"}, 2)
    assert res.chosen == {"est": chosen}, res.table


def test_cells_that_share_a_fold_count_once():
    """Three folds whose held-out lines give every item the same error (0.8, 0.9, 1.0 on 4 items): the
    12 cells' own standard error (0.025) would let their mean 0.9 pass a 0.95 skill bar, but they are 3
    observations, not 12, and the fold-clustered standard error (0.058) keeps the start."""
    cells = torch.tensor([0.8, 0.9, 1.0]).repeat_interleave(4)
    start = torch.ones(12)
    assert cell_standard_error(cells, 1) == pytest.approx(math.sqrt(0.08 / 11 / 12))
    assert cell_standard_error(cells, 3) == pytest.approx(0.1 / math.sqrt(3))
    assert replaces(0.9, cells, 1.0, start, 0.95, folds=1)
    assert not replaces(0.9, cells, 1.0, start, 0.95, folds=3)


def test_clustering_never_loosens_the_guard():
    """Items that disagree inside each fold (0.7 and 1.1 in every fold): the folds' means are equal, so
    the clustered standard error is 0, and the cells' own standard error is kept."""
    cells = torch.tensor([0.7, 1.1]).repeat(3)
    own = cell_standard_error(cells, 1)
    assert own > 0 and cell_standard_error(cells, 3) == pytest.approx(own)
    assert not replaces(0.9, cells, 1.0, torch.ones(6), 0.95, folds=3)


@pytest.mark.parametrize("max_error, chosen", [(1.0, "a"), (2.0, "b")])
def test_skill_must_exceed_one_standard_error(max_error, chosen):
    """``b`` (the Wiener estimate on item 0, -0.3 times it on item 1, zero on items 2-3) scores just
    below 1 on average, with a spread far larger than that margin: no skill shown, so the start ``a``
    (-0.5 times the Wiener estimate, worse everywhere) stays, although ``b`` beats it by many paired
    standard errors. Against a ``max_error`` of 2 its skill is clear, and it wins."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    scale = {"a": torch.full((4,), -0.5), "b": torch.tensor([1.0, -0.3, 0.0, 0.0])}
    run = lambda yf, fit, p: _tikhonov(yf, fit, {"lamda": 0.2}) * scale[p["est"]][:, None, None]  # noqa: E731
    split = Split(0.2, 2, 0)
    sets = holdout_sets(op.mask, SHAPE, split)
    cells = {k: _cells(run, y, op, {"est": k}, sets) for k in "ab"}
    se = lambda d: float(d.std()) / math.sqrt(d.numel())  # noqa: E731
    assert 1 - se(cells["b"]) < float(cells["b"].mean()) < 1  # below 1, within one standard error of it
    assert float((cells["a"] - cells["b"]).mean()) > se(cells["b"] - cells["a"])
    declared = check_tunable({"est": (("a", "b"), "choice")}, None)
    res = tune(run, y, op, declared, split, {"est": "a"}, 2, max_error=max_error)
    assert res.chosen == {"est": chosen}, res.table


@pytest.mark.parametrize("shrink, chosen", [(0.03, "a"), (0.2, "b")])
def test_an_edge_a_little_below_one_is_not_skill(shrink, chosen):
    """``b`` (the Wiener estimate shrunk by ``shrink``) beats the start ``a`` (-0.5 times it, error
    above 1) on every cell, with a tiny spread. Shrunk by 0.03 it predicts under 2 % of the held-out
    energy (error ~0.986, as CS-L1's lambda 1e-4 at equispaced 8x on `test`, -3.6 dB): that passes
    ``max_error=1`` but not the default :data:`MIN_SKILL_ERROR`, so ``a`` stays; shrunk by 0.2 ``b``
    shows skill and wins."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    scale = {"a": -0.5, "b": shrink}
    run = lambda yf, fit, p: _tikhonov(yf, fit, {"lamda": 0.2}) * scale[p["est"]]  # noqa: E731
    split = Split(0.2, 2, 0)
    cells = _cells(run, y, op, {"est": "b"}, holdout_sets(op.mask, SHAPE, split))
    assert (float(cells.max()) < MIN_SKILL_ERROR) == (chosen == "b") and float(cells.max()) < 1
    declared = check_tunable({"est": (("a", "b"), "choice")}, None)
    assert tune(run, y, op, declared, split, {"est": "a"}, 2).chosen == {"est": chosen}
    assert tune(run, y, op, declared, split, {"est": "a"}, 2, max_error=1.0).chosen == {"est": "b"}


def test_a_choice_is_searched_over_all_its_values_and_takes_no_range():
    """A discrete ``choice`` (CCDF's initialiser) is scored value by value, and the best one wins
    whatever the start; a range for it is a one-line error."""
    y, op = _tikhonov_problem(signal_var=1.0, noise_var=0.2)
    lamda = {"wiener": 0.2, "under": 1e-3, "over": 30.0}
    run = lambda yf, fit, params: _tikhonov(yf, fit, {"lamda": lamda[params["prior"]]})  # noqa: E731
    declared = {"prior": (("under", "wiener", "over"), "choice")}
    for start in ("under", "over"):
        res = tune(run, y, op, check_tunable(declared, None), Split(0.2, 2, 0), {"prior": start}, 2)
        assert res.chosen == {"prior": "wiener"} and len(res.table) == 3, res.table
    with pytest.raises(InputError, match="choice among under, wiener, over; tune it without a range"):
        check_tunable(declared, {"prior": (0.0, 1.0)}, "m")


def test_unmeasured_nmse_scores_only_the_missing_samples():
    """benchmarks.heldout_vs_unmeasured: zero for the true image whatever the measured samples hold,
    and the relative error of a perturbation placed on the unmeasured samples."""
    import numpy as np

    from benchmarks.heldout_vs_unmeasured import unmeasured_nmse

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    maps = torch.randn(2, 3, 16, 16, dtype=torch.complex64, generator=g)
    mask = torch.zeros(16, 16)
    mask[:, ::2] = 1
    op = CartesianOperator(mask, maps)
    k = CartesianOperator(torch.ones_like(mask), maps).A(x)
    assert np.allclose(unmeasured_nmse(x, k + 5 * mask * k, op), 0, atol=1e-6)  # measured part ignored
    assert np.allclose(unmeasured_nmse(x, 2 * k, op), 0.25, atol=1e-5)  # ||k - 2k||^2 / ||2k||^2


def test_val_benchmarks_refuse_bad_data_in_one_line(tmp_path, capsys):
    """A val benchmark given the test split (or nothing to read) exits 2 with one stderr line."""
    from benchmarks.heldout_vs_unmeasured import main

    (tmp_path / "test").mkdir()
    assert main(["--data", str(tmp_path / "test"), "--rows", "cs-l1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("heldout_vs_unmeasured: error:")


def test_fallback_replay_backs_off_rows_the_cs_scores_beat(tmp_path):
    """``benchmarks.fallback_check scores``: the lowest-scoring CS-L1 row stands for auto CS-L1; a
    diffusion row it beats clearly backs off, one that beats it (or ties within the noise) stays."""
    from benchmarks.fallback_check import replay_scores

    def row(method, scores, psnr):
        return {"method": method, "params": {}, "pooled": scores, "mean": scores, "psnr": psnr}

    rows = [
        row("cs-l1", [0.30, 0.32, 0.31], 25.0),
        row("cs-l1", [0.50, 0.52, 0.51], 23.0),
        row("pocs", [0.60, 0.61, 0.62], 22.0),  # clearly worse than the better CS-L1: backs off
        row("ccdf", [0.20, 0.21, 0.22], 27.0),  # better: stays
        row("dds", [0.30, 0.33, 0.30], 24.9),  # a tie within the noise: stays
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"rows": rows}]))
    out = {r["row"].split()[0]: r for r in replay_scores(path, "pooled")}
    assert out["pocs"]["backs_off"] and out["pocs"]["cs_error"] == 0.31
    assert not out["ccdf"]["backs_off"] and not out["dds"]["backs_off"]
    assert out["pocs"]["cs_minus_row_db"] == 3.0
