"""The `mrdiff` command: one entry point with verbs, each a module in ``recon.verbs``.

Every verb module exposes ``HELP`` (a one-line summary) and ``main(argv: list[str]) -> int`` so that
tests can call it directly. The summaries are kept in ``recon.verbs.SUMMARIES`` so that
``mrdiff --help`` imports no verb (and no torch); a verb's module is imported only to run it. Bad
input raises ``mrdiff.errors.InputError``; this dispatcher turns it into one line on stderr and exit
status 2 (130 on Ctrl-C), never a traceback; so does a verb whose imports are missing.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

from mrdiff import __version__
from mrdiff.errors import InputError
from recon.verbs import SUMMARIES

# Explicit registry: verb -> module (imported only when the verb runs, so `mrdiff --help` is fast).
VERBS: dict[str, str] = {
    "prep": "recon.verbs.prep",
    "train": "recon.verbs.train",
    "sample": "recon.verbs.sample",
    "recon": "recon.verbs.recon",
    "eval": "recon.verbs.eval",
    "bench": "recon.verbs.bench",
    "info": "recon.verbs.info",
    "demo": "recon.verbs.demo",
}


def _usage() -> str:
    lines = ["usage: mrdiff VERB [options]   (mrdiff VERB --help for a verb's options; mrdiff --version)"]
    lines += ["", "verbs:"]
    lines += [f"  {verb:<8} {SUMMARIES[verb]}" for verb in VERBS]
    return "\n".join(lines)


def numba_cache_fallback(environ: dict = os.environ) -> None:
    """Give numba (loaded by sigpy) a writable cache when the home directory is not writable: without
    one, a user with no writable HOME and a read-only install gets a numba cache traceback."""
    if environ.get("NUMBA_CACHE_DIR"):
        return
    home = Path(environ.get("HOME") or "/nonexistent")
    if not os.access(home, os.W_OK):
        environ["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"mrdiff-numba-{os.getuid()}")


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a verb; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    numba_cache_fallback()
    if argv[:1] == ["--version"]:
        print(f"mrdiff {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"mrdiff: error: unknown verb '{verb}' (choose from {', '.join(VERBS)})", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(VERBS[verb])
    except ImportError as err:
        print(f"mrdiff {verb}: error: not available in this installation ({err})", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except InputError as err:
        print(f"mrdiff {verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mrdiff {verb}: interrupted; finished outputs are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
