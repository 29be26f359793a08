"""Entry points used by ``mrdiff prep``: arbitrary sources, or the open brain sets."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from data_prep import open_brain
from data_prep.build import BuildReport, Job, PrepOptions, build
from data_prep.manifest import check_leakage, load_manifest, write_manifest
from data_prep.sources import ORIENTATIONS, expand, read_source
from mrdiff.errors import InputError


def _meta(opts: PrepOptions, extra: dict) -> dict:
    return {"created_by": "mrdiff prep", "options": asdict(opts) | {"force": None}, **extra}


def _finish(out_dir: Path, report: BuildReport, opts: PrepOptions, meta: dict, started: float) -> BuildReport:
    manifest_path = write_manifest(out_dir, report.entries, _meta(opts, meta))
    entries = load_manifest(out_dir)["volumes"]
    try:
        check_leakage(entries, open_brain.EVAL_ONLY, open_brain.SHARED_SUBJECTS)
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
) -> BuildReport:
    """Prepare arbitrary sources into ``out_dir/<split>/``; unreadable sources become failures."""
    started = time.perf_counter()
    jobs, failures = [], []
    for path in expand([Path(p) for p in paths]):
        try:
            for vol in read_source(path, orientations):
                jobs.append(Job(vol, split, licence, subject=vol.source_id.split(":")[0]))
        except InputError as err:
            failures.append(str(err))
    report = build(jobs, out_dir, opts, progress)
    report.failures[:0] = failures
    return _finish(out_dir, report, opts, {}, started)


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
    report = build(jobs, out_dir, opts, progress)
    report.failures[:0] = failures
    meta = {
        "data_dir": str(data_dir),
        "val_axial_block": [open_brain.VAL_AXIAL.start, open_brain.VAL_AXIAL.stop],
        "shared_subjects": open_brain.SHARED_SUBJECTS,
        "eval_only": open_brain.EVAL_ONLY,
    }
    return _finish(out_dir, report, opts, meta, started)
