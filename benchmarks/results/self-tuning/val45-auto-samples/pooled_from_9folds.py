import json, numpy as np, torch
from mrdiff import pipeline
from mrdiff.io import open_volume, list_volumes
from mrdiff.pipeline import volume_mask, _batch
from mrdiff.tuning import Split, holdout_sets
from benchmarks.tuning_common import mask_spec
info = open_volume(list_volumes("data/open-brain-128-45db/val")[0])
idx = pipeline.central_slices(list(range(info.shape[0])), 3)
mask = volume_mask(info, mask_spec("random", 4))
y, op = _batch(info, idx, mask, "cpu", {})
sets = holdout_sets(mask, tuple(y.shape[-2:]), Split(0.1, 9, 0))
E = np.stack([((h.to(y.dtype) * y).abs() ** 2).sum((1, 2, 3)).numpy() for h in sets])  # (folds, B)
for line in open("runs/hvu9.jsonl"):
    r = json.loads(line)
    err = np.array(r["heldout_error"])
    pooled = (err * E).sum(0) / E.sum(0)
    print(r["row"], "pooled per slice", np.round(pooled, 4).tolist(), "mean", round(float(pooled.mean()), 4), "unmeasured", r["unmeasured_nmse"])
