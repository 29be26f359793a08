"""`--adapt` options shared by `mrdiff recon` and `mrdiff bench`: test-time adaptation of the prior."""

from __future__ import annotations

import argparse

from mrdiff.adapt import AdaptSpec
from mrdiff.tuning import Split

DEFAULTS = AdaptSpec()
KNOBS = (  # AdaptSpec field, type, help
    ("rank", int, "LoRA rank of every adapter"),
    ("steps", int, "Adam steps per sampling step"),
    ("lr", float, "Adam learning rate"),
    ("sigma", float, "adapt at sampling steps with sigma at or below this; the adapters are used there"),
    ("patience", int, "sampling steps without held-out improvement before adaptation stops"),
    ("slices", int, "central slices of a volume the adapter is fitted on (it then serves every slice)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--adapt`` and its settings to a verb's parser."""
    g = p.add_argument_group("test-time adaptation of the prior (LoRA adapters fitted to the scan, DDIP)")
    g.add_argument(
        "--adapt",
        action="store_true",
        help="fit low-rank adapters of the diffusion prior to each volume's own k-space (fit set), "
        "early-stopped on held-out k-space, then reconstruct with the adapted prior",
    )
    for name, kind, text in KNOBS:
        default = getattr(DEFAULTS, name)
        g.add_argument(f"--adapt-{name}", type=kind, default=default, help=f"{text} (default {default})")
    fraction = DEFAULTS.split.fraction
    g.add_argument(
        "--adapt-holdout",
        type=float,
        default=fraction,
        help="fraction of the measured lines/points outside the centre held out while the adapter is fitted "
        f"(early stopping; the reconstruction itself then uses all data; default {fraction})",
    )


def adapt_spec(args: argparse.Namespace) -> AdaptSpec | None:
    """The adaptation request of the options (checked), or None without ``--adapt``.

    Raises:
        InputError: a bad setting (rank, steps, patience or slices < 1, lr or sigma <= 0, held-out
            fraction outside (0, 1)).
    """
    if not args.adapt:
        return None
    knobs = {name: getattr(args, f"adapt_{name}") for name, _, _ in KNOBS}
    return AdaptSpec(**knobs, split=Split(args.adapt_holdout, 1, 0)).check()
