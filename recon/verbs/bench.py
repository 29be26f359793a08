"""`mrdiff bench`: every method on every (mask, acceleration, seed), tables and figures; resumable."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.config import DEFAULT_PARAMS, method_configs, pick_slices, read_params, split_list
from benchmarks.figures import nfe_figure, real_figure, slices_figure
from benchmarks.harness import Cell, auto_settings, load_record, plan, run_grid
from benchmarks.report import write_tables, write_text
from benchmarks.sweep import choose, grid_configs, write_params
from mrdiff.errors import InputError
from mrdiff.io import list_volumes, open_volume
from mrdiff.pipeline import MethodSpec, all_methods, check_adapt, check_auto, diffusion_methods
from recon.verbs import SUMMARIES, autotune
from recon.verbs.adapt import adapt_spec
from recon.verbs.adapt import add_arguments as add_adapt_arguments
from recon.verbs.common import pick_device, return_freed_memory

HELP = SUMMARIES["bench"]
QUICK = {"slices": 1, "volumes": 2, "nfe": 4}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mrdiff bench`."""
    p = argparse.ArgumentParser(prog="mrdiff bench", description=HELP)
    p.add_argument(
        "--data", type=Path, required=True, help="prepared root (with test/, val/) or a split directory"
    )
    p.add_argument("--split", default="test", help="split under --data (ignored if --data holds .h5 files)")
    p.add_argument(
        "--methods", default=None, help=f"comma-separated rows (default: all of {', '.join(all_methods())})"
    )
    p.add_argument("--masks", default="random,equispaced,poisson", help="comma-separated mask kinds")
    p.add_argument("--accels", default="4,8", help="comma-separated accelerations")
    p.add_argument("--seeds", type=int, default=1, help="repetitions (mask and sampler seeds 0..N-1)")
    p.add_argument("--out", type=Path, required=True, help="output directory (reruns skip finished cells)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny subset: {QUICK['slices']} slice of <= {QUICK['volumes']} volumes, NFE {QUICK['nfe']}",
    )
    p.add_argument("--slices-per-volume", type=int, default=None, help="slices per volume (central 60%%)")
    p.add_argument("--max-volumes", type=int, default=None, help="use only the first N volumes")
    p.add_argument(
        "--nfe", default=None, help="comma-separated NFE values for diffusion rows (PSNR-vs-NFE curve)"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="posterior samples averaged per slice for diffusion rows (default: the params file's, else "
        "the method's default_samples)",
    )
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file chosen by the val sweep")
    p.add_argument("--prior", default=None, help="diffusion prior checkpoint (default: the shipped weights)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")
    p.add_argument("--real", type=Path, default=None, help="real undersampled files for a qualitative figure")
    p.add_argument("--sweep", action="store_true", help="run the documented hyper-parameter grid (val only)")
    p.add_argument("--params-out", type=Path, default=None, help="--sweep: where to write the chosen params")
    autotune.add_arguments(p)
    add_adapt_arguments(p)
    return p


def _auto_rows(args, methods, volumes, cells) -> list:
    """With ``--auto``: rows labelled ``LABEL+auto`` that tune per volume; bad requests fail here."""
    auto = autotune.auto_spec(args)
    if auto is None:
        return methods
    for cell in cells:
        for info in volumes:
            check_auto(info, MethodSpec(cell.method.name, cell.method.params), cell.mask_spec, auto)
    plain = replace(auto, fallback=None)  # only a diffusion method backs off
    rows = [(m, auto_settings(auto if m.is_diffusion else plain)) for m in methods]
    return [replace(m, label=m.label + "+auto", auto=settings) for m, settings in rows]


def _adapt_rows(args, methods, volumes, cells) -> list:
    """With ``--adapt``: diffusion rows become ``LABEL+adapt`` (a LoRA adapter of the prior fitted per
    volume); other rows stay as they are (baselines); bad requests fail here."""
    adapt = adapt_spec(args)
    if adapt is None:
        return methods
    for cell in cells:
        for info in volumes:
            if cell.method.is_diffusion:
                check_adapt(info, MethodSpec(cell.method.name, cell.method.params), cell.mask_spec, adapt)
    settings = adapt.settings()
    return [replace(m, label=m.label + "+adapt", adapt=settings) if m.is_diffusion else m for m in methods]


def load_denoiser(prior: str | None, device: str):
    """The diffusion prior (contract 2)."""
    from mrdiff.priors import load_prior

    return load_prior(prior, device=device)


def prior_identity(prior: str | None) -> str:
    """sha256 of the prior file that :func:`load_denoiser` would load ("" if it does not exist), so
    that finished diffusion cells of another prior are rerun without loading the network."""
    from mrdiff.priors import default_prior_path
    from mrdiff.priors.checkpoint import sha256_file

    path = default_prior_path() if prior is None else Path(prior)
    return sha256_file(path) if path.is_file() else ""


def _split_dir(args) -> Path:
    if not args.data.exists():
        raise InputError(f"{args.data}: no such directory")
    sub = args.data / args.split
    return sub if sub.is_dir() else args.data


