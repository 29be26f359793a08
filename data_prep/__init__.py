"""Turn scans (fastMRI HDF5, NIfTI, DICOM, PNG/TIFF, NPY/MAT/AGILE k-space) into fastMRI-style sets.

``prep_sources`` handles arbitrary inputs; ``prep_open_brain`` builds the open brain sets from
``../shared/data``. Both stream slice by slice, write atomically, reuse finished volumes and return
a ``BuildReport`` (failures are collected with one line per bad source). See ``data_prep/README.md``.
"""

from __future__ import annotations

from data_prep.api import prep_open_brain, prep_sources

__all__ = ["prep_open_brain", "prep_sources"]
