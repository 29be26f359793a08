"""Argument helpers shared by verbs: `--set key=value` parsing, devices, output paths."""

from __future__ import annotations

from pathlib import Path

import torch

from mrdiff.errors import InputError
from mrdiff.overrides import parse_sets

__all__ = ["output_path", "parse_sets", "pick_device"]


def pick_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA GPU is available")
    return name


def output_path(inp: Path, out: Path, many: bool) -> Path:
    """Output file for input ``inp``: ``out`` itself for a single ``.h5`` target, else ``out/inp.name``."""
    if not many and out.suffix in (".h5", ".hdf5"):
        return out
    return out / inp.name


def check_outputs_spare_inputs(pairs: list[tuple[Path, Path]]) -> None:
    """InputError (before anything is written) if an output path is one of the input files: ``mrdiff
    recon F --out F`` must never replace a user's k-space with a reconstruction."""
    inputs = {p.resolve() for p, _ in pairs}
    for _, out in pairs:
        if out.resolve() in inputs:
            raise InputError(
                f"--out {out} is an input file; choose another output (inputs are never overwritten)"
            )
