"""Atomic output files: write to a temporary sibling, rename on success, remove on failure."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and
    ``path`` is left as it was, so readers never see a half-written output.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that were killed (``kill -9``, power
    loss): ``.NAME.PID.partial`` files whose process no longer runs. A live writer's file is kept.

    Returns:
        the removed paths.
    """
    final = Path(path)
    removed = []
    for tmp in final.parent.glob(f".{glob_escape(final.name)}.*.partial"):
        pid = tmp.name[len(final.name) + 2 : -len(".partial")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
