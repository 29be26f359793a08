"""`mrdiff recon`: reconstruct fastMRI-style files with a classical, supervised or diffusion method."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from tqdm import tqdm

from mrdiff.baselines import BASELINES
from mrdiff.errors import InputError
from mrdiff.io import list_volumes, open_volume, write_reconstruction
from mrdiff.masks import MASK_KINDS, canonical_kind, sampling_fraction
from mrdiff.overrides import method_params
from mrdiff.pipeline import (
    MaskSpec,
    MethodSpec,
    adapt_volume,
    all_methods,
    check_adapt,
    check_auto,
    check_init,
    check_method,
    check_prior_fits,
    diffusion_methods,
    reconstruct_volume,
    supervised_methods,
    tune_volume,
    tuned_spec,
    tuning_slices,
)
from mrdiff.provenance import mismatch, request_of, run_record, tuning_context
from mrdiff.tuning import TrialLog
from recon.verbs import SUMMARIES, autotune
from recon.verbs.adapt import adapt_spec
from recon.verbs.adapt import add_arguments as add_adapt_arguments
from recon.verbs.common import (
    check_destination,
    check_outputs_spare_inputs,
    output_path,
    parse_sets,
    pick_device,
    return_freed_memory,
    sigterm_as_interrupt,
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
        "--samples",
        type=int,
        default=None,
        help="posterior samples K per slice, averaged; mean and std are written (diffusion; default: the "
        "method's val-chosen default_samples)",
    )
    p.add_argument("--batch", type=int, default=1, help="slices reconstructed together")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")
    p.add_argument("--slices", default=None, help="subset of slices, e.g. '0,2,5' (default: all)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="method parameter, e.g. --set lamda=0.01"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs whose output is a finished run of this same request (method, parameters, NFE, "
        "samples, seeds, mask, prior, slices, --auto); any other existing output is redone, and an "
        "--auto search cut off mid-file goes on from the candidates it had scored (OUT.tuning/)",
    )
    p.add_argument(
        "--keep-going",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="directory input: report a bad file (corrupt, NaN slice, ...) on stderr, write the others and "
        "exit 1 at the end (default, so one bad file in a 1,000-file run costs that file, not the night; "
        "the summary's 'failed' lists them). --no-keep-going stops at the first bad file",
    )
    p.add_argument("--png", action="store_true", help="also write zero-filled | recon | std | |error| PNGs")
    p.add_argument(
        "--no-heldout",
        action="store_true",
        help="skip the held-out k-space error (a no-reference quality score that costs one more "
        "reconstruction per slice and fold)",
    )
    p.add_argument(
        "--heldout-folds",
        default="1",
        metavar="N|all",
        help="held-out folds scored for the recorded error, by --auto-score (default 1: cheap but noisy; "
        "3 or 'all' to rank methods on a real scan)",
    )
    autotune.add_arguments(p)
    add_adapt_arguments(p)
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


def _attrs(args, info, spec: MethodSpec, result) -> dict:
    """The output file's attributes: the resolved run (:func:`mrdiff.provenance.run_record`), what it
    cost and the command-line arguments."""
    return {
        **run_record(spec, _mask_spec(args), info.mask is not None),
        "nfe": result.nfe,
        "seconds_per_slice": result.seconds_per_slice,
        "device": spec.device,
        "batch": spec.batch,
        "prior_sha256": getattr(spec.denoiser, "sha256", "") if spec.denoiser is not None else "",
        "mask": "file" if info.mask is not None else args.mask,
        "accel": args.accel,
        "center_fraction": args.center_fraction,
        "sampling_fraction": sampling_fraction(result.mask, info.shape[2:]),
        "acquisition": info.attrs.get("acquisition", ""),
        "config": {k: str(v) for k, v in vars(args).items()},
    }


def _mask_spec(args) -> MaskSpec:
    return MaskSpec(args.mask, args.accel, args.center_fraction, args.mask_seed)


def _trial_logs(args, path: Path, out_path: Path, info, spec: MethodSpec, auto, tuned: list[int]):
    """``--auto``'s scored candidates, kept in ``OUT.tuning/<stage>.jsonl`` until the output is written,
    so that a search cut off mid-file resumes with ``--resume`` (:class:`mrdiff.tuning.TrialLog`; a log
    of another request is started afresh). Without ``--resume`` an old log is discarded."""
    directory = out_path.with_name(out_path.name + ".tuning")
    if not args.resume:
        shutil.rmtree(directory, ignore_errors=True)
    context = tuning_context(spec, _mask_spec(args), info.mask is not None, auto, path.name, tuned)
    return directory, TrialLog.stages(directory, context)


def _run_one(args, path: Path, out_path: Path, spec: MethodSpec, bar, auto, adapt) -> dict:
    info = open_volume(path)
    mask_spec = _mask_spec(args)
    slices = _slices(args.slices, info.shape[0])
    report, maps_cache, asked, logs = {}, {}, dict(spec.params), None
    if auto is not None:
        tuned_slices = tuning_slices(info, auto, slices)
        logs, memo = _trial_logs(args, path, out_path, info, spec, auto, tuned_slices)
        progress = autotune.progress_line(path, bar)
        tuned = tune_volume(info, spec, mask_spec, auto, maps_cache, slices, progress, memo)
        spec, run = replace(spec, params=tuned.params), tuned_spec(spec, tuned)
        report["auto"] = autotune.summary(tuned, auto, tuned_slices)
        autotune.fallback_line(path, tuned, spec.name, bar)
    else:
        run = spec
    if adapt is not None and run.name == spec.name:  # not when it backed off to its classical fallback
        adapted, report["adapt"] = adapt_volume(info, spec, mask_spec, adapt, maps_cache, slices)
        spec = run = replace(spec, denoiser=adapted)
    # read-only: the tuning slices' maps are reused, but the maps of every slice are not kept to the end
    maps = MappingProxyType(maps_cache)
    result = reconstruct_volume(info, run, mask_spec, slices, bar.update, maps, args.heldout)
    extras = {"residual": result.residual, "mask": result.mask.numpy(), "zero_filled": result.zero_filled}
    if result.std is not None:
        extras["std"] = result.std
    attrs = {**_attrs(args, info, spec, result), "params_set": asked}
    if result.heldout_error is not None:
        extras["heldout_error"] = result.heldout_error
        mean = float(np.mean(result.heldout_error))
        report["heldout_error"] = attrs["heldout_error"] = None if np.isnan(mean) else round(mean, 6)
        report["heldout"] = autotune.split_attrs(args.heldout)
        if result.heldout_note:
            report["heldout_note"] = result.heldout_note  # why heldout_error is null
    attrs.update(report)
    if slices is not None:
        attrs["slices"] = slices  # `mrdiff eval` compares these target slices only
    write_reconstruction(out_path, result.reconstruction, attrs, extras)
    if logs is not None:
        shutil.rmtree(logs, ignore_errors=True)  # the output now holds the choice
    if args.png:
        from recon.verbs.figures import slice_figures

        slice_figures(info, result, slices, out_path.parent / "png", out_path.stem)
    return report


def _request(args) -> tuple[MethodSpec, object, object]:
    """Validate the options (one-line InputErrors) and return the method spec (no prior yet), the
    tuning request and the adaptation request (each or None)."""
    check_method(args.method)
    args.mask = canonical_kind(args.mask)
    if args.mask not in MASK_KINDS:
        raise InputError(f"unknown mask '{args.mask}' (choose from {', '.join(MASK_KINDS)})")
    if not 1 <= args.accel < float("inf"):
        raise InputError(f"--accel must be a finite number >= 1, got {args.accel}")
    if args.nfe is None:
        args.nfe = getattr(diffusion_methods().get(args.method), "default_nfe", 20)
    if args.samples is None:
        args.samples = getattr(diffusion_methods().get(args.method), "default_samples", 1)
    if args.nfe < 1 or args.samples < 1 or args.batch < 1:
        raise InputError("--nfe, --samples and --batch must be >= 1")
    params = method_params(args.method, _method_target(args.method), parse_sets(args.set))
    check_init(args.method, params)
    args.heldout = None if args.no_heldout else autotune.heldout_split(args, "heldout_folds")
    device = pick_device(args.device)
    spec = MethodSpec(args.method, params, None, args.nfe, args.samples, args.seed, device, args.batch)
    return spec, autotune.auto_spec(args), adapt_spec(args)


def _report_failure(path: Path, err: Exception, failed: dict) -> None:
    """Record a failed input and say so on stderr (one line); the run goes on (--keep-going)."""
    failed[str(path)] = str(err)
    print(f"mrdiff recon: {path}: {err} (skipped; the other files go on)", file=sys.stderr)


def _open_inputs(todo, args, spec, auto, adapt, keep_going: bool, failed: dict) -> dict:
    """``{input: VolumeInfo}`` of every readable input, validated (and its tuning and adaptation
    requests checked)
    before anything is computed; a bad input raises, or with ``keep_going`` is reported and left out."""
    infos = {}
    for f, _ in todo:
        try:
            info = open_volume(f)
            if auto is not None:
                check_auto(info, spec, _mask_spec(args), auto)
            if adapt is not None:
                check_adapt(info, spec, _mask_spec(args), adapt)
            check_prior_fits(spec.denoiser, info)
            infos[f] = info
        except InputError as err:
            if not keep_going:
                raise
            _report_failure(f, err, failed)
    return infos


def _n_slices(args, info) -> int:
    return len(_slices(args.slices, info.shape[0]) or range(info.shape[0]))


def _unfinished(todo, infos: dict, args, spec: MethodSpec) -> list:
    """``--resume``: the pairs whose output is not a valid, finished run of this very request (an
    empty, truncated or foreign file, or one from another method or parameters, is redone)."""
    out = []
    for f, o in todo:
        if f not in infos or not o.exists():
            out.append((f, o))
            continue
        record = run_record(spec, _mask_spec(args), infos[f].mask is not None)
        request = request_of(
            record,
            _slices(args.slices, infos[f].shape[0]),
            autotune.auto_spec(args) is not None,
            adapt_spec(args) is not None,
            autotune.split_attrs(args.heldout) if args.heldout else None,
        )
        reason = mismatch(o, request, _n_slices(args, infos[f]))
        if reason is not None:
            print(f"mrdiff recon: redoing {o}: {reason}", file=sys.stderr)
            out.append((f, o))
    return out


def _run_all(todo, infos, args, spec, auto, adapt, keep_going: bool, failed: dict) -> dict:
    """Reconstruct every readable pair of ``todo``; returns ``{output: report}`` of those written."""
    reports = {}
    total = sum(_n_slices(args, infos[f]) for f, _ in todo if f in infos)
    with tqdm(total=total, desc=f"recon {args.method}", unit="slice", disable=None) as bar:
        for f, o in todo:
            if f not in infos:
                continue
            try:
                reports[str(o)] = _run_one(args, f, o, spec, bar, auto, adapt)
            except InputError as err:
                if not keep_going:
                    raise
                _report_failure(f, err, failed)
    return reports


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff recon`: exit 0 when every input was written, 1 when some failed
    (``--keep-going``; each is named on stderr and in the summary's ``failed``), 2 on bad options."""
    args = build_parser().parse_args(argv)
    return_freed_memory()  # peak memory bounded by one batch of slices, not by the file
    spec, auto, adapt = _request(args)
    many = args.input.is_dir()
    keep_going = many and args.keep_going
    todo = [(f, output_path(f, args.out, many)) for f in list_volumes(args.input)]
    check_outputs_spare_inputs(todo)
    for _, o in todo:  # a destination that cannot be written fails before any compute
        check_destination(o)
    spec = replace(spec, denoiser=_load_denoiser(args, spec.device))
    failed: dict[str, str] = {}
    infos = _open_inputs(todo, args, spec, auto, adapt, keep_going, failed)
    pending = _unfinished(todo, infos, args, spec) if args.resume else todo
    with sigterm_as_interrupt():
        reports = _run_all(pending, infos, args, spec, auto, adapt, keep_going, failed)
    summary = {"written": list(reports), "skipped": len(todo) - len(pending), "failed": failed}
    print(json.dumps({**summary, "files": reports} if args.heldout or auto or adapt else summary))
    return 1 if failed else 0


if __name__ == "__main__":
    import sys

    from recon.cli import main as cli_main

    sys.exit(cli_main(["recon", *sys.argv[1:]]))
