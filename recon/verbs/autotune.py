"""`--auto` options shared by `mrdiff recon` and `mrdiff bench`: held-out k-space cross-validation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrdiff.baselines import TUNABLE
from mrdiff.errors import InputError
from mrdiff.pipeline import FALLBACK, AutoSpec
from mrdiff.tuning import AUTO, CENTRE, COVER, OUTER, Split, TuneResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--auto``, ``--tune`` and the search options to a verb's parser."""
    g = p.add_argument_group("automatic parameters (held-out k-space cross-validation, no ground truth)")
    g.add_argument(
        "--auto",
        action="store_true",
        help="choose the method's tunable parameters per volume by held-out k-space cross-validation "
        "(a value moves from its start only on clear evidence; CS-L1's lambda starts in proportion to "
        "the scan's measured noise)",
    )
    g.add_argument(
        "--tune",
        action="append",
        metavar="NAME[=LO:HI]",
        help="tune only NAME (optionally over LO..HI instead of the method's range); implies --auto",
    )
    g.add_argument("--auto-slices", type=int, default=3, help="central slices tuned together (default 3)")
    g.add_argument(
        "--auto-folds",
        default="auto",
        metavar="N|all|auto",
        help="disjoint held-out folds; 'all': enough to hold out every measured outer line/point once; "
        "'auto' (default): 'all' for line masks, 3 for 2-D masks",
    )
    g.add_argument(
        "--auto-score",
        choices=("mean", "pooled"),
        default="mean",
        help="fold score: mean of per-fold errors, or pooled by held-out energy (default mean)",
    )
    g.add_argument("--auto-points", type=int, default=7, help="grid points per parameter (default 7)")
    g.add_argument(
        "--auto-refine", type=int, default=0, help="golden-section steps after the grid (default 0)"
    )
    g.add_argument(
        "--auto-samples",
        type=int,
        default=None,
        help="posterior samples averaged per trial reconstruction (default: as many as --samples)",
    )
    g.add_argument(
        "--auto-fallback",
        default=FALLBACK,
        metavar="|".join((*sorted(TUNABLE), "none")),
        help="a diffusion method backs off to this classical method (tuned the same way) when it predicts "
        "every held-out line/point worse by more than one standard error, i.e. when the data disagree "
        f"with the prior (default {FALLBACK}; 'none': never)",
    )
    g.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.1,
        help="fraction of the measured lines/points outside the centre held out per fold (default 0.1)",
    )
    g.add_argument(
        "--holdout-region",
        choices=(OUTER, CENTRE),
        default=OUTER,
        help="hold out measured lines/points outside the fully sampled centre (default), or single lines "
        "of the centre, one per fold (line masks; --auto-folds auto: at most 8, all: every centre line)",
    )


def _folds(text: str, option: str = "--auto-folds") -> int:
    """A folds option's value: a count >= 1, 'all' (:data:`mrdiff.tuning.COVER`) or 'auto'
    (:data:`mrdiff.tuning.AUTO`).

    Raises:
        InputError: anything else.
    """
    word = text.strip().lower()
    if word in ("all", "auto"):
        return COVER if word == "all" else AUTO
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{option} must be a count >= 1, 'all' or 'auto', got '{text}'")
    return value


def _range(item: str) -> tuple[str, tuple[float, float] | None]:
    name, sep, text = item.partition("=")
    if not sep:
        return name.strip(), None
    lo, colon, hi = text.partition(":")
    try:
        if not colon:
            raise ValueError
        return name.strip(), (float(lo), float(hi))
    except ValueError:
        raise InputError(f"--tune expects NAME or NAME=LO:HI, got '{item}'") from None


def heldout_split(args: argparse.Namespace, option: str = "auto_folds") -> Split:
    """The held-out split the options ask for, with the folds of ``option`` (``auto_folds``, or
    recon's ``heldout_folds`` for its recorded error)."""
    if not 0 < args.holdout_fraction < 1:
        raise InputError(f"--holdout-fraction must be in (0, 1), got {args.holdout_fraction}")
    count = _folds(str(getattr(args, option)), "--" + option.replace("_", "-"))
    return Split(args.holdout_fraction, count, 0, args.auto_score == "pooled", args.holdout_region)


def split_attrs(split: Split) -> dict:
    """A split as plain values (the output file's ``heldout`` attribute)."""
    return {
        "fraction": split.fraction,
        "folds": {COVER: "all", AUTO: "auto"}.get(split.folds, split.folds),
        "score": "pooled" if split.pool else "mean",
        "seed": split.seed,
        "region": split.region,
    }


def auto_spec(args: argparse.Namespace) -> AutoSpec | None:
    """The tuning request of the options, or None without ``--auto`` / ``--tune``."""
    if not (args.auto or args.tune):
        return None
    samples = args.auto_samples
    if min(args.auto_slices, 1 if samples is None else samples) < 1:
        raise InputError("--auto-slices and --auto-samples must be >= 1")
    if args.auto_points < 2 or args.auto_refine < 0:
        raise InputError("--auto-points must be >= 2 and --auto-refine >= 0")
    request = dict(_range(t) for t in args.tune) if args.tune else None
    fallback = None if args.auto_fallback == "none" else args.auto_fallback
    return AutoSpec(
        request, heldout_split(args), args.auto_slices, args.auto_points, args.auto_refine, samples, fallback
    )


def progress_line(path, bar):
    """A tuning callback that writes one stderr line per candidate scored (through ``bar``, a tqdm
    bar, so that the bar stays intact): ``mrdiff recon: tuning FILE: k=v, ... -> held-out error E``."""

    def report(params: dict, error: float) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        bar.write(
            f"mrdiff recon: tuning {Path(path).name}: {shown} -> held-out error {error:.5g}", file=sys.stderr
        )

    return report


def fallback_line(path, result: TuneResult, method: str, bar) -> None:
    """One stderr line (through ``bar``) when ``method`` backed off to its classical fallback."""
    fb = result.fallback
    if fb.get("used"):
        bar.write(
            f"mrdiff recon: {Path(path).name}: {method} backed off to {fb['method']} {fb['params']}: it "
            f"predicts the held-out k-space better ({fb['error']:.4g} against {fb['method_error']:.4g})",
            file=sys.stderr,
        )


def summary(result: TuneResult, auto: AutoSpec, slices: list[int]) -> dict:
    """What `--auto` chose and what it cost, as plain values (stdout JSON and file attributes)."""
    split = split_attrs(auto.split)
    return {
        **result.record(),
        "slices": slices,
        "folds": split["folds"],
        "score": split["score"],
        "region": split["region"],
        "holdout_fraction": split["fraction"],
        "points": auto.points,
        "refine": auto.refine,
        "samples": auto.samples,
    }
