"""The set manifest (``manifest.json``) and the no-leakage check between splits."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError

MANIFEST = "manifest.json"


def load_manifest(out_dir: Path) -> dict:
    """The existing manifest of ``out_dir`` (empty skeleton if there is none)."""
    path = out_dir / MANIFEST
    if not path.exists():
        return {"volumes": []}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"{path}: unreadable manifest ({err.__class__.__name__}); delete it to rebuild"
        ) from None


def merge_entries(old: list[dict], new: list[dict], out_dir: Path) -> list[dict]:
    """Entries of ``new`` replace those of ``old`` with the same file; old files that vanished are dropped."""
    by_file = {e["file"]: e for e in old if (out_dir / e["file"]).exists()}
    by_file.update({e["file"]: e for e in new})
    return [by_file[k] for k in sorted(by_file)]


def summarise(entries: list[dict]) -> dict[str, dict[str, int]]:
    """Per split: number of volumes and slices."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"volumes": 0, "slices": 0})
    for e in entries:
        out[e["split"]]["volumes"] += 1
        out[e["split"]]["slices"] += int(e["n_slices"])
    return dict(sorted(out.items()))


def write_manifest(out_dir: Path, entries: list[dict], meta: dict) -> Path:
    """Merge ``entries`` into ``out_dir/manifest.json`` (atomically) with ``meta`` and a summary."""
    manifest = load_manifest(out_dir)
    volumes = merge_entries(manifest.get("volumes", []), entries, out_dir)
    manifest.update(meta)
    manifest["volumes"] = volumes
    manifest["summary"] = summarise(volumes)
    path = out_dir / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def check_leakage(
    entries: list[dict],
    eval_only: dict[str, str] | None = None,
    shared_subjects: dict[str, list[str]] | None = None,
) -> None:
    """Raise ``InputError`` if data leak between splits.

    Rules: (1) no source slice (subject, orientation, slice index) lands in two splits, whatever the
    file it came from (``ch2`` and ``ch2bet`` are the same subject); (2) a subject (and hence any
    source volume) lands in two splits only when ``shared_subjects`` declares exactly those splits
    (the documented Colin27 train/val block split); (3) an ``eval_only`` subject appears only in its
    named split.

    Args:
        entries: manifest volume entries (``split``, ``subject``, ``source_id``, ``source_slices``).
        eval_only: subject -> the only split allowed to hold it (e.g. the test brain -> ``test``).
        shared_subjects: subject -> splits it may span (documented held-out blocks).
    """
    eval_only, shared = eval_only or {}, shared_subjects or {}
    slice_split: dict[tuple, str] = {}
    subject_splits: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        split, subject = e["split"], e["subject"]
        subject_splits[subject].add(split)
        if subject in eval_only and split != eval_only[subject]:
            raise InputError(
                f"leakage: evaluation-only subject {subject!r} ({e['file']}) is in split {split!r}"
            )
        orientation = e["source_id"].split(":", 1)[1] if ":" in e["source_id"] else ""
        for index in e["source_slices"]:
            key = (subject, orientation, int(index))
            other = slice_split.setdefault(key, split)
            if other != split:
                raise InputError(
                    f"leakage: {subject} {orientation or 'slice'} {index} in splits {other!r} and {split!r}"
                )
    for subject, splits in subject_splits.items():
        if len(splits) > 1 and not splits <= set(shared.get(subject, ())):
            raise InputError(
                f"leakage: subject {subject!r} is in splits {sorted(splits)} (not declared shared)"
            )


class LeakageGuard:
    """Checks each volume *before* it is written against the manifest and this run's earlier volumes.

    A volume whose entry would break :func:`check_leakage` raises ``InputError`` and is never written
    (``mrdiff prep`` reports it as a failure); a volume is recorded with :meth:`add` once written.
    Entries for the same ``file`` replace the manifest's (a rebuilt volume does not leak with its
    former self).

    Args:
        out_dir: the output root whose ``manifest.json`` lists the volumes already there.
        eval_only, shared_subjects: as for :func:`check_leakage`.
    """

    def __init__(self, out_dir: Path, eval_only: dict | None = None, shared_subjects: dict | None = None):
        volumes = load_manifest(out_dir).get("volumes", [])
        self.entries = {e["file"]: e for e in volumes if (out_dir / e["file"]).exists()}
        self.eval_only, self.shared = eval_only or {}, shared_subjects or {}

    def check(self, entry: dict) -> None:
        """Raise ``InputError`` if adding ``entry`` (not yet written) would leak between splits."""
        trial = {**self.entries, entry["file"]: entry}
        check_leakage(list(trial.values()), self.eval_only, self.shared)

    def add(self, entry: dict) -> None:
        """Record a volume that was written (or reused)."""
        self.entries[entry["file"]] = entry


def merge_shared(*declared: dict[str, list[str]]) -> dict[str, list[str]]:
    """Union of subject -> splits declarations (a subject may span the splits of any of them)."""
    out: dict[str, set[str]] = defaultdict(set)
    for mapping in declared:
        for subject, splits in (mapping or {}).items():
            out[subject] |= set(splits)
    return {subject: sorted(splits) for subject, splits in sorted(out.items())}
