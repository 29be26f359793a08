"""Argument helpers shared by verbs: `--set key=value` parsing, devices, output paths."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import tempfile
from pathlib import Path

import torch

from mrdiff.errors import InputError
from mrdiff.overrides import parse_sets

__all__ = [
    "sigterm_as_interrupt",
    "check_destination",
    "output_path",
    "parse_sets",
    "pick_device",
    "return_freed_memory",
]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Have glibc give blocks of ``threshold`` bytes or more back to the system when they are freed.

    By default glibc raises its mmap threshold to the size of each freed mmapped block (up to 32 MiB),
    so later arrays just under that size (one 16-coil 640 x 368 k-space is 30 MB) come from the heap,
    which fragments and is not returned: ``mrdiff recon`` then grew by ~90 MB per slice while holding
    nothing. A fixed threshold keeps peak memory bounded by one batch. A no-op (False) without glibc.
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError, TypeError):
        return False


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


def check_destination(out: Path) -> None:
    """InputError (one line, before any compute) unless the file ``out`` can be written: it is not a
    directory, its nearest existing ancestor is a directory (not a file used as a folder), and a file
    can be created there (a read-only directory, or one whose parent cannot be created, fails)."""
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give an .h5 file name (or a directory input)")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is a file, not a directory")
    try:
        tempfile.TemporaryFile(dir=parent).close()  # a real write probe, removed on close
    except OSError as err:
        reason = err.strerror or err.__class__.__name__
        raise InputError(f"--out {out}: cannot write in {parent} ({reason})") from None


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a scheduler's or ``kill``'s stop) acts like Ctrl-C: the output being
    written is discarded by its atomic write, finished outputs stay, and the command exits 130."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
