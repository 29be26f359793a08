"""What an output file records so that the file alone is enough to rerun it.

:func:`run_record` gives plain values for :func:`mrdiff.io.write_reconstruction`'s attributes: the
method with its **resolved** parameters (defaults merged with the user's values, coerced as the
method reads them), the implicit CCDF initialiser and its parameters, NFE, K samples, sampler seed,
the prior (sha256, file, scale calibration), the mask (kind, acceleration, centre fraction, seed, or
the file's own) and the software (mrdiff version, git commit when run from a checkout).
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import h5py

from mrdiff import __version__
from mrdiff.pipeline import (
    AutoSpec,
    MaskSpec,
    MethodSpec,
    diffusion_methods,
    init_method,
    method_defaults,
    split_init,
)
from mrdiff.priors.checkpoint import DEFAULT_SCALE_CALIBRATION


def resolved_params(name: str, params: dict) -> dict:
    """``params`` of method ``name`` with every default filled in (``init`` and ``init_*`` left
    out; see :func:`resolved_init`). A diffusion method's values are the ones its constructor keeps."""
    own = split_init(params)[0]
    cls = diffusion_methods().get(name)
    if cls is not None:
        return dict(cls(**own).params)
    return {**method_defaults(name), **own}


def resolved_init(name: str, params: dict) -> dict | None:
    """``{"method", "params"}`` of the baseline a diffusion method starts from (CCDF's implicit
    ``cs-l1`` included), or None for a method that starts from noise (recorded as ``{}``)."""
    init = init_method(name, params)
    return None if init is None else {"method": init, "params": resolved_params(init, split_init(params)[1])}


def mask_record(spec: MaskSpec, from_file: bool) -> dict:
    """The mask as rerunnable values: the file's own (``kind: "file"``), or the retrospective spec."""
    if from_file:
        return {"kind": "file"}
    return {
        "kind": spec.kind,
        "accel": spec.accel,
        "center_fraction": spec.center_fraction,
        "seed": spec.seed,
    }


def prior_record(denoiser: object | None) -> dict:
    """sha256, file and scale calibration of a diffusion prior (empty for other methods)."""
    if denoiser is None:
        return {}
    return {
        "sha256": getattr(denoiser, "sha256", ""),
        "file": getattr(denoiser, "source", ""),
        "scale_calibration": float(getattr(denoiser, "scale_calibration", DEFAULT_SCALE_CALIBRATION)),
    }


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the mrdiff checkout this code runs from ("" for an installed wheel; a ``+dirty``
    suffix when tracked files differ from it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    """Output of one git command in ``root`` (raises on failure)."""
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def run_record(spec: MethodSpec, mask_spec: MaskSpec, mask_from_file: bool) -> dict:
    """Everything needed to rerun ``spec`` on a file, as plain values (see the module docstring).

    Args:
        spec: the method as run (``params``: the user's values; ``denoiser``: the loaded prior or None).
        mask_spec: the retrospective mask request.
        mask_from_file: True when the file's own acquired mask was used instead.
    """
    diffusion = spec.name in diffusion_methods()
    return {
        "method": spec.name,
        "params": resolved_params(spec.name, spec.params),
        "params_set": dict(spec.params),
        "init": resolved_init(spec.name, spec.params) or {},
        "nfe_requested": spec.nfe if diffusion else 0,
        "samples": spec.samples if diffusion else 1,
        "seed": spec.seed,
        "prior": prior_record(spec.denoiser if diffusion else None),
        "mask_spec": mask_record(mask_spec, mask_from_file),
        "mrdiff_version": __version__,
        "git_commit": git_commit(),
    }


#: the attributes that identify a request (what ``--resume`` compares; costs and timings excluded)
REQUEST_KEYS = ("method", "params_set", "nfe_requested", "samples", "seed", "mask_spec")


def tuning_context(
    spec: MethodSpec, mask_spec: MaskSpec, mask_from_file: bool, auto: AutoSpec, volume: str, tuned: list[int]
) -> dict:
    """What decides an ``--auto`` candidate's held-out score besides its parameters: the request
    (:data:`REQUEST_KEYS`), the prior's weights and calibration (not its path, so a log survives a new
    clone), the device, the search settings, the volume and the tuned slices. The header of a
    :class:`mrdiff.tuning.TrialLog`; ``mrdiff recon`` and ``mrdiff bench`` both use it."""
    record = run_record(spec, mask_spec, mask_from_file)
    return {
        **{k: record[k] for k in REQUEST_KEYS},
        # the posterior samples a trial averages (``auto.samples``, else the final K): with
        # --auto-samples the final K decides no score, and a log survives a change of it
        "samples": record["samples"] if auto.samples is None else auto.samples,
        "prior": {k: v for k, v in record["prior"].items() if k != "file"},
        "device": spec.device,
        # not the fallback: no candidate's score depends on it (its own stages are named after it)
        "auto": {k: v for k, v in asdict(auto).items() if k != "fallback"},
        "volume": volume,
        "tuned_slices": list(tuned),
    }


def request_of(
    record: dict,
    slices: list[int] | None = None,
    tuned: bool = False,
    adapted: bool = False,
    heldout: dict | None = None,
) -> dict:
    """The part of a :func:`run_record` that identifies the request: :data:`REQUEST_KEYS`, the prior's
    sha256, the slice subset (None: all), whether parameters were tuned per volume (``--auto``),
    whether the prior was adapted to the volume (``--adapt``) and the held-out split its error was
    scored on (None: not scored)."""
    out = {k: record.get(k) for k in REQUEST_KEYS}
    out["prior_sha256"] = (record.get("prior") or {}).get("sha256", "")
    extra = {"slices": slices, "auto": bool(tuned), "adapt": bool(adapted), "heldout": heldout}
    return json.loads(json.dumps({**out, **extra}))


def _stored_request(path: str | Path) -> tuple[int | None, dict | None]:
    """``(slices in 'reconstruction' or None, the request recorded in the attributes or None)``."""
    with h5py.File(path, "r") as f:
        n = f["reconstruction"].shape[0] if "reconstruction" in f else None
        attrs = {k: f.attrs[k] for k in (*REQUEST_KEYS, "prior", "slices", "heldout") if k in f.attrs}
        tuned, adapted = "auto" in f.attrs, "adapt" in f.attrs
    if set(REQUEST_KEYS) - set(attrs):
        return n, None
    values = {k: v.item() if hasattr(v, "item") else v for k, v in attrs.items()}
    values = {k: json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for k, v in values.items()}
    return n, request_of(values, values.get("slices"), tuned, adapted, values.get("heldout"))


def mismatch(path: str | Path, request: dict, n_slices: int) -> str | None:
    """Why the existing output ``path`` is not a finished run of ``request`` (:func:`request_of`) on
    ``n_slices`` slices (unreadable, no ``reconstruction``, wrong slice count, no record, another
    request), or None if it is one."""
    try:
        n, stored = _stored_request(path)
    except OSError:
        return "not a readable HDF5 file"
    if n is None:
        return "no 'reconstruction' dataset"
    if n != n_slices:
        return f"{n} slice(s), {n_slices} requested"
    if stored is None:
        return "written without a record of its request"
    diffs = [k for k in request if stored.get(k) != request[k]]
    return f"written by another request ({', '.join(diffs)} differ)" if diffs else None
