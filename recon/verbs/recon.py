"""`mrdiff recon`: reconstruct fastMRI-style files with a classical, supervised or diffusion method."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from tqdm import tqdm

from mrdiff import __version__
from mrdiff.baselines import BASELINES
from mrdiff.errors import InputError
from mrdiff.io import list_volumes, open_volume, write_reconstruction
from mrdiff.masks import MASK_KINDS, canonical_kind, sampling_fraction
from mrdiff.pipeline import (
    MaskSpec,
    MethodSpec,
    all_methods,
    check_auto,
    check_method,
    diffusion_methods,
    reconstruct_volume,
    supervised_methods,
    tune_volume,
    tuning_slices,
)
from recon.verbs import SUMMARIES, autotune
from recon.verbs.common import (
    check_outputs_spare_inputs,
    method_params,
    output_path,
    parse_sets,
    pick_device,
    return_freed_memory,
)

HELP = SUMMARIES["recon"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mrdiff recon`."""
    p = argparse.ArgumentParser(prog="mrdiff recon", description=HELP)
    p.add_argument("input", type=Path, help="a fastMRI-style .h5 file or a directory of them")
    p.add_argument("--method", required=True, help=f"reconstruction method: {', '.join(all_methods())}")
    p.add_argument("--out", type=Path, required=True, help="output .h5 file (single input) or directory")
    p.add_argument(
        "--mask", default="random", help=f"retrospective mask if the file has none: {', '.join(MASK_KINDS)}"
    )
    p.add_argument("--accel", type=float, default=4.0, help="acceleration of the retrospective mask")
    p.add_argument("--center-fraction", type=float, default=0.08, help="fully sampled centre fraction")
    p.add_argument(
        "--mask-seed", type=int, default=None, help="extra mask seed (default: fastMRI's per-file seed)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (per file and slice)")
    p.add_argument("--prior", default=None, help="diffusion prior checkpoint (default: the shipped weights)")
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        help="denoiser evaluations per sample (diffusion; default: the method's val-tuned default_nfe)",
    )
    p.add_argument(
        "--samples", type=int, default=1, help="posterior samples K per slice (mean and std are written)"
    )
    p.add_argument("--batch", type=int, default=1, help="slices reconstructed together")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")
    p.add_argument("--slices", default=None, help="subset of slices, e.g. '0,2,5' (default: all)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="method parameter, e.g. --set lamda=0.01"
    )
    p.add_argument("--resume", action="store_true", help="skip inputs whose output file already exists")
    p.add_argument("--png", action="store_true", help="also write zero-filled | recon | std | |error| PNGs")
    p.add_argument(
        "--no-heldout",
        action="store_true",
        help="skip the held-out k-space error (a no-reference quality score that costs one more "
        "reconstruction per slice)",
    )
    autotune.add_arguments(p)
    return p


def _method_target(name: str):
    if name in BASELINES:
        return BASELINES[name]
    return {**supervised_methods(), **diffusion_methods()}[name]


def _load_denoiser(args, device: str):
    if args.method not in diffusion_methods():
        return None
    from mrdiff.priors import load_prior

    return load_prior(args.prior, device=device)


def _slices(text: str | None, n: int) -> list[int] | None:
    if text is None:
        return None
    try:
        idx = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--slices expects comma-separated integers, got '{text}'") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"--slices {bad} out of range for {n} slices")
    return idx


def _attrs(args, info, spec: MethodSpec, result, denoiser) -> dict:
    return {
        "method": spec.name,
        "params": spec.params,
        "nfe": result.nfe,
        "samples": spec.samples,
        "seconds_per_slice": result.seconds_per_slice,
        "device": spec.device,
        "seed": spec.seed,
        "prior_sha256": getattr(denoiser, "sha256", "") if denoiser is not None else "",
        "mask": "file" if info.mask is not None else args.mask,
        "accel": args.accel,
        "center_fraction": args.center_fraction,
        "sampling_fraction": sampling_fraction(result.mask, info.shape[2:]),
        "acquisition": info.attrs.get("acquisition", ""),
        "mrdiff_version": __version__,
        "config": {k: str(v) for k, v in vars(args).items()},
    }


