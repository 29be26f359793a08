"""Build fastMRI-style volumes from source volumes: simulate, pass through, or wrap raw k-space.

One ``Job`` is one output file. ``build`` runs the jobs one after the other, streaming slice by
slice, writing each file atomically (``mrdiff.atomic.atomic_path``) and skipping files that a
previous run already finished with the same options (idempotent reruns). A job that fails is
reported (one line naming the file) and the others continue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from data_prep.manifest import LeakageGuard
from data_prep.simulate import SimulationConfig, foreground_fraction, simulate_image, simulate_slice
from data_prep.sources import KspaceVolume, MagnitudeVolume, Volume
from data_prep.writer import VolumeWriter, ismrmrd_header, read_entry, zero_filled_rss
from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError
from mrdiff.io import center_crop
from mrdiff.noise import make_generator, seed_for

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PrepOptions:
    """Options shared by every job of a run.

    Attributes:
        sim: simulation settings (output size, coils, SNR, oversampling).
        seed: base seed; slice seeds are ``seed_for(seed, source_id, slice_index)``.
        min_foreground: a magnitude slice is kept when at least this fraction of its square-padded
            output-grid pixels is brighter than 10 % of the volume's 99th-percentile intensity.
        espirit: also store ESPIRiT ``maps`` (and the coil-combined ``image`` when fully sampled)
            for raw k-space and fastMRI inputs.
        force: rebuild volumes that already exist.
        compress: gzip-compress the datasets (smaller, slower; used for the bundled demo).
        images_only: for magnitude sources, write only the complex ground-truth ``image`` (and its
            magnitude as ``reconstruction_rss``): no coils, noise or k-space. Enough to train a prior,
            about 20 times smaller and faster to build; such files cannot be reconstructed.
    """

    sim: SimulationConfig = field(default_factory=SimulationConfig)
    seed: int = 0
    min_foreground: float = 0.10
    espirit: bool = False
    force: bool = False
    compress: bool = False
    images_only: bool = False


@dataclass
class Job:
    """One output volume: a source volume, its split, licence, subject and (optional) slice subset.

    ``root`` is the folder the source was given under on the command line (``--open-brain`` or
    ``--demo`` DATA_DIR, or the folder holding a SOURCES argument); the source is recorded relative
    to it (:attr:`recorded_source`).
    """

    volume: Volume
    split: str
    licence: str
    subject: str
    slices: list[int] | None = None
    name: str | None = None
    folder: str | None = None
    root: Path | None = None

    @property
    def rel_path(self) -> str:
        """Output path relative to the output root: ``<folder or split>/<name>.h5``."""
        folder = self.split if self.folder is None else self.folder
        return f"{folder}/{self.out_name}" if folder else self.out_name

    @property
    def out_name(self) -> str:
        """Output file name (``<name>.h5``)."""
        return f"{self.name or self.volume.name}.h5"

    @property
    def recorded_source(self) -> str:
        """The source as the manifest and the volume's ``source`` attribute record it: its path relative
        to ``root``, POSIX-style (e.g. ``sigpy-brain-8ch-poisson/cartesian_ksp.npy``), so that a manifest
        names no folder of the machine it was built on; the path as given without a root or outside it."""
        source = Path(self.volume.source)
        if self.root is not None and source.is_relative_to(self.root):
            return source.relative_to(self.root).as_posix()
        return str(source)


@dataclass
class BuildReport:
    """What a run produced: manifest entries, skipped (already finished) files and failures."""

    entries: list[dict] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def job_key(job: Job, opts: PrepOptions) -> str:
    """Hex digest of everything that determines a job's output (for idempotent reruns)."""
    desc = {
        "v": FORMAT_VERSION,
        "kind": job.volume.kind,
        "source_id": job.volume.source_id,
        "split": job.split,
        "slices": job.slices,
        "sim": asdict(opts.sim) if job.volume.kind == "magnitude" else None,
        "seed": opts.seed,
        "min_foreground": opts.min_foreground,
        "espirit": opts.espirit,
    }
    if opts.images_only:  # a key of its own only when set, so existing sets keep their keys
        desc["images_only"] = True
    if desc["sim"] is not None and desc["sim"]["kspace_shape"] is None:
        del desc["sim"]["kspace_shape"]  # square k-space: the key sets built before the option had
    return f"{seed_for(json.dumps(desc, sort_keys=True)):016x}"


