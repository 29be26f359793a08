"""One module per `mrdiff` verb; each exposes ``HELP`` (one line) and ``main(argv) -> int``.

The one-line summaries live here, not in the verb modules, so ``mrdiff --help`` lists every verb
without importing any of them (a verb's imports load torch, sigpy, fastmri: seconds).
"""

SUMMARIES: dict[str, str] = {
    "prep": (
        "build fastMRI-style train/val/test sets from NIfTI, DICOM, PNG/TIFF, NPY/MAT/AGILE k-space, "
        "fastMRI HDF5"
    ),
    "train": "train the diffusion prior (EDM U-Net) on prepared HDF5 slices",
    "sample": "draw unconditional samples from a prior (PNG grid) and check them for memorisation",
    "recon": "reconstruct undersampled fastMRI-style HDF5 files (classical, supervised or diffusion methods)",
    "eval": "evaluate reconstructions against targets (fastMRI evaluate.py metrics)",
    "bench": (
        "benchmark methods x masks x accelerations x seeds (fastMRI metrics, tables, figures; resumable)"
    ),
    "info": "describe fastMRI-style files (shapes, coils, sampling, attributes) and list methods",
    "demo": "reconstruct the bundled demo input (data_prep/demo) and write demo_out/demo.png",
}
