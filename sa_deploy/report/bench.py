"""Benchmark tables and charts: the Markdown RESULTS.md, the key-ratio table and latency.png from BenchRows
(``sa_deploy.bench.timing``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sa_deploy.report.render import owned_report_file
from sa_deploy.util.atomic import check_writable, write_bytes_atomic

if TYPE_CHECKING:
    from sa_deploy.bench.timing import BenchRow


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"


COLUMNS = ("model", "variant", "batch", "nodes", "size MB", "median ms", "p90 ms", "img/s", "vs floor", "vs naive")


def markdown_table(rows: list["BenchRow"]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in
                                                                 range(len(COLUMNS))) + "|"]
    for r in rows:
        cells = (r.group, r.variant, str(r.batch), str(r.nodes), f"{r.size_bytes / 1e6:.2f}", f"{r.median_ms:.2f}",
                 f"{r.p90_ms:.2f}", f"{r.throughput:.1f}", _ratio(r.vs_floor), _ratio(r.vs_naive))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


KEY_RATIOS = (("fold", "floor"), ("naive", "floor"), ("reshape-transpose", "floor"), ("int8-cpu", "fold"),
              ("int8-cpu-float-gate", "fold"), ("int8-tensorrt", "fold"), ("fp16", "fold"))


def paired_ratio(rows: list["BenchRow"], group: str, a: str, b: str, batch: int) -> float | None:
    """Latency of variant ``a`` over variant ``b`` (paired per round, median over rounds), if both were run."""
    by = {(r.group, r.variant, r.batch): r for r in rows}
    ra, rb = by.get((group, a, batch)), by.get((group, b, batch))
    if not (ra and rb):
        return None
    return float(np.median(np.asarray(ra.round_medians_ms) / np.asarray(rb.round_medians_ms)))


def key_ratios(rows: list["BenchRow"]) -> str:
    """Markdown table of the headline latency ratios (paired per round, median over rounds) per model and batch."""
    by = {(r.group, r.variant, r.batch): r for r in rows}
    pairs = [(a, b) for a, b in KEY_RATIOS if any(k[1] == a for k in by) and any(k[1] == b for k in by)]
    if not pairs:
        return ""
    lines = ["| model | batch | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |",
             "|---|---:|" + "---:|" * len(pairs)]
    for group, batch in dict.fromkeys((r.group, r.batch) for r in rows):
        cells = [_ratio(paired_ratio(rows, group, a, b, batch)) for a, b in pairs]
        lines.append(f"| {group} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list["BenchRow"], path: str | Path) -> Path:
    """One panel per (group, batch): median latency per variant, annotated with the ratio to the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r.group, r.batch) for r in rows))
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, (group, batch) in zip(axes.flat, panels):
        sel = [r for r in rows if r.group == group and r.batch == batch]
        ax.barh([r.variant for r in sel], [r.median_ms for r in sel],
                xerr=[[0] * len(sel), [r.p90_ms - r.median_ms for r in sel]], color="#4c78a8")
        for i, r in enumerate(sel):
            if r.vs_floor is not None:
                ax.text(r.median_ms, i, f" {r.vs_floor:.2f}x", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{group}, batch {batch}", fontsize=10)
        ax.set_xlabel("median latency, ms (bar: p90); label: ratio to SA-free floor", fontsize=8)
        ax.margins(x=0.18)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    import io

    from sa_deploy.report.plots import png_metadata

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata=png_metadata())
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue(), owned=owned_report_file)


def write_report(rows: list["BenchRow"], path: str | Path, command: str, machine: dict[str, str],
                 notes: list[str] | None = None, chart: str | None = None, extra: str = "") -> Path:
    """RESULTS.md: machine, command, method, the table, notes (how each variant was produced)."""
    r0 = rows[0] if rows else None
    parts = ["# sa-deploy benchmark: onnxruntime CPU", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if k != "summary"), "",
             "Command:", "", "```bash", command, "```", "",
             f"Method: variants of one model are interleaved in {r0.rounds if r0 else 0} rounds (rotated order), "
             f"{(r0.samples // r0.rounds) if r0 else 0} timed calls each per round after warm-up; "
             "latency = median / p90 of all timed calls; `vs floor` / `vs naive` = median over rounds of the "
             "per-round ratio of medians. `floor` = the same backbone with every SA layer removed; "
             "`naive` = the reference SA exported as is (+ onnxsim); fp16 / int8 are converted from `fold`. "
             "onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL, intra-op threads = cores.", ""]
    if chart:
        parts += [f"![latency chart]({chart})", ""]
    parts += [markdown_table(rows), ""]
    ratios = key_ratios(rows)
    if ratios:
        parts += ["Key latency ratios (paired per round, median over rounds; < 1 is faster):", "", ratios, ""]
    if notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    if extra:
        parts += [extra, ""]
    return write_bytes_atomic(path, "\n".join(parts).encode(), owned=owned_report_file)


BENCH_FILES = ("latency.png", "RESULTS.md", "results.json")


def check_benchmark_outputs(out_dir: str | Path) -> None:
    """The files write_benchmark writes may be written (none is a folder or a file sa-deploy did not write)."""
    for name in BENCH_FILES:
        check_writable(Path(out_dir) / name, owned_report_file)


def write_benchmark(rows: list["BenchRow"], out_dir: str | Path, command: str, machine: dict[str, str],
                    notes: list[str] | None = None, extra: str = "") -> Path:
    """latency.png, RESULTS.md and results.json into ``out_dir``; returns RESULTS.md."""
    import json

    from sa_deploy import __version__

    out = Path(out_dir)
    check_benchmark_outputs(out)  # all three or none
    chart = plot(rows, out / "latency.png")
    report = write_report(rows, out / "RESULTS.md", command, machine, notes, chart.name, extra)
    write_bytes_atomic(out / "results.json", json.dumps({"sa_deploy_version": __version__, "machine": machine,
                                                        "command": command, "rows": [r.to_dict() for r in rows]},
                                                       indent=1).encode(), owned=owned_report_file)
    return report