def _mask_spec(args) -> MaskSpec:
    return MaskSpec(args.mask, args.accel, args.center_fraction, args.mask_seed)


def _run_one(args, path: Path, out_path: Path, spec: MethodSpec, denoiser, bar, auto) -> dict:
    info = open_volume(path)
    mask_spec = _mask_spec(args)
    slices = _slices(args.slices, info.shape[0])
    report, maps_cache = {}, {}
    if auto is not None:
        tuned = tune_volume(info, spec, mask_spec, auto, maps_cache, slices)
        spec = replace(spec, params=tuned.params)
        report["auto"] = autotune.summary(tuned, auto, tuning_slices(info, auto, slices))
    heldout = None if args.no_heldout else autotune.heldout_split(args)
    # read-only: the tuning slices' maps are reused, but the maps of every slice are not kept to the end
    maps = MappingProxyType(maps_cache)
    result = reconstruct_volume(info, spec, mask_spec, slices, bar.update, maps, heldout)
    extras = {"residual": result.residual, "mask": result.mask.numpy(), "zero_filled": result.zero_filled}
    if result.std is not None:
        extras["std"] = result.std
    attrs = _attrs(args, info, spec, result, denoiser)
    if result.heldout_error is not None:
        extras["heldout_error"] = result.heldout_error
        mean = float(np.mean(result.heldout_error))
        report["heldout_error"] = attrs["heldout_error"] = None if np.isnan(mean) else round(mean, 6)
        attrs["heldout"] = {"fraction": heldout.fraction, "fold": 0, "seed": heldout.seed}
    attrs.update(report)
    if slices is not None:
        attrs["slices"] = slices  # `mrdiff eval` compares these target slices only
    write_reconstruction(out_path, result.reconstruction, attrs, extras)
    if args.png:
        from recon.verbs.figures import slice_figures

        slice_figures(info, result, slices, out_path.parent / "png", out_path.stem)
    return report


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff recon`."""
    args = build_parser().parse_args(argv)
    return_freed_memory()  # peak memory bounded by one batch of slices, not by the file
    check_method(args.method)
    args.mask = canonical_kind(args.mask)
    if args.mask not in MASK_KINDS:
        raise InputError(f"unknown mask '{args.mask}' (choose from {', '.join(MASK_KINDS)})")
    if not args.accel >= 1:
        raise InputError(f"--accel must be >= 1, got {args.accel}")
    if args.nfe is None:
        args.nfe = getattr(diffusion_methods().get(args.method), "default_nfe", 20)
    if args.nfe < 1 or args.samples < 1 or args.batch < 1:
        raise InputError("--nfe, --samples and --batch must be >= 1")
    files = list_volumes(args.input)
    infos = [open_volume(f) for f in files]  # validate every input before writing anything
    device = pick_device(args.device)
    params = method_params(args.method, _method_target(args.method), parse_sets(args.set))
    spec = MethodSpec(args.method, params, None, args.nfe, args.samples, args.seed, device, args.batch)
    auto = autotune.auto_spec(args)
    heldout = None if args.no_heldout else autotune.heldout_split(args)
    for info in infos:  # a bad tuning request fails before anything is written
        if auto is not None:
            check_auto(info, spec, _mask_spec(args), auto)
    denoiser = _load_denoiser(args, device)
    spec = replace(spec, denoiser=denoiser)
    many = args.input.is_dir()
    todo = [(f, output_path(f, args.out, many)) for f in files]
    check_outputs_spare_inputs(todo)
    if args.resume:
        todo = [(f, o) for f, o in todo if not o.exists()]
    total = sum(
        len(_slices(args.slices, i.shape[0]) or range(i.shape[0])) for i in infos if i.path in dict(todo)
    )
    reports = {}
    with tqdm(total=total, desc=f"recon {args.method}", unit="slice", disable=None) as bar:
        for f, o in todo:
            reports[str(o)] = _run_one(args, f, o, spec, denoiser, bar, auto)
    summary = {"written": [str(o) for _, o in todo], "skipped": len(files) - len(todo)}
    print(json.dumps({**summary, "files": reports} if heldout or auto else summary))
    return 0


if __name__ == "__main__":
    import sys

    from recon.cli import main as cli_main

    sys.exit(cli_main(["recon", *sys.argv[1:]]))
