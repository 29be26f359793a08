"""One-call device check: CUDA/CPU agreement of every diffusion method, batched throughput, denoiser
TFLOP/s, training images/s per preset and device info, within a wall-clock budget (issue 12).

    python -m benchmarks.device_check --out runs/device_check             # CUDA, ~200 s budget
    python -m benchmarks.device_check --out /tmp/dc --tiny                # CPU, a few seconds (tests)

Every measurement checks the time left and is skipped with a recorded reason rather than overrun.
``DIR/device_check.json`` and ``DIR/device_check.md`` are rewritten (atomically) after each section, so
a run killed from outside still leaves the finished sections. Agreement: the same CPU generators (one
per slice, seeded by file and slice) drive the CPU fp32 reference and the CUDA runs, so the two see
identical noise; CUDA runs in strict fp32 (TF32 off) and in bf16 autocast (the default of
``mrdiff recon`` on a GPU). A strict-fp32 path is a pass when ``||x_cuda - x_cpu|| / ||x_cpu|| <= 1e-3``
and its PSNR is within 0.01 dB of CPU; a bf16 path when it loses at most 0.1 dB of PSNR (files with a
target only). The exit status is 0 when the report was written, whatever it says; 2 on bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import torch

from benchmarks import device_sections as ds
from mrdiff.atomic import atomic_path
from mrdiff.config import PRESET_DIR, resolve_config, to_dict
from mrdiff.consistency import REGISTRY
from mrdiff.errors import InputError
from mrdiff.io import list_volumes

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "data_prep" / "demo"
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
# Dense bf16 tensor-core peak from the vendor's data sheets (TFLOP/s, no sparsity); H200 measured ~790.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
TINY_MODEL = [
    "model.channels=[8,8,16,16]",  # four levels: attention at 1/8 size stays cheap on 128^2 demo slices
    "model.res_blocks=[0,1,1,1]",
    "model.attention_levels=[3]",
    "model.mid_blocks=1",
    "model.head_channels=8",
    "model.emb_channels=16",
    "model.groups=4",
    "data.resolution=16",
    "train.batch_size=2",
    "model.patch_size=16",  # patch presets: tiles and patches fit the 16^2 images
    "data.patch_sizes=[16]",
    "data.patches_per_image=1",
]
# section name -> share of the time left when it starts (divided by the shares still to come)
SHARES = {"flops": 1.0, "agreement": 4.0, "throughput": 3.0, "training": 2.0}


def build_parser() -> argparse.ArgumentParser:
    """The command line of the device check."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output directory (device_check.json / .md)")
    p.add_argument("--tiny", action="store_true", help="CPU only, tiny sizes, a few seconds (test suite)")
    p.add_argument("--budget-s", type=float, default=200.0, help="wall-clock budget of the whole check")
    p.add_argument("--data", type=Path, default=DEMO_DIR, help="demo-style .h5 files for the agreement check")
    p.add_argument("--prior", default=None, help="prior for agreement and 128^2 speed (default: shipped)")
    p.add_argument("--nfe", type=int, default=None, help="NFE of the agreement runs (default 10; tiny 1)")
    p.add_argument("--methods", default=",".join(REGISTRY), help="comma-separated agreement methods")
    p.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="device under test (cpu: full sizes on the CPU, to try the full path without a GPU)",
    )
    return p


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def device_info() -> dict:
    """Versions of Python, torch, CUDA, cuDNN and the packages mrdiff imports; the GPU's name and size."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__}
    info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), cpu_count=os.cpu_count())
    info.update(torch_threads=torch.get_num_threads(), cuda_available=torch.cuda.is_available())
    info["packages"] = {
        p: _version(p) for p in ("numpy", "scipy", "fastmri", "sigpy", "PyWavelets", "runstats")
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
        info["mrdiff_commit"] = subprocess.run(git, capture_output=True, text=True, timeout=5).stdout.strip()
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        info.update(
            gpu=prop.name, capability=f"{prop.major}.{prop.minor}", gpu_mem_gib=prop.total_memory / 2**30
        )
        info.update(gpu_count=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported())
        info["tf32_defaults"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
    return info


def peak_tflops(gpu_name: str | None) -> float | None:
    """The data-sheet dense bf16 peak of a known GPU, else None."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu_name and k in gpu_name), None)


