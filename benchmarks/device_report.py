"""Markdown rendering of the ``benchmarks.device_check`` report (tables from its JSON dict)."""

from __future__ import annotations


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "pass" if value else "**FAIL**"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """A markdown table of ``rows`` with ``(key, header)`` columns; a row's ``skipped`` goes last."""
    head = [h for _, h in columns] + ["note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [_fmt(row.get(k)) for k, _ in columns]
        cells.append(str(row.get("skipped", "")).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section_head(title: str, section: dict | None) -> list[str]:
    lines = ["", f"## {title}", ""]
    if section is None:
        return lines + ["not run (the check stopped before this section)"]
    for key in ("skipped", "error"):
        if key in section:
            lines.append(f"**{key}**: {section[key]}")
    if "seconds" in section:
        lines += [f"({section['seconds']:.1f} s)", ""]
    return lines


def _agreement(sec: dict) -> list[str]:
    tol = sec.get("tolerances", {})
    lines = [
        f"{sec.get('compared', '')}. Pass: strict fp32 (TF32 off) within relative difference "
        f"{tol.get('fp32_rel')} and {tol.get('fp32_psnr_db')} dB of the CPU PSNR; bf16 autocast losing at "
        f"most {tol.get('bf16_psnr_loss_db')} dB (judged on files with a target only).",
        "",
    ]
    cols = [("method", "method"), ("file", "file"), ("psnr_cpu", "PSNR cpu"), ("psnr_fp32", "PSNR fp32")]
    cols += [("psnr_bf16", "PSNR bf16"), ("rel_fp32", "rel diff fp32"), ("rel_bf16", "rel diff bf16")]
    cols += [("fp32_pass", "fp32"), ("bf16_pass", "bf16"), ("cpu_s", "cpu s")]
    lines += table(sec.get("rows", []), cols)
    summ = [{"method": m, **e} for m, e in sec.get("summary", {}).items()]
    cols = [
        ("method", "method"),
        ("fp32_pass", "fp32"),
        ("bf16_pass", "bf16"),
        ("skipped_rows", "rows skipped"),
    ]
    return lines + ["", "Per method:", ""] + table(summ, cols)


def markdown(report: dict) -> str:
    """The whole report as markdown."""
    dev = report.get("device", {})
    lines = ["# mrdiff device check", "", f"`{' '.join(report.get('command', []))}`", ""]
    summ = report.get("summary", {})
    lines.append(
        f"Failures: {', '.join(summ.get('failures', [])) or 'none'}; section errors: "
        f"{', '.join(summ.get('errors', [])) or 'none'}; elapsed {report.get('elapsed_s', 0):.0f} s "
        f"of a {report.get('budget_s')} s budget."
    )
    lines += ["", "## Device", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v if isinstance(v, bool) else _fmt(v)} |" for k, v in dev.items()]
    sections = report.get("sections", {})
    sec = sections.get("agreement")
    lines += _section_head("CUDA vs CPU agreement", sec)
    if sec and "rows" in sec:
        lines += _agreement(sec)
    sec = sections.get("throughput")
    lines += _section_head("Batched throughput (bf16 autocast)", sec)
    if sec and "rows" in sec:
        lines += [f"Synthetic k-space, {sec.get('mask')}, coils per size {sec.get('coils')}.", ""]
        cols = [("method", "method"), ("size", "size"), ("nfe", "NFE"), ("batch", "batch")]
        cols += [("slices_per_s", "slices/s"), ("seconds", "s"), ("peak_mem_gib", "peak GiB")]
        lines += table(sec["rows"], cols + [("denoiser", "denoiser")])
    sec = sections.get("flops")
    lines += _section_head("Denoiser TFLOP/s (bf16 autocast forward)", sec)
    if sec and "rows" in sec:
        mm = sec.get("matmul", {})
        lines += [
            "",
            f"Matmul {mm.get('n')}^3 {mm.get('dtype')}: {_fmt(mm.get('tflops'))} TFLOP/s; data-sheet "
            f"dense bf16 peak {_fmt(sec.get('peak_bf16_tflops'))} TFLOP/s.",
            "",
        ]
        cols = [
            ("denoiser", "preset"),
            ("size", "size"),
            ("batch", "batch"),
            ("gflop_per_slice", "GFLOP/slice"),
        ]
        cols += [("tflops", "TFLOP/s"), ("of_peak", "of peak"), ("of_matmul", "of matmul")]
        lines += table(sec["rows"], cols)
    sec = sections.get("training")
    lines += _section_head("Training step per preset", sec)
    if sec and "rows" in sec:
        cols = [("preset", "preset"), ("batch", "batch"), ("resolution", "size"), ("precision", "precision")]
        cols += [("params_m", "params (M)"), ("images_per_s", "images/s"), ("tflops", "TFLOP/s")]
        lines += table(sec["rows"], cols + [("peak_mem_gib", "peak GiB")])
    for name, s in sections.items():
        if "traceback" in s:
            lines += ["", f"### Traceback of {name}", "", "```", s["traceback"], "```"]
    return "\n".join(lines) + "\n"
