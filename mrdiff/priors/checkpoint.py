"""Checkpoints: tensors and plain types only, written atomically, read with ``weights_only=True``.

A training checkpoint is a dict ``{format, config, step, model, ema, optimizer, elapsed_s, history}``;
a shipped prior is ``{format, config, step, ema, meta}``. Nothing in a file is ever executed: a file
that needs unpickling of arbitrary objects is refused with a clear error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mrdiff.checkpoints import load_torch, save_torch, sha256_file
from mrdiff.config import from_dict, to_dict
from mrdiff.errors import InputError

FORMAT = "mrdiff-prior-v1"

#: ``meta["scale_calibration"]`` of a prior that does not store one: the median ratio
#: ``image_scale(ground truth) / image_scale(5-step CG-SENSE)`` measured for brain128-cpu on 8 middle
#: slices of open-brain-128/val (random 1-D masks, 4x and 8x; range 1.13-1.22). The shipped priors
#: rely on it (their files, whose sha256 is in the model cards, are not rewritten). A prior trained on
#: other data should store its own (``export_prior(..., meta={"scale_calibration": r})``; measure ``r``
#: with ``python -m benchmarks.recon_speed --calibrate``).
DEFAULT_SCALE_CALIBRATION = 1.175


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically (a reader never sees a half-written file; see
    :func:`mrdiff.checkpoints.save_torch`)."""
    save_torch(dict(state, format=FORMAT), path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; InputError if missing, not a checkpoint, or holding pickled objects."""
    state = load_torch(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise InputError(f"checkpoint {path} is not an mrdiff prior (format {FORMAT!r} expected)")
    from_dict(state["config"])  # validates the stored config
    return state


def scale_calibration(state: dict[str, Any], path: str | Path = "prior") -> float:
    """The prior's ``meta["scale_calibration"]`` (default :data:`DEFAULT_SCALE_CALIBRATION`).

    Raises:
        InputError: the stored value is not a positive finite number.
    """
    value = (state.get("meta") or {}).get("scale_calibration", DEFAULT_SCALE_CALIBRATION)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value < float("inf"):
        raise InputError(f"checkpoint {path}: meta.scale_calibration must be a positive number")
    return value


def check_compatible(
    stored: dict[str, Any], wanted: dict[str, Any], path: str | Path, grow: bool = False
) -> None:
    """Raise InputError if the stored model/resolution differs from ``wanted`` (both config dicts).

    Compares every ``model.*`` key and (whole-image priors only; a patch prior is resolution-free)
    ``data.resolution``, after filling keys the stored config predates with their defaults; names the
    first differences. With ``grow``, a larger
    ``model.mid_blocks`` than stored is accepted (see :func:`grown_weights`).
    """
    stored = to_dict(from_dict(stored))
    diffs = []
    for key, value in wanted["model"].items():
        if grow and key == "mid_blocks" and value >= stored["model"][key]:
            continue
        if stored["model"].get(key) != value:
            diffs.append(f"model.{key}: checkpoint {stored['model'].get(key)!r}, requested {value!r}")
    patch = stored["model"].get("family") == "patch"  # a patch prior is resolution-free
    if not patch and stored["data"]["resolution"] != wanted["data"]["resolution"]:
        res_s, res_w = stored["data"]["resolution"], wanted["data"]["resolution"]
        diffs.append(f"data.resolution: checkpoint {res_s}, requested {res_w}")
    if diffs:
        raise InputError(f"checkpoint {path} does not match the requested model: " + "; ".join(diffs[:3]))


_MID_KEY = re.compile(r"^net\.mid\.(?:blocks|attn)\.(\d+)\.")


def grown_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], stored_mid: int):
    """``weights`` plus ``module``'s own initial tensors for the mid blocks beyond ``stored_mid``.

    The model is deepened at its lowest resolution without changing its function: every new residual
    block and attention layer ends in a zero-initialised layer (as in ``mrdiff.priors.unet``), so it
    starts as the identity and is then trained (function-preserving growth, Chen et al., "Net2Net",
    ICLR 2016). Returns a new dict; other missing keys stay missing (``load_weights`` reports them).
    """
    out = dict(weights)
    for key, tensor in module.state_dict().items():
        match = _MID_KEY.match(key)
        if key not in out and match and int(match.group(1)) >= stored_mid:
            out[key] = tensor.detach().clone()
    return out


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict`` with a one-line InputError on missing/unexpected keys or shape mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    if missing or extra:
        raise InputError(
            f"checkpoint {path}: weights do not fit the model in its config "
            f"(missing {missing[:2]}, unexpected {extra[:2]})"
        )
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise InputError(
                f"checkpoint {path}: weight '{key}' has shape {tuple(tensor.shape)}, "
                f"the model in its config needs {tuple(own[key].shape)} (wrong channels or width)"
            )
    module.load_state_dict(weights)


def export_prior(
    state: dict[str, Any],
    path: str | Path,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> str:
    """Write the EMA weights + config of a training checkpoint as a small prior file; return sha256.

    ``dtype=torch.float16`` halves the file (shipped priors); loading casts back to float32, and the
    round trip changes a weight by at most 2^-11 of its magnitude (fp16 has an 11-bit significand).
    """
    prior = {
        "config": state["config"],
        "step": int(state["step"]),
        "ema": {
            k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in state["ema"].items()
        },
        "meta": dict(meta or {}, storage=str(dtype).replace("torch.", "")),
    }
    save_checkpoint(prior, path)
    return sha256_file(path)
