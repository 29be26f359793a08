"""Pool the 9-fold held-out errors of runs/hvu9.jsonl by each fold's held-out energy (val 45 dB, random 4x).

Run from the repository root after the `--folds 9` heldout_vs_unmeasured runs (README above)."""

import json

import numpy as np

from benchmarks.tuning_common import mask_spec
from mrdiff import pipeline
from mrdiff.io import list_volumes, open_volume
from mrdiff.pipeline import _batch, volume_mask
from mrdiff.tuning import Split, holdout_sets

info = open_volume(list_volumes("data/open-brain-128-45db/val")[0])
idx = pipeline.central_slices(list(range(info.shape[0])), 3)
mask = volume_mask(info, mask_spec("random", 4))
y, op = _batch(info, idx, mask, "cpu", {})
sets = holdout_sets(mask, tuple(y.shape[-2:]), Split(0.1, 9, 0))
E = np.stack([((h.to(y.dtype) * y).abs() ** 2).sum((1, 2, 3)).numpy() for h in sets])  # (folds, B)
for line in open("benchmarks/results/self-tuning/val45-auto-samples/heldout_vs_unmeasured_9folds.jsonl"):
    r = json.loads(line)
    err = np.array(r["heldout_error"])
    pooled = (err * E).sum(0) / E.sum(0)
    print(
        r["row"],
        "pooled per slice",
        np.round(pooled, 4).tolist(),
        "mean",
        round(float(pooled.mean()), 4),
        "unmeasured",
        r["unmeasured_nmse"],
    )
