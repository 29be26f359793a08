"""Hold out slices or frames of one source for another split (train/ and val/ from one cine or stack).

``mrdiff prep SRC --holdout-slices 12:16`` (or ``--val-fraction 0.25``) writes the held-out source
slices to ``val/`` and the rest to ``train/``. The block is contiguous in source order (neighbouring
slices and cine frames are strongly correlated, so an interleaved split would leak), the subject is
declared shared between exactly those two splits, and the per-slice leakage check still applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mrdiff.errors import InputError


@dataclass(frozen=True)
class Holdout:
    """A contiguous block of source slice indices that goes to ``split`` instead of the main split.

    Attributes:
        start, stop: the block ``[start, stop)`` in source slice (or frame) indices; None with ``fraction``.
        fraction: hold out the last ``round(fraction * n)`` slices (at least one, never all).
        split: where the held-out slices go (default ``val``).
    """

    start: int | None = None
    stop: int | None = None
    fraction: float | None = None
    split: str = "val"

    def partition(self, indices: list[int], source: str) -> tuple[list[int], list[int]]:
        """``indices`` (a source's slice indices, ascending) -> (kept, held out); both non-empty.

        Raises:
            InputError: the block selects none or all of the source's slices.
        """
        if self.fraction is not None:
            count = min(len(indices) - 1, max(1, round(self.fraction * len(indices))))
            held = indices[len(indices) - count :] if count > 0 else []
        else:
            held = [i for i in indices if self.start <= i < self.stop]
        kept = [i for i in indices if i not in set(held)]
        if not held or not kept:
            raise InputError(
                f"{source}: the hold-out ({self.describe()}) must leave slices on both sides; "
                f"the source has {len(indices)} slice(s)"
            )
        return kept, held

    def describe(self) -> str:
        """The option as the user wrote it."""
        if self.fraction is not None:
            return f"--val-fraction {self.fraction:g}"
        return f"--holdout-slices {self.start}:{self.stop}"


def parse_holdout(slices: str | None, fraction: float | None, split: str) -> Holdout | None:
    """``--holdout-slices START:STOP`` or ``--val-fraction F`` (at most one) -> :class:`Holdout`."""
    if slices is not None and fraction is not None:
        raise InputError("give --holdout-slices or --val-fraction, not both")
    if fraction is not None:
        if not (0 < fraction < 1 and math.isfinite(fraction)):
            raise InputError(f"--val-fraction must be in (0, 1), got {fraction}")
        return Holdout(fraction=fraction, split=split)
    if slices is None:
        return None
    start, sep, stop = slices.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first, last = -1, -1
    if not sep or not 0 <= first < last:
        raise InputError(f"--holdout-slices expects START:STOP with 0 <= START < STOP, got {slices!r}")
    return Holdout(start=first, stop=last, split=split)
