"""`mrdiff train`: train the unconditional diffusion prior on prepared HDF5 slices."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from mrdiff.atomic import atomic_path
from mrdiff.config import Config, apply_overrides, from_dict, load_yaml, resolve_config, to_dict
from mrdiff.errors import InputError
from mrdiff.noise import make_generator, seed_for
from recon.verbs import SUMMARIES

HELP = SUMMARIES["train"]


def save_grid(images: np.ndarray, path: str | Path, vmax: float = 1.2) -> None:
    """Write magnitude images (N, H, W) as one grayscale PNG grid (values clipped to [0, vmax])."""
    n, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (h + 2), cols * (w + 2)), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = img
    pixels = (np.clip(grid / vmax, 0, 1) * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _data_dirs(root: Path) -> tuple[Path, Path | None]:
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist")
    train = root / "train" if (root / "train").is_dir() else root
    val = root / "val" if (root / "val").is_dir() and any((root / "val").glob("*.h5")) else None
    return train, val


def _setup_device(choice: str) -> torch.device:
    """Device for this process; initialises DDP when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if choice == "auto" else choice == "cuda"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def preview_samples(denoiser, cfg: Config) -> torch.Tensor:
    """``train.preview_n`` unconditional samples of ``denoiser`` (deterministic Heun, ``train.preview_steps``
    steps, one generator per sample seeded from ``train.seed``), complex ``(n, H, W)`` on the CPU: the
    full resolution for a whole-image prior, ``train.preview_size`` for a patch prior."""
    from mrdiff.sampling import sample_prior  # here, so that starting `mrdiff train` skips the samplers

    t = cfg.train
    size = (cfg.data.resolution,) * 2 if cfg.model.family == "image" else tuple(t.preview_size)
    gens = [make_generator(seed_for(t.seed, "preview", i), denoiser.device) for i in range(t.preview_n)]
    return sample_prior(denoiser, size, t.preview_steps, gens, "heun").cpu()


class _Reporter:
    """Prints progress, appends ``log.jsonl`` and writes preview grids."""

    def __init__(self, out_dir: Path, cfg: Config):
        self.out_dir, self.cfg = out_dir, cfg

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "preview":
            mag = preview_samples(info["denoiser"], self.cfg).abs()
            path = self.out_dir / "samples" / f"step{info['step']:07d}.png"
            save_grid(mag.numpy(), path)
            print(f"step {info['step']}: preview grid {path}", flush=True)
            return
        if event == "step":
            print(
                f"step {info['step']:6d}  loss {info['loss']:.4f}  lr {info['lr']:.2e}  "
                f"{info['images_per_s']:.1f} img/s  {info['threads']} thr  {info['elapsed_s'] / 60:.1f} min",
                flush=True,
            )
        elif event == "val":
            bands = "  ".join(f"{k} {v:.2e}" for k, v in info.items() if k.startswith("mse@"))
            print(f"step {info['step']:6d}  val_loss {info['val_loss']:.4f}  {bands}", flush=True)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"event": event, **info}) + "\n")


def trim_log(log: Path, last_step: int) -> None:
    """Drop the ``log.jsonl`` lines of steps after ``last_step`` (the checkpoint a resumed run starts
    from): the killed run logged them, the resumed run logs them again, and each step should appear
    once. Lines without a step are kept; a line cut short by the kill is dropped."""
    if not log.is_file():
        return
    keep = [line for line in log.read_text().splitlines(keepends=True) if _log_step(line) <= last_step]
    with atomic_path(log) as tmp:
        tmp.write_text("".join(keep))


def _log_step(line: str) -> float:
    """The ``step`` of one log line: ``-inf`` when it has none, ``inf`` when it is not a JSON object
    (cut short by a kill)."""
    try:
        return float(json.loads(line).get("step", float("-inf")))
    except (ValueError, AttributeError):
        return float("inf")


