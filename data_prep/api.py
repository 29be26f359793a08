"""Entry points used by ``mrdiff prep``: arbitrary sources, or the open brain sets."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

from data_prep import open_brain
from data_prep.build import BuildReport, Job, PrepOptions, build, candidate_slices
from data_prep.holdout import Holdout
from data_prep.manifest import LeakageGuard, check_leakage, load_manifest, merge_shared, write_manifest
from data_prep.sources import ORIENTATIONS, expand, read_source
from mrdiff.errors import InputError


def _meta(opts: PrepOptions, extra: dict) -> dict:
    return {"created_by": "mrdiff prep", "options": asdict(opts) | {"force": None}, **extra}


def _shared(out_dir: Path, holdouts: dict | None = None) -> dict[str, list[str]]:
    """Subjects allowed in two splits: the open brain's documented block split, hold-outs declared by
    earlier runs into ``out_dir`` (manifest ``holdout_subjects``) and this run's ``holdouts``."""
    earlier = load_manifest(out_dir).get("holdout_subjects", {})
    return merge_shared(open_brain.SHARED_SUBJECTS, earlier, holdouts or {})


def _guard(out_dir: Path, holdouts: dict | None = None) -> LeakageGuard:
    """The pre-write leakage check for a run into ``out_dir``."""
    return LeakageGuard(out_dir, open_brain.EVAL_ONLY, _shared(out_dir, holdouts))


def _finish(out_dir: Path, report: BuildReport, opts: PrepOptions, meta: dict, started: float) -> BuildReport:
    shared = _shared(out_dir, meta.get("holdout_subjects"))
    manifest_path = write_manifest(out_dir, report.entries, _meta(opts, meta))
    entries = load_manifest(out_dir)["volumes"]
    try:
        check_leakage(entries, open_brain.EVAL_ONLY, shared)
    except InputError as err:
        report.failures.append(f"{manifest_path}: {err}")
    report.seconds = time.perf_counter() - started
    return report


def prep_sources(
    paths: list[Path],
    out_dir: Path,
    split: str,
    licence: str,
    opts: PrepOptions,
    orientations: tuple[str, ...] = ORIENTATIONS,
    progress: bool = True,
    holdout: Holdout | None = None,
) -> BuildReport:
    """Prepare arbitrary sources into ``out_dir/<split>/``; unreadable sources become failures.

    With ``holdout``, each source's held-out block of slices (or frames) goes to
    ``out_dir/<holdout.split>/`` instead, under the same file name; the subject is declared shared
    between the two splits and every slice is still checked for leakage before anything is written.
    """
    started = time.perf_counter()
    jobs, failures = [], []
    for arg in map(Path, paths):
        for path in expand([arg]):
            try:
                jobs.extend(_source_jobs(path, split, licence, orientations, holdout, root=arg.parent))
            except InputError as err:
                failures.append(str(err))
    declared = {j.subject: sorted({split, holdout.split}) for j in jobs} if holdout else {}
    report = build(jobs, out_dir, opts, progress, _guard(out_dir, declared))
    report.failures[:0] = failures
    meta = {"holdout_subjects": merge_shared(load_manifest(out_dir).get("holdout_subjects", {}), declared)}
    return _finish(out_dir, report, opts, meta, started)


def _source_jobs(
    path: Path,
    split: str,
    licence: str,
    orientations: tuple[str, ...],
    holdout: Holdout | None,
    root: Path | None = None,
) -> list[Job]:
    """The jobs for one source: one per volume, or a kept and a held-out job per volume. The source is
    recorded relative to ``root``: the folder holding the SOURCES argument it came from, so that a
    folder argument keeps its own name (``scans/sub-01/t1.nii.gz``) and a file argument is its name."""
    volumes = read_source(path, orientations)
    if holdout is not None and len(volumes) > 1:
        raise InputError(
            f"{path}: {holdout.describe()} needs a single slice stack, but this source gives "
            f"{len(volumes)} ({', '.join(v.source_id for v in volumes)}); slices of one orientation "
            "cross the held-out block of another: pass one --orientations"
        )
    jobs = []
    for vol in volumes:
        job = Job(vol, split, licence, subject=vol.source_id.split(":")[0], root=root)
        if holdout is None:
            jobs.append(job)
            continue
        kept, held = holdout.partition(candidate_slices(job), str(path))
        jobs.append(dataclasses.replace(job, slices=kept))
        jobs.append(dataclasses.replace(job, split=holdout.split, slices=held))
    return jobs


def prep_open_brain(
    data_dir: Path,
    out_dir: Path,
    opts: PrepOptions,
    sets: tuple[str, ...] = open_brain.SETS,
    progress: bool = True,
) -> BuildReport:
    """Build the open brain ``sets`` from ``data_dir`` (the shared data folder) into ``out_dir``."""
    started = time.perf_counter()
    if not Path(data_dir).is_dir():
        raise InputError(f"{data_dir}: open brain data folder not found")
    jobs, failures = [], []
    for name in sets:
        try:
            jobs.extend(open_brain.jobs_for(name, Path(data_dir)))
        except InputError as err:
            failures.append(f"set {name}: {err}")
    report = build(jobs, out_dir, opts, progress, _guard(out_dir))
    report.failures[:0] = failures
    meta = {
        "data_dir": str(data_dir),
        "val_axial_block": [open_brain.VAL_AXIAL.start, open_brain.VAL_AXIAL.stop],
        "shared_subjects": open_brain.SHARED_SUBJECTS,
        "eval_only": open_brain.EVAL_ONLY,
    }
    return _finish(out_dir, report, opts, meta, started)