def preset_config(name: str, tiny: bool):
    """A preset's config (shrunk to the tiny model and 16^2 images with ``tiny``)."""
    return resolve_config(name, TINY_MODEL if tiny else [])


def random_denoiser(cfg, device, seed: int = 0):
    """A frozen, randomly initialised (seeded) denoiser with ``cfg``'s architecture: speed and FLOPs do
    not depend on the weights."""
    from mrdiff.priors import build_denoiser

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        den = build_denoiser(to_dict(cfg))
    return den.eval().requires_grad_(False).to(device)


class Check:
    """The run: settings, the budget, lazily built denoisers and the report written after each section."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.tiny = args, args.tiny
        self.budget = ds.Budget(args.budget_s - 2.0)  # 2 s kept for the final report
        self.device = torch.device("cpu" if args.tiny else args.device)
        self.cap_s = 0.05 if args.tiny else 1.0  # seconds of timed repeats per measurement (scaled below)
        if args.tiny:
            torch.set_num_threads(1)  # tiny sizes gain nothing from threads; a busy CPU loses a lot
        self.report = {"command": ["python", "-m", "benchmarks.device_check", *sys.argv[1:]]}
        self.report.update(tiny=args.tiny, budget_s=args.budget_s, sections={})
        self._denoisers: dict = {}
        self.slice_s: dict[str, float] = {}  # preset -> seconds of a one-slice forward (flops section)
        self.flops_1: dict[str, int] = {}  # preset -> FLOPs of a one-slice forward
        self.rate: float | None = None  # FLOP/s of the latest forward measurement

    def denoiser(self, key: str, device):
        """``"prior"`` (the agreement prior; tiny: a tiny random one) or a preset name (random weights)."""
        if (key, str(device)) not in self._denoisers:
            if key == "prior" and not self.tiny:
                from mrdiff.priors import load_prior

                den = load_prior(self.args.prior, device)
            else:
                den = random_denoiser(
                    preset_config("brain128-cpu" if key == "prior" else key, self.tiny), device
                )
            self._denoisers[(key, str(device))] = den
        return self._denoisers[(key, str(device))]

    def section(self, name: str, fn) -> None:
        """Run one section in its share of the budget; record its result, skip reason or error.

        The section's setup (``prepare_<name>``: inputs, denoisers, a warm-up forward that pays for CUDA
        context and kernel selection) runs first, out of the overall budget; the section's share is
        then taken of what is left, so fixed costs cannot starve its measurements (on the first H200
        run, setup used up the whole share of two sections before their first row).
        """
        left = list(SHARES)[list(SHARES).index(name) :]
        t0 = time.perf_counter()
        setup_s = 0.0
        if self.device.type == "cuda" and not torch.cuda.is_available():
            result = {"skipped": "CUDA is not available (use --tiny on a CPU-only machine)"}
        elif self.budget.left() < 1.0:
            result = {"skipped": f"budget: {max(0.0, self.budget.left()):.1f} s left"}
        else:
            try:
                getattr(self, f"prepare_{name}", lambda: None)()
                setup_s = time.perf_counter() - t0
                budget = self.budget.share(SHARES[name], sum(SHARES[k] for k in left))
                result = fn(budget)
            except Exception as err:  # a failed section must not cost the other measurements
                result = {
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc()[-3000:],
                }
        result["seconds"] = time.perf_counter() - t0
        result["setup_s"] = setup_s
        self.report["sections"][name] = result
        ds.log(
            f"{name}: done in {result['seconds']:.1f} s"
            + (f" ({result['skipped']})" if "skipped" in result else "")
        )
        self.write()

    def prepare_flops(self) -> None:
        """FLOPs of every preset (meta device), its denoiser, and one warm-up forward on the device."""
        self._sizes = {}
        for name in PRESETS:
            cfg = preset_config(name, self.tiny)
            self._sizes[name] = 32 if self.tiny else cfg.data.resolution
            self.flops_1[name] = ds.meta_flops(cfg, self._sizes[name])
            self.denoiser(name, self.device)
        cheapest = min(PRESETS, key=self.flops_1.get)
        ds._forward(self.denoiser(cheapest, self.device), 1, self._sizes[cheapest], self.device)()
        ds.sync(self.device)

    def prepare_agreement(self) -> None:
        """The demo inputs (maps and CG-SENSE starts, on the CPU) and the prior on both devices."""
        self._inputs = ds.demo_inputs(self.args.data, *((1, "zf", 1) if self.tiny else (8, "sense")))
        self.denoiser("prior", "cpu"), self.denoiser("prior", self.device)

    def flops(self, budget: ds.Budget) -> dict:
        """Achieved TFLOP/s of each preset's denoiser (bf16 autocast forward) and of a bf16 matmul.

        FLOPs are counted on the meta device; presets run in order of FLOPs, and each one's measured
        rate predicts whether the next one's probe fits the budget.
        """
        rows, sizes = [], self._sizes
        for name in sorted(PRESETS, key=self.flops_1.get):
            size, batch, flops_1 = sizes[name], 2 if self.tiny else 32, self.flops_1[name]
            den = self.denoiser(name, self.device)
            kw = {"rate": self.rate, "cap_s": 5 * self.cap_s}
            rows.append(ds.denoiser_tflops(name, den, flops_1, size, batch, self.device, budget, **kw))
            if "slice_s" in rows[-1]:
                self.slice_s[name] = rows[-1]["slice_s"]
                self.rate = flops_1 / rows[-1]["slice_s"]  # one-slice rate: the conservative one
            ds.log(f"flops {rows[-1]}")
        matmul = ds.matmul_tflops(self.device, 64 if self.tiny else 8192, budget, 2 * self.cap_s)
        peak = peak_tflops(self.report["device"].get("gpu"))
        for row in rows:
            if "tflops" in row:
                row["of_matmul"] = row["tflops"] / matmul["tflops"]
                row["of_peak"] = None if peak is None else row["tflops"] / peak
        return {"rows": rows, "matmul": matmul, "peak_bf16_tflops": peak}

    def agreement(self, budget: ds.Budget) -> dict:
        """CUDA (tiny: CPU) vs CPU for every method on the demo slices."""
        methods = [m for m in self.args.methods.split(",") if m]
        nfe = self.args.nfe or (1 if self.tiny else 10)
        # CCDF starts from CG-SENSE (seconds less than its CS-L1 default; agreement needs no better start)
        inputs = self._inputs
        ref, dut = self.denoiser("prior", "cpu"), self.denoiser("prior", self.device)
        out = ds.agreement(ref, dut, self.device, inputs, methods, nfe, budget)
        out["tolerances"] = {
            "fp32_rel": ds.FP32_REL_TOL,
            "fp32_psnr_db": ds.FP32_PSNR_TOL,
            "bf16_psnr_loss_db": ds.BF16_PSNR_LOSS,
        }
        out["compared"] = (
            f"{self.device.type} vs cpu (fp32 reference), NFE {nfe}, CPU generators on both, "
            f"CCDF started from {'zero-filled' if self.tiny else 'CG-SENSE'}"
        )
        if self.tiny:
            out["compared"] += " (tiny: CPU twice; autocast acts on CUDA only, so 'bf16' is fp32 here)"
        return out

    def throughput(self, budget: ds.Budget) -> dict:
        """Slices/s of CCDF/DDS/DPS on synthetic multi-coil k-space."""
        if self.tiny:
            dens = {16: ("prior", self.denoiser("prior", self.device), None)}
            grid = {"nfes": (1, 2), "batches": (1, 2), "coils": {16: 2}}
        else:
            prior = self.denoiser("prior", self.device)
            dens = {128: ("prior", prior, self.slice_s.get("brain128-cpu"))}
            big = self.denoiser("fastmri320-gpu", self.device)
            dens[320] = ("fastmri320-gpu", big, self.slice_s.get("fastmri320-gpu"))
            grid = {"nfes": (10, 50), "batches": (1, 8, 32), "coils": {128: 8, 320: 16}}
        return ds.throughput(dens, {**grid, "methods": ds.THROUGHPUT_METHODS}, self.device, budget)

    def training(self, budget: ds.Budget) -> dict:
        """Images/s and peak memory of each preset's training step."""
        rows = []
        for i, name in enumerate(sorted(PRESETS, key=lambda n: self.flops_1.get(n, 0))):  # cheap first
            reason = budget.skip_reason(3.0)
            if reason:
                rows.append({"preset": name, "skipped": reason})
                continue
            sub = ds.Budget(budget.left() / (len(PRESETS) - i))
            cfg, slice_s = preset_config(name, self.tiny), self.slice_s.get(name)
            if slice_s is None and self.rate and name in self.flops_1:
                slice_s = self.flops_1[name] / self.rate  # not measured: predicted from the FLOPs
            try:
                rows.append({"preset": name, **ds.train_rate(cfg, self.device, sub, 8 * self.cap_s, slice_s)})
            except torch.cuda.OutOfMemoryError as err:
                rows.append({"preset": name, "skipped": f"out of memory: {str(err).splitlines()[0]}"})
            ds.log(f"training {rows[-1]}")
        return {"rows": rows, "data": "random smooth complex images (benchmarks.train_throughput.MemoryData)"}

    def run(self) -> None:
        """All sections in order; the report is rewritten after each."""
        t0 = time.perf_counter()
        self.report["device"] = device_info()
        self.write()
        for name in SHARES:
            self.section(name, getattr(self, name))
        self.report["elapsed_s"] = time.perf_counter() - t0
        self.write()

    def write(self) -> None:
        """``device_check.json`` and ``device_check.md`` in the output directory, atomically."""
        from benchmarks.device_report import markdown

        self.report["summary"] = summary(self.report)
        with atomic_path(self.args.out / "device_check.json") as tmp:
            tmp.write_text(json.dumps(self.report, indent=1, default=str))
        with atomic_path(self.args.out / "device_check.md") as tmp:
            tmp.write_text(markdown(self.report))


