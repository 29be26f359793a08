"""Training loop: loss falls, resume is exact, config overrides are checked, module boundaries hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from mrdiff.config import Config, apply_overrides, from_dict, to_dict
from mrdiff.data import SliceDataset, training_batch
from mrdiff.errors import InputError
from mrdiff.losses import edm_loss
from mrdiff.noise import make_generator
from mrdiff.priors.checkpoint import load_checkpoint
from mrdiff.training import init_from_prior, init_state, restore, train, train_step

TINY = {
    "name": "tiny",
    "model": {
        "channels": [8, 16],
        "res_blocks": [1, 1],
        "attention_levels": [1],
        "head_channels": 8,
        "emb_channels": 16,
        "groups": 4,
    },
    "data": {"resolution": 32},
    "train": {
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_steps": 1,
        "max_steps": 6,
        "log_every": 2,
        "ckpt_every": 3,
        "val_every": 3,
        "val_images": 4,
        "preview_every": 0,
    },
}


def write_volumes(root: Path, n_files: int = 2, slices: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Tiny contract-1 style volumes: ``image`` complex64 (S, H, W) ellipse phantoms with smooth phase."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        vol = np.zeros((slices, size, size), np.complex64)
        for s in range(slices):
            for _ in range(3):
                cx, cy = rng.uniform(-0.3, 0.3, 2)
                a, b = rng.uniform(0.2, 0.7, 2)
                vol[s] += rng.uniform(0.3, 1.0) * (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 < 1)
            vol[s] *= np.exp(1j * rng.uniform(-1, 1) * xx)
        with h5py.File(root / f"vol{f}.h5", "w") as h5:
            h5["image"] = vol
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_loss_falls_on_fixed_batch(tmp_path):
    cfg = from_dict(TINY)
    data = SliceDataset(write_volumes(tmp_path / "train"), 32)
    x0 = training_batch(data, cfg.data, 4, 2, make_generator(0))
    state = init_state(cfg, torch.device("cpu"))

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(edm_loss(state.model, x0, make_generator(1), sigma_data=0.5).mean())

    before = fixed_loss()
    for _ in range(15):
        train_step(state, state.model, x0, cfg, make_generator(1))
    assert fixed_loss() < 0.7 * before


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return {
        **{f"m.{k}": v for k, v in state["model"].items()},
        **{f"e.{k}": v for k, v in state["ema"].items()},
    }


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = from_dict(TINY)
    data = SliceDataset(write_volumes(tmp_path / "train"), 32)
    train(cfg, data, None, tmp_path / "full")
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    partial = train(cfg, data, None, tmp_path / "split", stop_requested=stop_after_two)
    assert partial.step == 2
    resumed = train(cfg, data, None, tmp_path / "split", resume=True)
    assert resumed.step == 6
    full, split = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key


def test_set_rejects_unknown_keys():
    with pytest.raises(InputError, match="unknown config key 'train.bach_size'"):
        apply_overrides(TINY, ["train.bach_size=4"])
    with pytest.raises(InputError, match="unknown config key 'optim.lr'"):
        apply_overrides(TINY, ["optim.lr=1"])
    with pytest.raises(InputError, match="unknown config key 'model.width'"):
        from_dict({"model": {"width": 3}})
    with pytest.raises(InputError, match="expects an integer"):
        from_dict(apply_overrides(TINY, ["train.batch_size=1.5"]))
    cfg = from_dict(apply_overrides(TINY, ["train.lr=1e-3", "model.channels=[8,24]"]))
    assert cfg.train.lr == 1e-3 and cfg.model.channels == (8, 24)
    assert from_dict(to_dict(cfg)) == cfg and isinstance(Config(), Config)


def test_training_does_not_import_sampling():
    code = (
        "import sys, mrdiff.training, mrdiff.losses, mrdiff.data, recon.verbs.train;"
        "bad = [m for m in sys.modules if m.startswith(('mrdiff.sampling', 'mrdiff.consistency'))];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_verb_end_to_end(tmp_path):
    from recon.cli import main

    write_volumes(tmp_path / "data" / "train")
    write_volumes(tmp_path / "data" / "val", n_files=1, seed=1)
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(tmp_path / "data")]
    args += ["--out", str(tmp_path / "run"), "--set", "train.preview_every=6", "--set", "train.preview_n=2"]
    args += ["--set", "train.preview_steps=2"]
    assert main(args) == 0
    assert (tmp_path / "run" / "samples" / "step0000006.png").is_file()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(e["event"] == "val" and "mse@0.1" in e for e in log)
    assert main(args) == 2  # refuses to overwrite an existing run
    assert main(args[:-6] + ["--set", "train.max_steps=7", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 7
    assert main(args[:-6] + ["--resume", "--init", str(tmp_path / "run" / "prior.pt")]) == 2  # one or other
    fresh = ["--out", str(tmp_path / "tuned"), "--set", "train.max_steps=1"]
    assert main(args[:5] + fresh + ["--init", str(tmp_path / "missing.pt")]) == 2
    assert main(args[:5] + fresh + ["--init", str(tmp_path / "run" / "prior.pt")]) == 0


def test_init_from_prior_fine_tunes_from_its_weights(tmp_path):
    from mrdiff.priors import load_prior

    cfg = from_dict(TINY)
    data = SliceDataset(write_volumes(tmp_path / "train"), 32)
    train(cfg, data, None, tmp_path / "base")
    prior = load_checkpoint(tmp_path / "base" / "prior.pt")
    state = init_state(cfg, torch.device("cpu"))
    init_from_prior(state, tmp_path / "base" / "prior.pt", cfg)
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, prior["ema"][key]), key
    assert load_prior(tmp_path / "base" / "prior.pt") is not None
    short = from_dict({**TINY, "train": {**TINY["train"], "max_steps": 2}})
    tuned = train(short, data, None, tmp_path / "tuned", init=tmp_path / "base" / "prior.pt")
    assert tuned.step == 2  # a new run: step count and optimizer start afresh
    wider = from_dict({**TINY, "model": {**TINY["model"], "channels": [8, 24]}})
    with pytest.raises(InputError, match="does not match"):
        init_from_prior(init_state(wider, torch.device("cpu")), tmp_path / "base" / "prior.pt", wider)


def test_init_grows_mid_blocks_without_changing_the_function(tmp_path):
    """A prior trained with 2 mid blocks starts a 4-mid-block model as exactly the same denoiser."""
    from mrdiff.priors import load_prior

    cfg = from_dict(TINY)
    train(cfg, SliceDataset(write_volumes(tmp_path / "train"), 32), None, tmp_path / "base")
    prior_path = tmp_path / "base" / "prior.pt"
    deeper = from_dict({**TINY, "model": {**TINY["model"], "mid_blocks": 4}})
    state = init_state(deeper, torch.device("cpu"))
    init_from_prior(state, prior_path, deeper)
    x, sigma = torch.randn(3, 2, 32, 32), torch.tensor([0.05, 0.5, 5.0])
    with torch.no_grad():
        expected = load_prior(prior_path).model(x, sigma)
        assert torch.allclose(state.model(x, sigma), expected, atol=1e-6)
        assert torch.allclose(state.ema(x, sigma), expected, atol=1e-6)
    assert len(state.model.net.mid.blocks) == 4
    shallower = from_dict({**TINY, "model": {**TINY["model"], "mid_blocks": 1}})
    with pytest.raises(InputError, match="mid_blocks"):  # only growth is function-preserving
        init_from_prior(init_state(shallower, torch.device("cpu")), prior_path, shallower)
    with pytest.raises(InputError, match="mid_blocks"):  # --resume never changes the model
        restore(init_state(deeper, torch.device("cpu")), tmp_path / "base" / "last.pt", deeper)


def test_checkpoints_written_before_mid_blocks_existed_still_load(tmp_path):
    """A stored config without ``model.mid_blocks`` means the 2 mid blocks every older prior has."""
    from mrdiff.priors import load_prior
    from mrdiff.priors.checkpoint import save_checkpoint

    cfg = from_dict(TINY)
    train(cfg, SliceDataset(write_volumes(tmp_path / "train"), 32), None, tmp_path / "base")
    old = load_checkpoint(tmp_path / "base" / "prior.pt")
    del old["config"]["model"]["mid_blocks"]
    save_checkpoint(old, tmp_path / "old.pt")
    assert len(load_prior(tmp_path / "old.pt").model.net.mid.blocks) == 2
    init_from_prior(init_state(cfg, torch.device("cpu")), tmp_path / "old.pt", cfg)


def _short_run(tmp_path: Path, *sets: str) -> list[str]:
    """Start a 2-step run of TINY in ``tmp_path/run`` with ``sets`` as --set; the arguments without
    --config, so a test can resume with or without it."""
    from recon.cli import main

    write_volumes(tmp_path / "data" / "train", n_files=1)
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))
    common = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    start = [*common, "--config", str(tmp_path / "tiny.yaml"), "--set", "train.max_steps=2"]
    assert main([*start, *(x for s in sets for x in ("--set", s))]) == 0
    return common


def test_resume_continues_with_the_runs_own_config(tmp_path):
    """``--resume`` without ``--config`` trains with RUN_DIR/config.yaml, --set overrides of the first
    run included; a --set given on resume applies on top of it."""
    from recon.cli import main

    common = _short_run(tmp_path, "train.lr=1e-3", "data.flips=false")
    assert main([*common, "--resume", "--set", "train.max_steps=3"]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 3
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for cfg in (ckpt["config"], saved):
        assert cfg["train"]["lr"] == 1e-3 and cfg["data"]["flips"] is False
        assert cfg["train"]["max_steps"] == 3 and cfg["model"]["channels"] == [8, 16]


def test_resume_accepts_the_starting_command_and_refuses_another_model_or_data(tmp_path, capsys):
    """The starting --config and --set plus --resume agree with the run; a --config whose model or data
    section differs is one line naming the key (exit 2) and leaves the run untouched."""
    from recon.cli import main
    from recon.verbs.train import _resume_config

    common = _short_run(tmp_path, "data.flips=false")
    run, tiny = tmp_path / "run", str(tmp_path / "tiny.yaml")
    same = _resume_config(run, tiny, ["data.flips=false", "train.max_steps=2"])
    assert same == from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    wider = tmp_path / "wider.yaml"
    wider.write_text(json.dumps({**TINY, "model": {**TINY["model"], "channels": [8, 24]}}))
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "last.pt")}
    capsys.readouterr()
    for config, key in ((tiny, "data.flips (run False, --config True)"), (str(wider), "model.channels")):
        assert main([*common, "--config", config, "--resume", "--set", "train.max_steps=3"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and key in err and "drop --config" in err, err
    assert {name: (run / name).read_bytes() for name in before} == before


def test_new_run_needs_config(tmp_path, capsys):
    from recon.cli import main

    write_volumes(tmp_path / "data" / "train", n_files=1)
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--config is required" in err
    assert not (tmp_path / "run").exists()