def kept_slices(volume: MagnitudeVolume, candidates: list[int], opts: PrepOptions) -> list[int]:
    """Candidate slices that pass the foreground rule of ``PrepOptions.min_foreground``."""
    n = opts.sim.size
    return [i for i in candidates if foreground_fraction(volume.slice(i), n, 1.0) >= opts.min_foreground]


def _base_attrs(job: Job, simulated: bool, opts: PrepOptions) -> dict:
    return {
        "acquisition": job.volume.acquisition,
        "patient_id": job.subject,
        "source": job.recorded_source,
        "licence": job.licence,
        "split": job.split,
        "simulated": simulated,
        "snr_db": float(opts.sim.snr_db) if simulated else math.nan,
        "seed": int(opts.seed) if simulated else -1,
    }


def write_images(f: h5py.File, job: Job, slices: list[int], opts: PrepOptions, bar) -> dict:
    """Append the complex ground truth of every slice in ``slices`` (``PrepOptions.images_only``): the
    same ``image`` as :func:`write_magnitude` would simulate for the seed, without coils or noise."""
    vol, n = job.volume, opts.sim.size
    shapes = {
        "image": ((n, n), np.complex64),
        "reconstruction_rss": ((n, n), np.float32),
        "source_slice": ((), np.int32),
        "slice_seed": ((), np.int64),
    }
    writer = VolumeWriter(f, shapes, opts.compress)
    for i in slices:
        seed = seed_for(opts.seed, vol.source_id, i)
        image = simulate_image(vol.slice(i), opts.sim, make_generator(seed)).numpy()
        writer.add(image=image, reconstruction_rss=np.abs(image), source_slice=i, slice_seed=seed)
        bar.update(1)
    writer.finish(ismrmrd_header(n, n), _base_attrs(job, True, opts) | {"images_only": True})
    return {"simulated": True, "images_only": True, "seed": opts.seed, "shape": [len(slices), n, n]}


def write_magnitude(f: h5py.File, job: Job, slices: list[int], opts: PrepOptions, bar) -> dict:
    """Simulate and append every slice in ``slices``; returns extra manifest fields."""
    if opts.images_only:
        return write_images(f, job, slices, opts, bar)
    vol, cfg = job.volume, opts.sim
    C, n, (H, W) = cfg.coils, cfg.size, cfg.grid
    shapes = {
        "kspace": ((C, H, W), np.complex64),
        "reconstruction_rss": ((n, n), np.float32),
        "image": ((n, n), np.complex64),
        "maps": ((C, H, W), np.complex64),
        "source_slice": ((), np.int32),
        "slice_seed": ((), np.int64),
        "noise_sigma": ((), np.float32),
    }
    writer = VolumeWriter(f, shapes, opts.compress)
    for i in slices:
        seed = seed_for(opts.seed, vol.source_id, i)
        sim = simulate_slice(vol.slice(i), cfg, make_generator(seed))
        writer.add(
            kspace=sim.kspace,
            reconstruction_rss=sim.rss,
            image=sim.image,
            maps=sim.maps,
            source_slice=i,
            slice_seed=seed,
            noise_sigma=sim.sigma,
        )
        bar.update(1)
    writer.finish(
        ismrmrd_header(H, W, n, n), _base_attrs(job, True, opts) | {"coils": C, "oversample": cfg.oversample}
    )
    return {"simulated": True, "snr_db": cfg.snr_db, "seed": opts.seed, "shape": [len(slices), C, H, W]}


