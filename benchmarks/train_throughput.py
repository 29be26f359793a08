"""Training throughput of the prior: images/s of `mrdiff.training` steps vs a bare PyTorch loop.

Prints images/s on CPU (fp32) and, when CUDA exists, on GPU in fp32 and bf16 autocast, plus the
overhead of the full training step (augmentation, EDM loss, clipping, EMA) over a bare loop of the
same model (random tensors in, MSE out, AdamW). Synthetic images; no data files needed.

    .venv/bin/python -m benchmarks.train_throughput --config brain128-cpu --steps 10
"""

from __future__ import annotations

import argparse
import time

import torch

from mrdiff.config import from_dict, replace, resolve_config, to_dict
from mrdiff.data import training_batch
from mrdiff.noise import make_generator
from mrdiff.training import init_state, train_step


class MemoryData:
    """In-memory stand-in for :class:`mrdiff.data.SliceDataset`: random smooth complex images."""

    def __init__(self, n: int, size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        low = torch.randn(n, 2, size // 8, size // 8, generator=g)
        up = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")
        self.images = torch.complex(up[:, 0], up[:, 1]).to(torch.complex64)

    def __len__(self) -> int:
        return self.images.shape[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mrdiff(cfg, data, device: torch.device, steps: int, warmup: int) -> float:
    """images/s of mrdiff's training step (batch assembly + augmentation included)."""
    state = init_state(cfg, device)
    b, c = cfg.train.batch_size, cfg.model.in_channels
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x0 = training_batch(data, cfg.data, b, c, make_generator(i)).to(device)
        train_step(state, state.model, x0, cfg, make_generator(i, device))
    _sync(device)
    return steps * b / (time.perf_counter() - t0)


def time_bare(cfg, device: torch.device, steps: int, warmup: int, bf16: bool) -> float:
    """images/s of a bare loop: same network, random input, MSE, AdamW; nothing else."""
    model = init_state(cfg, device).model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    r, b = cfg.data.resolution, cfg.train.batch_size
    x = torch.randn(b, cfg.model.in_channels, r, r, device=device)
    sigma = torch.ones(b, device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = (model(x, sigma) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * b / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="brain128-cpu", help="preset name or YAML")
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=0, help="override train.batch_size")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = resolve_config(args.config, [])
    if args.batch:
        cfg = replace(cfg, train=replace(cfg.train, batch_size=args.batch))
    cfg = from_dict(to_dict(cfg))
    data = MemoryData(64, cfg.data.resolution)
    params = sum(p.numel() for p in init_state(cfg, torch.device("cpu")).model.parameters())
    shape = f"batch {cfg.train.batch_size}, {cfg.data.resolution}^2"
    print(f"config {cfg.name}: {params / 1e6:.2f}M parameters, {shape}")
    cpu = torch.device("cpu")
    fp32 = replace(cfg, train=replace(cfg.train, precision="fp32"))
    bf16 = replace(cfg, train=replace(cfg.train, precision="bf16"))
    ours = time_mrdiff(fp32, data, cpu, args.steps, args.warmup)
    bare = time_bare(fp32, cpu, args.steps, args.warmup, bf16=False)
    print(f"cpu fp32 ({args.threads} thr): mrdiff {ours:.2f} img/s, bare loop {bare:.2f} img/s")
    print(f"  training-loop overhead {100 * (bare / ours - 1):+.1f}%")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        for name, c, autocast in [("fp32", fp32, False), ("bf16", bf16, True)]:
            ours = time_mrdiff(c, data, gpu, args.steps, args.warmup)
            bare = time_bare(c, gpu, args.steps, args.warmup, bf16=autocast)
            overhead = 100 * (bare / ours - 1)
            print(f"cuda {name}: mrdiff {ours:.1f} img/s, bare {bare:.1f} img/s, overhead {overhead:+.1f}%")
    else:
        print("cuda: not available (GPU fp32 vs bf16 not measured)")


if __name__ == "__main__":
    main()
