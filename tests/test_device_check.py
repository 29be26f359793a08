"""The one-call device check (benchmarks/device_check.py) in its CPU --tiny form, so it cannot rot."""

from __future__ import annotations

import json

from benchmarks.device_check import main
from mrdiff.config import PRESET_DIR
from mrdiff.consistency import REGISTRY

SECTIONS = {"agreement", "throughput", "flops", "training"}


def test_tiny_device_check_writes_json_and_markdown(tmp_path):
    assert main(["--out", str(tmp_path / "dc"), "--tiny", "--budget-s", "120"]) == 0
    report = json.loads((tmp_path / "dc" / "device_check.json").read_text())
    assert {"command", "device", "sections", "summary", "elapsed_s", "budget_s", "tiny"} <= set(report)
    assert {"torch", "cuda", "python", "packages"} <= set(report["device"])
    sections = report["sections"]
    assert set(sections) == SECTIONS
    assert not report["summary"]["errors"], [
        sections[s].get("traceback") for s in report["summary"]["errors"]
    ]
    agreement = sections["agreement"]
    assert {r["method"] for r in agreement["rows"]} == set(REGISTRY)
    assert set(agreement["tolerances"]) == {"fp32_rel", "fp32_psnr_db", "bf16_psnr_loss_db"}
    for row in agreement["rows"]:  # CPU twice with the same generators: identical results
        assert "skipped" in row or (row["rel_fp32"] == 0 and row["fp32_pass"] and row["psnr_cpu"] is not None)
    assert set(report["summary"]["methods"]) == set(REGISTRY) and not report["summary"]["failures"]
    for row in sections["throughput"]["rows"]:
        assert {"method", "size", "nfe", "batch"} <= set(row)
        assert "skipped" in row or row["slices_per_s"] > 0
    assert {r["method"] for r in sections["throughput"]["rows"]} == {"ccdf", "dds", "dps"}
    assert {"rows", "matmul", "peak_bf16_tflops"} <= set(sections["flops"])
    assert all("skipped" in r or r["gflop_per_slice"] > 0 for r in sections["flops"]["rows"])
    presets = {r["preset"] for r in sections["training"]["rows"]}
    assert presets == {p.stem for p in PRESET_DIR.glob("*.yaml")}  # every preset
    assert all("skipped" in r or r["images_per_s"] > 0 for r in sections["training"]["rows"])
    md = (tmp_path / "dc" / "device_check.md").read_text()
    for title in ("## Device", "## CUDA vs CPU agreement", "## Batched throughput", "## Denoiser TFLOP/s"):
        assert title in md
    assert "## Training step per preset" in md and "| dds |" in md


def test_tiny_budget_skips_with_reasons(tmp_path):
    assert main(["--out", str(tmp_path / "dc"), "--tiny", "--budget-s", "6"]) == 0
    report = json.loads((tmp_path / "dc" / "device_check.json").read_text())
    rows = [r for s in report["sections"].values() for r in s.get("rows", [])]
    skipped = [s for s in report["sections"].values() if "skipped" in s] + [r for r in rows if "skipped" in r]
    assert skipped and all("budget" in s["skipped"] for s in skipped)


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "dc"), "--tiny", "--data", str(tmp_path / "missing")]) == 2
    assert main(["--out", str(tmp_path / "dc"), "--tiny", "--budget-s", "0"]) == 2
    assert main(["--out", str(tmp_path / "dc"), "--tiny", "--methods", "pocs,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("device_check: error:") for line in err)
    assert not (tmp_path / "dc").exists()


def test_judge_and_summary_without_a_target():
    from benchmarks.device_sections import agreement_summary, judge

    rows = [
        {
            "method": "dps",
            "psnr_cpu": None,
            "psnr_fp32": None,
            "psnr_bf16": None,
            "rel_fp32": 2e-3,
            "rel_bf16": 0.1,
        },
        {
            "method": "dps",
            "psnr_cpu": 30.0,
            "psnr_fp32": 30.0,
            "psnr_bf16": 29.95,
            "rel_fp32": 1e-6,
            "rel_bf16": 0.01,
        },
        {
            "method": "pocs",
            "psnr_cpu": 30.0,
            "psnr_fp32": 30.0,
            "psnr_bf16": 29.8,
            "rel_fp32": 1e-6,
            "rel_bf16": 0.01,
        },
        {"method": "ilvr", "skipped": "budget: needs ~3 s, 1 s left"},
    ]
    for row in rows[:3]:
        judge(row)
    assert rows[0]["fp32_pass"] is False and rows[0]["bf16_pass"] is None  # no target: fp32 by rel only
    assert rows[1]["fp32_pass"] and rows[1]["bf16_pass"] and rows[2]["bf16_pass"] is False
    summary = agreement_summary(rows)
    assert summary["dps"] == {"fp32_pass": False, "bf16_pass": True, "skipped_rows": 0}
    assert summary["pocs"]["bf16_pass"] is False
    assert summary["ilvr"] == {"fp32_pass": None, "bf16_pass": None, "skipped_rows": 1}