def _volumes(directory: Path, args) -> list:
    infos = [open_volume(f) for f in list_volumes(directory)]
    limit = QUICK["volumes"] if args.quick and args.max_volumes is None else args.max_volumes
    infos = infos[:limit] if limit else infos
    if args.quick or args.slices_per_volume:
        count = args.slices_per_volume or QUICK["slices"]
        return infos, {i.path.name: pick_slices(i.shape[0], count) for i in infos}
    return infos, {i.path.name: list(range(i.shape[0])) for i in infos}


def _nfes(args) -> list[int] | None:
    nfes = split_list(args.nfe, int)
    if any(n < 1 for n in nfes):
        raise InputError("--nfe values must be >= 1")
    return nfes or ([QUICK["nfe"]] if args.quick else None)


def _progress(out: Path):
    log = out / "bench.log"

    def report(key: str, record: dict | None) -> None:
        if record is not None and ("tuning" in record or "slices_done" in record):  # a candidate, a slice
            line = {"cell": key, **record}
        else:
            psnr = [round(v["PSNR"], 3) for v in (record or {}).get("volumes", []) if "PSNR" in v]
            line = {"cell": key, "seconds": round((record or {}).get("seconds", 0), 2), "PSNR": psnr}
        with open(log, "a") as f:
            f.write(json.dumps(line) + "\n")

    return report


def _real(args, methods, out: Path, device: str, denoiser_fn) -> dict:
    """Run each row once on the real undersampled files (their own masks) and draw the figure."""
    infos = [open_volume(f) for f in list_volumes(args.real)]
    slices = {i.path.name: [i.shape[0] // 2] for i in infos}
    cells = [Cell(m, "file", 1.0, 0) for m in methods]
    stats = run_grid(
        cells, infos, slices, out / "real", denoiser_fn, device, _progress(out), prior_identity(args.prior)
    )
    records = [load_record(out / "real", c) for c in cells]
    real_figure(records, infos, out / "real", out / "real_undersampled.png")
    return stats


def _figures(records, agg, volumes, out: Path, masks, accels, methods) -> None:
    diffusion = {m.label for m in methods if m.is_diffusion}
    nfe_figure(agg, diffusion, out / "psnr_vs_nfe.png")
    target = next((v for v in volumes if v.target_key), None)
    if target is not None:
        for mask in masks:
            for accel in accels:
                slices_figure(records, target, out, mask, accel, out / f"slices_{mask}_{accel:g}x.png")


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff bench`."""
    args = build_parser().parse_args(argv)
    return_freed_memory()
    t0 = time.perf_counter()
    directory = _split_dir(args)
    if args.real is not None:
        list_volumes(args.real)  # fail before the benchmark, not after it
    masks, accels = split_list(args.masks), split_list(args.accels, float)
    labels = split_list(args.methods) or all_methods()
    nfes = _nfes(args)
    if args.sweep:
        methods = grid_configs(labels, nfes or [20])
    else:
        methods = method_configs(labels, read_params(args.params), nfes, args.samples)
    volumes, slices = _volumes(directory, args)
    if args.sweep and (directory.name == "test" or any(v.attrs.get("split") == "test" for v in volumes)):
        raise InputError(f"{directory}: the sweep tunes hyper-parameters and must run on `val`, never `test`")
    methods = _auto_rows(args, methods, volumes, plan(methods, masks, accels, args.seeds))
    methods = _adapt_rows(args, methods, volumes, plan(methods, masks, accels, args.seeds))
    cells = plan(methods, masks, accels, args.seeds)
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cache: dict = {}

    def denoiser_fn():
        if "d" not in cache:
            cache["d"] = load_denoiser(args.prior, device)
        return cache["d"]

    sha = prior_identity(args.prior)
    stats = run_grid(cells, volumes, slices, args.out, denoiser_fn, device, _progress(args.out), sha)
    records = [load_record(args.out, c) for c in cells]
    command = shlex.join(["mrdiff", "bench", *argv])
    notes = [
        f"Data: `{directory}` ({len(volumes)} volume(s), slices {json.dumps(slices)}); "
        f"{args.seeds} seed(s); device {device}.",
        "",
    ]
    agg = write_tables(records, args.out, command, notes)
    _figures(records, agg, volumes, args.out, masks, accels, methods)
    if args.sweep:
        best = choose(agg, methods)
        write_params(args.params_out or args.out / "params.yaml", best, command)
    if args.real is not None:
        stats["real"] = _real(
            args, [m for m in methods if m.name in all_methods()], args.out, device, denoiser_fn
        )
    stats["total_seconds"] = time.perf_counter() - t0
    stats["diffusion_rows"] = sorted({m.label for m in methods if m.name in diffusion_methods()})
    write_text(args.out / "bench.json", json.dumps(stats, indent=1))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "ran": stats["ran"],
                "skipped": stats["skipped"],
                "seconds": round(stats["total_seconds"], 1),
            }
        )
    )
    return 0
