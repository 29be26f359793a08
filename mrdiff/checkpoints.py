"""The one checkpoint file layer: atomic ``torch.save``, safe ``torch.load`` and the file's sha256.

Every checkpoint mrdiff writes (diffusion priors and training states in :mod:`mrdiff.priors.checkpoint`,
the supervised U-Net/VarNet in :mod:`mrdiff.supervised`) goes through :func:`save_torch`: it is written
to a temporary sibling and renamed, so an interrupted save leaves the previous file intact. Every
checkpoint is read through :func:`load_torch` with ``weights_only=True``: loading never executes code
from the file, and a file that is not a torch checkpoint gets a one-line :class:`InputError`.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError

#: leading bytes of file kinds a user may pass by mistake, named in the error
_FOREIGN_MAGIC = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (data or a reconstruction?)",
    b"\x93NUMPY": "a NumPy file",
}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_torch(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically: a reader (or a crash mid-write) never leaves a
    half-written file at ``path``; the previous file stays until the new one is complete."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _foreign_kind(path: Path) -> str | None:
    """A name for a well-known non-torch file kind of ``path`` (by its leading bytes), else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in _FOREIGN_MAGIC.items() if head.startswith(magic)), None)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line InputErrors.

    Raises:
        InputError: missing file, a foreign file kind (HDF5, NumPy), a file holding pickled Python
            objects, or a truncated / unreadable torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    foreign = _foreign_kind(path)
    if foreign is not None:
        raise InputError(f"{what} {path} is {foreign}, not a torch checkpoint (.pt)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling error"
        raise InputError(
            f"{what} {path} holds pickled Python objects, not only tensors and plain types; "
            f"refusing to load it ({first[:160]})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(f"{what} {path} is not a readable torch file ({str(err)[:160]})") from err