def _lock_run_dir(out_dir: Path) -> Path:
    """Claim ``out_dir`` for this process; InputError if another live process holds it."""
    lock = out_dir / ".lock"
    if lock.is_file():
        try:
            pid = int(lock.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            pid = 0
        except PermissionError:
            pass
        if pid and pid != os.getpid():
            raise InputError(f"{out_dir} is in use by a running training process (pid {pid})")
    lock.write_text(str(os.getpid()))
    return lock


def _new_config(config: str | None, overrides: list[str]) -> Config:
    """The config of a new run: ``--config`` (required) with the ``--set`` overrides."""
    if config is None:
        raise InputError("--config is required (a preset or a YAML file) unless --resume continues a run")
    return resolve_config(config, overrides)


def _saved_config(out_dir: Path) -> dict[str, Any]:
    """The config a run was started with: ``RUN_DIR/config.yaml``, or the one stored in ``last.pt`` for a
    run directory without it (written by :func:`mrdiff.training.train` called directly)."""
    path = out_dir / "config.yaml"
    if path.is_file():
        return load_yaml(path)
    from mrdiff.priors.checkpoint import load_checkpoint

    return load_checkpoint(out_dir / "last.pt")["config"]


def _resume_config(out_dir: Path, config: str | None, overrides: list[str]) -> Config:
    """The config of a resumed run: the run's saved config with the ``--set`` overrides on top.

    A ``--config`` given as well must agree with it in ``model`` and ``data`` (both with the same
    ``--set``), so that repeating the starting command plus ``--resume`` works, but a preset that
    differs from the run is refused instead of silently changing what is trained.
    """
    cfg = from_dict(apply_overrides(_saved_config(out_dir), overrides))
    if config is not None:
        diffs = _config_diffs(cfg, resolve_config(config, overrides), ("model", "data"))
        if diffs:
            raise InputError(
                f"--resume: --config {config} differs from the config of run {out_dir} in "
                f"{'; '.join(diffs[:3])}; drop --config to continue the run as it was, or change "
                "settings with --set"
            )
    return cfg


def _config_diffs(run: Config, given: Config, sections: tuple[str, ...]) -> list[str]:
    """``"section.key (run X, --config Y)"`` for each key of ``sections`` in which the configs differ."""
    a, b = to_dict(run), to_dict(given)
    return [
        f"{section}.{key} (run {value!r}, --config {b[section][key]!r})"
        for section in sections
        for key, value in a[section].items()
        if b[section][key] != value
    ]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrdiff train", description=HELP)
    p.add_argument(
        "--config",
        default=None,
        help="preset name (mrdiff/presets/*.yaml) or a YAML file; not needed with --resume, which continues "
        "with RUN_DIR/config.yaml (if given, its model and data sections must match the run's)",
    )
    p.add_argument("--data", required=True, help="prepared data root (with train/ and val/) or a dir of .h5")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, samples/)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN_DIR/last.pt with the run's own config (RUN_DIR/config.yaml) plus any --set, "
        "e.g. --set train.max_minutes=120 to extend it",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="PRIOR",
        help="fine-tune: start from this prior's weights (e.g. mrdiff/weights/brain128-cpu.pt); same "
        "--config model, except that model.mid_blocks may be larger (new blocks start as the identity)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    return p


def main(argv: list[str]) -> int:
    """Parse arguments, load data, train, and report where the checkpoint is."""
    from mrdiff.data import SliceDataset
    from mrdiff.training import train

    args = _parser().parse_args(argv)
    out_dir = Path(args.out)
    if args.resume and args.init:
        raise InputError("--init starts a new run from a prior; --resume continues RUN_DIR: choose one")
    if args.init and not Path(args.init).is_file():
        raise InputError(f"--init: {args.init} does not exist")
    if args.resume and not (out_dir / "last.pt").is_file():
        raise InputError(f"--resume: {out_dir / 'last.pt'} does not exist")
    if not args.resume and (out_dir / "last.pt").exists():
        raise InputError(f"{out_dir} already holds a run; use --resume or another --out")
    if args.resume:
        cfg = _resume_config(out_dir, args.config, args.set)
    else:
        cfg = _new_config(args.config, args.set)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    train_dir, val_dir = _data_dirs(Path(args.data))
    train_data = SliceDataset(train_dir, cfg.data.resolution, cfg.data.min_rel_scale)
    val_data = SliceDataset(val_dir, cfg.data.resolution, cfg.data.min_rel_scale) if val_dir else None
    device = _setup_device(args.device)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    say = print if rank == 0 else (lambda *a, **k: None)
    lock = _lock_run_dir(out_dir) if rank == 0 else None
    if rank == 0 and args.resume:
        from mrdiff.priors.checkpoint import load_checkpoint

        trim_log(out_dir / "log.jsonl", int(load_checkpoint(out_dir / "last.pt")["step"]))
    if rank == 0:
        with atomic_path(out_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    n_val = len(val_data) if val_data else 0
    per_process = f"{cfg.train.batch_size / world:g} per process"
    say(f"training '{cfg.name}' on {len(train_data)} slices ({n_val} val) on {device} x {world}", flush=True)
    say(f"global batch {cfg.train.batch_size} ({per_process}), lr {cfg.train.lr:g}", flush=True)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        state = train(
            cfg,
            train_data,
            val_data,
            out_dir,
            device=device,
            resume=args.resume,
            init=args.init,
            callback=_Reporter(out_dir, cfg),
            stop_requested=lambda: stop["signal"] != 0,
        )
        if world > 1:  # every rank leaves together before the group is torn down (rank 0 may still be
            torch.distributed.barrier()  # saving); a rank once aborted at exit under gloo, see the commit
    except BaseException:
        if rank == 0 and created and not (out_dir / "last.pt").exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # a failed start leaves no half-made run folder
        raise
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if lock is not None:
            lock.unlink(missing_ok=True)
        if world > 1:
            torch.distributed.destroy_process_group()
    say(
        f"stopped at step {state.step} after {state.elapsed_s / 60:.1f} min; checkpoint {out_dir / 'last.pt'}"
    )
    if stop["signal"]:
        say("interrupted: continue with --resume", file=sys.stderr)
        return 128 + stop["signal"]
    return 0
