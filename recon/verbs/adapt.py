"""`--adapt` options shared by `mrdiff recon` and `mrdiff bench`: test-time adaptation of the prior."""

from __future__ import annotations

import argparse

from mrdiff.adapt import AdaptSpec
from mrdiff.errors import InputError
from mrdiff.tuning import Split

DEFAULTS = AdaptSpec()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--adapt`` and its settings to a verb's parser (held-out fraction: ``--holdout-fraction``)."""
    g = p.add_argument_group("test-time adaptation of the prior (LoRA adapters fitted to the scan, DDIP)")
    g.add_argument(
        "--adapt",
        action="store_true",
        help="fit low-rank adapters of the diffusion prior to each volume's own k-space (fit set), "
        "early-stopped on held-out k-space, then reconstruct with the adapted prior",
    )
    g.add_argument("--adapt-rank", type=int, default=DEFAULTS.rank, help=f"adapter rank (default {DEFAULTS.rank})")
    g.add_argument(
        "--adapt-steps", type=int, default=DEFAULTS.steps, help=f"Adam steps per sampling step (default {DEFAULTS.steps})"
    )
    g.add_argument("--adapt-lr", type=float, default=DEFAULTS.lr, help=f"Adam learning rate (default {DEFAULTS.lr})")
    g.add_argument(
        "--adapt-sigma",
        type=float,
        default=DEFAULTS.sigma,
        help=f"adapt at sampling steps with sigma at or below this (default {DEFAULTS.sigma})",
    )
    g.add_argument(
        "--adapt-patience",
        type=int,
        default=DEFAULTS.patience,
        help=f"sampling steps without held-out improvement before adaptation stops (default {DEFAULTS.patience})",
    )
    g.add_argument(
        "--adapt-slices",
        type=int,
        default=DEFAULTS.slices,
        help=f"central slices of a volume the adapter is fitted on (default {DEFAULTS.slices})",
    )


def adapt_spec(args: argparse.Namespace) -> AdaptSpec | None:
    """The adaptation request of the options (checked), or None without ``--adapt``.

    Raises:
        InputError: a bad setting (rank, steps, patience or slices < 1, lr or sigma <= 0).
    """
    if not args.adapt:
        return None
    split = Split(args.holdout_fraction, 1, 0)
    return AdaptSpec(
        args.adapt_rank, args.adapt_steps, args.adapt_lr, args.adapt_sigma, args.adapt_patience, args.adapt_slices, split
    ).check()
