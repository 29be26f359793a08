"""DDP on CPU: `torchrun --standalone --nproc_per_node=2 -m recon.cli train` with gloo (issue 12, item 1).

``train.batch_size`` is the global batch and every image is seeded by its position in it, so two
processes must reach the weights of one process with the same config (float summation order aside);
only rank 0 may write into the run directory (checked with an audit hook in every worker); ``--resume``
under torchrun must continue at the saved step; killing rank 0 mid-run must leave ``last.pt`` loadable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_mock

from mrdiff.config import from_dict
from mrdiff.priors.checkpoint import load_checkpoint
from mrdiff.training import init_state
from recon.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny-ddp",
    "model": {
        "channels": [8, 16],
        "res_blocks": [1, 1],
        "attention_levels": [1],
        "mid_blocks": 1,
        "head_channels": 8,
        "emb_channels": 16,
        "groups": 4,
    },
    "data": {"resolution": 16},
    "train": {
        "batch_size": 4,  # global: 2 per process under torchrun
        "lr": 2e-3,
        "warmup_steps": 1,
        "max_steps": 4,
        "log_every": 1,
        "ckpt_every": 2,
        "val_every": 2,
        "val_images": 2,
        "preview_every": 4,
        "preview_n": 2,
        "preview_steps": 2,
        "threads": 1,
    },
}
# Every worker records the files it opens for writing (or renames) under MRDIFF_AUDIT_OUT.
AUDIT = """
import os, sys
_out, _dir = os.environ.get("MRDIFF_AUDIT_OUT"), os.environ.get("MRDIFF_AUDIT_DIR")
_rank = os.environ.get("RANK")
if _out and _dir and _rank is not None:
    _log = open(os.path.join(_dir, "rank%s.txt" % _rank), "a", buffering=1)
    _writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _writes)
            if writing and os.path.abspath(path).startswith(_out):
                _log.write(os.path.abspath(path) + "\\n")
        elif event == "os.rename" and os.path.abspath(args[1]).startswith(_out):
            _log.write(os.path.abspath(args[1]) + "\\n")

    sys.addaudithook(_hook)
"""


def torchrun(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 -m recon.cli train ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "recon.cli", "train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _env(tmp: Path, out: Path) -> dict:
    audit = tmp / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": f"{audit}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    return {**env, "MRDIFF_AUDIT_OUT": str(out.resolve()), "MRDIFF_AUDIT_DIR": str(audit)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process run and a 2-process torchrun run of the same config: 4 steps, then resumed to 6."""
    tmp = tmp_path_factory.mktemp("ddp")
    for split, files in (("train", 2), ("val", 1)):
        (tmp / "data" / split).mkdir(parents=True)
        for i in range(files):
            write_mock(
                tmp / "data" / split / f"v{i}.h5", "prepared", slices=3, H=16, W=16, seed=i + 10 * files
            )
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    base = ["--config", str(tmp / "tiny.yaml"), "--data", str(tmp / "data"), "--device", "cpu"]
    resume = ["--resume", "--set", "train.max_steps=6"]
    out = {"single": tmp / "single", "ddp": tmp / "ddp"}
    assert main(["train", *base, "--out", str(out["single"])]) == 0
    single4 = load_checkpoint(out["single"] / "last.pt")
    assert main(["train", *base, "--out", str(out["single"]), *resume]) == 0
    env = _env(tmp, out["ddp"])
    first = torchrun([*base, "--out", str(out["ddp"])], env)
    assert first.returncode == 0, first.stderr[-3000:]
    ddp4 = load_checkpoint(out["ddp"] / "last.pt")
    again = torchrun([*base, "--out", str(out["ddp"]), *resume], env)
    assert again.returncode == 0, again.stderr[-3000:]
    return {"tmp": tmp, "base": base, "out": out, "single4": single4, "ddp4": ddp4, "stdout": again.stdout}


def assert_same_weights(a: dict, b: dict) -> None:
    """Equal up to float summation order: every tensor within 1% of how far training moved it from the
    (seeded) initial weights. AdamW's first steps are ~lr * sign(g), so gradient elements that nearly
    cancel over the batch turn 1e-7 summation differences into ~1e-5 weight differences (observed max
    0.13% of the movement); a different global batch or noise would differ by ~100% of it."""
    w0 = init_state(from_dict(TINY), torch.device("cpu")).model.state_dict()
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys() == w0.keys()
        for k in a[part]:
            moved = float((a[part][k].double() - w0[k].double()).abs().max())
            diff = float((a[part][k].double() - b[part][k].double()).abs().max())
            assert diff <= 1e-2 * moved + 1e-7, f"{part}.{k}: differs by {diff:.3g}, moved {moved:.3g}"


def test_two_processes_match_one_with_the_same_global_batch(runs):
    assert runs["ddp4"]["step"] == runs["single4"]["step"] == 4
    assert_same_weights(runs["ddp4"], runs["single4"])
    final = {k: load_checkpoint(v / "last.pt") for k, v in runs["out"].items()}
    assert final["ddp"]["step"] == final["single"]["step"] == 6
    assert_same_weights(final["ddp"], final["single"])


def test_resume_under_torchrun_continues_at_the_saved_step(runs):
    log = [json.loads(line) for line in (runs["out"]["ddp"] / "log.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in log if e["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]  # one line per step: rank 1 logs nothing, resume starts at 5
    assert [e["step"] for e in log if e["event"] == "checkpoint"] == [2, 4, 6]
    assert "global batch 4 (2 per process)" in runs["stdout"]


def test_only_rank_zero_writes(runs):
    audit = runs["tmp"] / "audit"
    rank0 = (audit / "rank0.txt").read_text().splitlines()
    assert not (audit / "rank1.txt").exists() or not (audit / "rank1.txt").read_text().strip()
    out = runs["out"]["ddp"].resolve()
    written = {Path(p).name for p in rank0}
    assert {"last.pt", "prior.pt", "log.jsonl", "config.yaml", "step0000004.png"} <= written
    assert all(Path(p).is_relative_to(out) for p in rank0)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step0000004.png"]


def test_killed_rank_leaves_the_last_checkpoint_loadable(runs):
    out = runs["tmp"] / "killed"
    args = [*runs["base"], "--out", str(out), "--set", "train.max_steps=100000"]
    args += ["--set", "train.preview_every=0", "--set", "train.val_every=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "recon.cli", "train", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        # last.pt and then prior.pt are written at each checkpoint: wait for both (under load a kill
        # right after last.pt appeared could land before the first prior.pt)
        done = lambda: (out / "last.pt").exists() and (out / "prior.pt").exists()  # noqa: E731
        while not done() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done(), "no checkpoint before the deadline"
        os.kill(int((out / ".lock").read_text()), signal.SIGKILL)  # rank 0: the writer
        assert proc.wait(timeout=90) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] >= 2 and ckpt["step"] % 2 == 0
    assert load_checkpoint(out / "prior.pt")["config"]["train"]["batch_size"] == 4
    resumed = main(
        [
            "train",
            *runs["base"],
            "--out",
            str(out),
            "--resume",
            "--set",
            f"train.max_steps={ckpt['step'] + 1}",
        ]
    )
    assert resumed == 0 and load_checkpoint(out / "last.pt")["step"] == ckpt["step"] + 1