def summary(report: dict) -> dict:
    """Pass/fail per method and the list of failed, skipped or errored parts."""
    sections = report.get("sections", {})
    methods = sections.get("agreement", {}).get("summary", {})
    failures = [
        f"{m} {k[:-5]}" for m, e in methods.items() for k in ("fp32_pass", "bf16_pass") if e[k] is False
    ]
    errors = [name for name, s in sections.items() if "error" in s]
    skipped = [name for name, s in sections.items() if "skipped" in s]
    return {"methods": methods, "failures": failures, "errors": errors, "skipped_sections": skipped}


def check_args(args: argparse.Namespace) -> None:
    """Bad input -> InputError (one line, exit 2)."""
    if args.budget_s <= 5:
        raise InputError(f"--budget-s must be more than 5 seconds, got {args.budget_s}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a directory")
    if not args.data.is_dir():
        raise InputError(f"--data {args.data} is not a directory")
    list_volumes(args.data)  # InputError when it holds no .h5 files
    unknown = sorted(set(args.methods.split(",")) - set(REGISTRY) - {""})
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)} (choose from {', '.join(REGISTRY)})")
    if args.nfe is not None and args.nfe < 1:
        raise InputError(f"--nfe must be >= 1, got {args.nfe}")


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when the report was written, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        check = Check(args)
        check.run()
    except InputError as err:
        print(f"device_check: error: {err}", file=sys.stderr)
        return 2
    s = check.report["summary"]
    ds.log(f"wrote {args.out}/device_check.{{json,md}}; failures: {s['failures'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
