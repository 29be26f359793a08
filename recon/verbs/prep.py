"""`mrdiff prep`: build fastMRI-style HDF5 sets from scans (see data_prep/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recon.verbs import SUMMARIES

HELP = SUMMARIES["prep"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mrdiff prep``."""
    from data_prep.open_brain import PRESETS, SETS
    from data_prep.sources import ORIENTATIONS

    p = argparse.ArgumentParser(prog="mrdiff prep", description=HELP)
    p.add_argument(
        "sources",
        nargs="*",
        type=Path,
        help="input files or folders (NIfTI, DICOM file or series folder, PNG/TIFF, .npy/.mat/.bin, .h5)",
    )
    p.add_argument("--out", type=Path, required=True, help="output root; volumes go to OUT/<split>/*.h5")
    p.add_argument(
        "--open-brain",
        type=Path,
        metavar="DATA_DIR",
        help="build the open brain sets from DATA_DIR, the open data folder (e.g. ../shared/data)",
    )
    p.add_argument(
        "--demo",
        type=Path,
        metavar="DATA_DIR",
        help="rebuild the bundled demo input (data_prep/demo) from DATA_DIR into --out",
    )
    p.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"open brain sets to build, comma separated (of {','.join(SETS)})",
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="output size preset: 128 (CPU), 256/320 (GPU)"
    )
    p.add_argument(
        "--size", type=int, default=128, help="output matrix size N for simulated data (default 128)"
    )
    p.add_argument(
        "--kspace-shape",
        metavar="HxW",
        default=None,
        help="k-space matrix of simulated data, rows x columns, each >= the output size N (default N x N): "
        "the object fills the centre N x N of the H x W image and the targets are that centre crop, as "
        "fastMRI's reconstruction_rss (fastMRI brain: --preset 320 --kspace-shape 640x368 --coils 16)",
    )
    p.add_argument("--coils", type=int, default=8, help="number of simulated coils (default 8)")
    p.add_argument(
        "--snr-db",
        type=float,
        default=30.0,
        help="SNR of the simulated coil-combined image in dB (default 30)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="base seed; slice seeds = seed_for(seed, source, slice)"
    )
    p.add_argument(
        "--min-foreground",
        type=float,
        default=0.10,
        help="skip slices with a smaller fraction of pixels above 10%% of the volume's 99th percentile",
    )
    p.add_argument("--split", default="train", help="split name for SOURCES (default train)")
    p.add_argument(
        "--holdout-slices",
        metavar="START:STOP",
        default=None,
        help="send source slices (or cine frames) START..STOP-1 of each source to --holdout-split, the "
        "rest to --split (one slice stack per source; leakage still checked per slice)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="like --holdout-slices, holding out the last fraction F of each source's slices, 0 < F < 1",
    )
    p.add_argument("--holdout-split", default="val", help="split of the held-out slices (default val)")
    p.add_argument(
        "--licence", default="unknown (not stated by the user)", help="licence recorded for SOURCES"
    )
    p.add_argument(
        "--orientations",
        default=",".join(ORIENTATIONS),
        help="NIfTI slice orientations, comma separated (sagittal,coronal,axial)",
    )
    p.add_argument(
        "--espirit",
        action="store_true",
        help="store ESPIRiT maps (calibration region) and, if fully sampled, the coil-combined image",
    )
    p.add_argument(
        "--images-only",
        action="store_true",
        help="simulated sets: write only the complex ground-truth images (no coils, noise or k-space): "
        "enough to train a prior, about 20x smaller; not reconstructable",
    )
    p.add_argument(
        "--contrast-copy",
        metavar="SPLIT",
        default=None,
        help="write OUT/SPLIT-contrast: a seeded T2/PD-like contrast-remapped copy (images only) of the "
        "prepared OUT/SPLIT (e.g. val), so a prior is not chosen on T1 alone; runs after any build",
    )
    p.add_argument("--force", action="store_true", help="rebuild volumes that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _options(args):
    from data_prep.build import PrepOptions
    from data_prep.open_brain import PRESETS
    from data_prep.simulate import SimulationConfig
    from mrdiff.errors import InputError

    size = PRESETS[args.preset] if args.preset else args.size
    if size < 16 or args.coils < 1 or not 0 <= args.min_foreground < 1:
        raise InputError(
            f"bad options: size {size} (>= 16), coils {args.coils} (>= 1), min-foreground in [0, 1)"
        )
    shape = _kspace_shape(args.kspace_shape, size)
    sim = SimulationConfig(size=size, coils=args.coils, snr_db=args.snr_db, kspace_shape=shape)
    return PrepOptions(
        sim=sim,
        seed=args.seed,
        min_foreground=args.min_foreground,
        espirit=args.espirit,
        force=args.force,
        images_only=args.images_only,
    )


def _kspace_shape(text: str | None, size: int) -> tuple[int, int] | None:
    """``--kspace-shape HxW`` as ``(H, W)``, checked against the output size N (None when not given)."""
    from mrdiff.errors import InputError

    if text is None:
        return None
    try:
        H, W = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--kspace-shape expects HxW, e.g. 640x368, got {text!r}") from None
    if H < size or W < size:
        raise InputError(f"--kspace-shape {H}x{W} must be at least the output size {size} in both directions")
    return H, W


def _holdout(args):
    """The ``--holdout-slices`` / ``--val-fraction`` request (None without one)."""
    from data_prep.holdout import parse_holdout
    from mrdiff.errors import InputError

    holdout = parse_holdout(args.holdout_slices, args.val_fraction, args.holdout_split)
    if holdout is not None and not args.sources:
        raise InputError("--holdout-slices / --val-fraction apply to SOURCES; none given")
    if holdout is not None and holdout.split == args.split:
        raise InputError(f"--holdout-split must differ from --split (both {args.split!r})")
    return holdout


def main(argv: list[str]) -> int:
    """Run ``mrdiff prep``; returns 0, or 1 if any source failed (each failure printed on one line)."""
    from data_prep.api import prep_open_brain, prep_sources
    from data_prep.open_brain import SETS
    from data_prep.sources import ORIENTATIONS
    from mrdiff.errors import InputError

    args = build_parser().parse_args(argv)
    opts = _options(args)
    if not args.sources and args.open_brain is None and args.demo is None:
        if args.contrast_copy is not None:
            return _contrast_copy(args)
        raise InputError(
            "nothing to do: give SOURCES, --open-brain DATA_DIR, --demo DATA_DIR or --contrast-copy SPLIT"
        )
    holdout = _holdout(args)
    reports = []
    if args.demo is not None:
        from data_prep.demo_set import build_demo

        if not args.demo.is_dir():
            raise InputError(f"{args.demo}: data folder not found")
        reports.append(build_demo(args.demo.resolve(), args.out, not args.no_progress, args.force))
    if args.open_brain is not None:
        sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
        unknown = [s for s in sets if s not in SETS]
        if unknown:
            raise InputError(f"unknown set(s) {unknown}; choose from {list(SETS)}")
        reports.append(prep_open_brain(args.open_brain.resolve(), args.out, opts, sets, not args.no_progress))
    if args.sources:
        orient = tuple(o.strip() for o in args.orientations.split(",") if o.strip())
        if not orient or any(o not in ORIENTATIONS for o in orient):
            raise InputError(
                f"--orientations must be a subset of {','.join(ORIENTATIONS)}, got {args.orientations!r}"
            )
        reports.append(
            prep_sources(
                args.sources, args.out, args.split, args.licence, opts, orient, not args.no_progress, holdout
            )
        )
    status = _summary(reports, args.out)
    if args.contrast_copy is not None:
        _contrast_copy(args)
    return status


def _contrast_copy(args) -> int:
    """``--contrast-copy SPLIT``: write OUT/SPLIT-contrast (data_prep.contrast_copy); returns 0."""
    from data_prep.contrast_copy import contrast_copy

    r = contrast_copy(args.out, args.contrast_copy, seed=args.seed, force=args.force)
    print(
        f"mrdiff prep: contrast copy of {args.out / args.contrast_copy}: {len(r.written)} volumes written, "
        f"{len(r.reused)} reused in {r.seconds:.1f} s -> {args.out / (args.contrast_copy + '-contrast')}"
    )
    return 0


def _summary(reports, out: Path) -> int:
    from data_prep.manifest import load_manifest

    failures = [f for r in reports for f in r.failures]
    built = sum(len(r.entries) - len(r.reused) for r in reports)
    reused = sum(len(r.reused) for r in reports)
    seconds = sum(r.seconds for r in reports)
    for r in reports:
        for line in r.dropped:
            print(f"mrdiff prep: note: {line}", file=sys.stderr)
    for line in failures:
        print(f"mrdiff prep: error: {line}", file=sys.stderr)
    summary = load_manifest(out).get("summary", {})
    sets = ", ".join(f"{k}: {v['volumes']} volumes / {v['slices']} slices" for k, v in summary.items())
    print(
        f"mrdiff prep: {built} volumes built, {reused} reused, {len(failures)} failed in {seconds:.1f} s "
        f"-> {out} ({sets})"
    )
    return 1 if failures else 0