def coil_combine(kspace: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``sum_c conj(S_c) IFFT(k_c)`` for k-space and maps ``(C, H, W)`` -> ``(H, W)`` complex64."""
    from mrdiff.fft import ifft2c

    img = ifft2c(torch.from_numpy(np.ascontiguousarray(kspace, np.complex64)))
    return (torch.from_numpy(maps).conj() * img).sum(0).numpy().astype(np.complex64)


def espirit(kspace: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """ESPIRiT maps ``(C, H, W)`` from the calibration region (``mrdiff.coils.estimate_maps``)."""
    from mrdiff.coils import estimate_maps

    k = torch.from_numpy(np.ascontiguousarray(kspace, np.complex64))
    m = (
        torch.ones(k.shape[-2:], dtype=torch.bool)
        if mask is None
        else torch.from_numpy(np.asarray(mask, bool))
    )
    return estimate_maps(k, m).numpy().astype(np.complex64)


def write_kspace(f: h5py.File, job: Job, slices: list[int], opts: PrepOptions, bar) -> dict:
    """Copy raw k-space slices; keep its real mask; targets/maps only as documented."""
    vol: KspaceVolume = job.volume
    _, C, H, W = vol.kspace.shape
    h, w = vol.recon_shape or (H, W)
    full = vol.mask is None
    shapes: dict = {"kspace": ((C, H, W), np.complex64)}
    if full:
        shapes["reconstruction_rss"] = ((h, w), np.float32)
    if opts.espirit:
        shapes["maps"] = ((C, H, W), np.complex64)
        if full:
            shapes["image"] = ((h, w), np.complex64)
    writer = VolumeWriter(f, shapes, opts.compress)
    for i in slices:
        k = np.asarray(vol.kspace[i], np.complex64)
        item = {"kspace": k}
        if full:
            item["reconstruction_rss"] = center_crop(zero_filled_rss(k), (h, w))  # fastMRI's target
        if opts.espirit:
            item["maps"] = espirit(k, vol.mask)
            if full:
                item["image"] = center_crop(coil_combine(k, item["maps"]), (h, w))
        writer.add(**item)
        bar.update(1)
    writer.finish(ismrmrd_header(H, W, h, w), _base_attrs(job, False, opts), mask=vol.mask)
    return {"simulated": False, "shape": [len(slices), C, H, W], "undersampled": not full}


def write_fastmri(f: h5py.File, job: Job, slices: list[int], opts: PrepOptions, bar) -> dict:
    """Pass a fastMRI file through slice by slice (datasets and attributes unchanged), adding ours."""
    with h5py.File(job.volume.source, "r") as src:
        ks = src["kspace"]
        per_slice = [
            k
            for k, v in src.items()
            if isinstance(v, h5py.Dataset)
            and v.ndim >= 1
            and v.shape[0] == ks.shape[0]
            and k not in ("mask", "ismrmrd_header")
        ]
        shapes = {k: (src[k].shape[1:], src[k].dtype) for k in per_slice}
        multicoil = ks.ndim == 4
        mask = np.asarray(src["mask"][()]) if "mask" in src else None
        if opts.espirit and multicoil:
            shapes["maps"] = (ks.shape[1:], np.complex64)
            if mask is None or np.all(mask):
                shapes["image"] = (ks.shape[2:], np.complex64)
        writer = VolumeWriter(f, shapes, opts.compress)
        for i in slices:
            item = {k: src[k][i] for k in per_slice}
            if "maps" in shapes:
                m2 = None if mask is None else np.broadcast_to(np.asarray(mask, bool), ks.shape[-2:])
                item["maps"] = espirit(item["kspace"], m2)
                if "image" in shapes:
                    item["image"] = coil_combine(item["kspace"], item["maps"])
            writer.add(**item)
            bar.update(1)
        header = src["ismrmrd_header"][()] if "ismrmrd_header" in src else ismrmrd_header(*ks.shape[-2:])
        attrs = dict(src.attrs.items())
    ours = _base_attrs(job, False, opts)
    ours.update({k: v for k, v in attrs.items() if k not in ("split", "licence", "source")})
    writer.finish(header if isinstance(header, str) else header.decode(), ours, mask=mask)
    for key in ("max", "norm"):
        if key in attrs:
            f.attrs[key] = attrs[key]
    return {"simulated": False, "shape": [len(slices), *ks.shape[1:]], "undersampled": mask is not None}


WRITERS: dict[str, Callable] = {
    "magnitude": write_magnitude,
    "kspace": write_kspace,
    "fastmri": write_fastmri,
}


def candidate_slices(job: Job) -> list[int]:
    """Source slice indices a job may use (all, or its declared subset)."""
    vol = job.volume
    if vol.kind == "fastmri":
        with h5py.File(vol.source, "r") as f:
            n = int(f["kspace"].shape[0])
    else:
        n = vol.n_slices
    return list(range(n)) if job.slices is None else [i for i in job.slices if 0 <= i < n]


def _admit(guard: LeakageGuard | None, entry: dict, what: str) -> None:
    """Raise ``InputError`` starting with ``what`` if ``entry`` would leak between splits."""
    if guard is not None:
        try:
            guard.check(entry)
        except InputError as err:
            raise InputError(f"{what}: {err}") from None


def build_job(
    job: Job,
    out_dir: Path,
    opts: PrepOptions,
    progress: bool,
    report: BuildReport,
    guard: LeakageGuard | None = None,
) -> None:
    """Build (or reuse) one volume and record the outcome in ``report``.

    With a ``guard``, the volume's manifest entry is checked for leakage between splits before
    anything is written; a leaking volume raises ``InputError`` and leaves no file.
    """
    path = out_dir / job.rel_path
    key = job_key(job, opts)
    found = None if opts.force or not path.exists() else read_entry(path)
    if found is not None and found[0] == key:
        entry = {**found[1], "source": job.recorded_source}  # as this run records it (older files: absolute)
        _admit(guard, entry, f"{path} (built earlier)")
        if guard is not None:
            guard.add(entry)
        report.entries.append(entry)
        report.reused.append(str(path))
        return
    slices = candidate_slices(job)
    if job.volume.kind == "magnitude":
        slices = kept_slices(job.volume, slices, opts)
    if not slices:
        report.dropped.append(
            f"{job.volume.source}: no slice passed the foreground rule; {path.name} not written"
        )
        return
    entry = {
        "file": job.rel_path,
        "split": job.split,
        "source": job.recorded_source,
        "source_id": job.volume.source_id,
        "subject": job.subject,
        "licence": job.licence,
        "kind": job.volume.kind,
        "acquisition": job.volume.acquisition,
        "source_slices": slices,
        "n_slices": len(slices),
    }
    _admit(guard, entry, f"{path}: not written")
    with tqdm(total=len(slices), desc=job.rel_path, unit="slice", disable=not progress, leave=False) as bar:
        with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
            entry.update(WRITERS[job.volume.kind](f, job, slices, opts, bar))
            f.attrs["prep_key"] = key
            f.attrs["prep_entry"] = json.dumps(entry)
    if guard is not None:
        guard.add(entry)
    report.entries.append(entry)


def build(
    jobs: list[Job],
    out_dir: Path,
    opts: PrepOptions,
    progress: bool = True,
    guard: LeakageGuard | None = None,
) -> BuildReport:
    """Run every job; failures (bad/unreadable or leaking sources) are collected, not raised.

    ``guard`` (optional) vetoes, before writing, any volume that would leak between splits.
    """
    report = BuildReport()
    for job in jobs:
        try:
            build_job(job, out_dir, opts, progress, report, guard)
        except InputError as err:
            report.failures.append(str(err))
        except (OSError, ValueError, KeyError) as err:
            report.failures.append(f"{job.volume.source}: {err.__class__.__name__}: {err}")
    return report
