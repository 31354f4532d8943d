"""Benchmark tables and charts: the Markdown RESULTS.md, the key-ratio table and latency.png from BenchRows
(``sa_deploy.bench.timing``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sa_deploy.report.render import owned_report_file
from sa_deploy.util.atomic import check_writable, write_bytes_atomic


@dataclass
class BenchRow:
    """One timed (file, runtime, batch): what bench.timing measures and this module renders."""

    group: str
    variant: str
    batch: int
    nodes: int
    size_bytes: int
    median_ms: float
    p90_ms: float
    throughput: float  # images per second at the median latency
    vs_floor: float | None
    vs_naive: float | None
    rounds: int
    samples: int
    round_medians_ms: list[float] = field(default_factory=list)
    runtime: str = "onnxruntime"

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"


COLUMNS = ("model", "runtime", "variant", "batch", "nodes", "size MB", "median ms", "p90 ms", "img/s", "vs floor",
           "vs naive")


def row_cells(r: BenchRow) -> tuple[str, ...]:
    """One row of COLUMNS (the Markdown table and the CLI table show the same cells)."""
    return (r.group, r.runtime, r.variant, str(r.batch), str(r.nodes), f"{r.size_bytes / 1e6:.2f}",
            f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.throughput:.1f}", _ratio(r.vs_floor), _ratio(r.vs_naive))


def markdown_table(rows: list[BenchRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in
                                                                 range(len(COLUMNS))) + "|"]
    for r in rows:
        cells = row_cells(r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


KEY_RATIOS = (("fold", "floor"), ("naive", "floor"), ("reshape-transpose", "floor"), ("int8-cpu", "fold"),
              ("int8-cpu-float-gate", "fold"), ("int8-tensorrt", "fold"), ("fp16", "fold"))


def paired_ratio(rows: list[BenchRow], group: str, a: str, b: str, batch: int, runtime: str = "onnxruntime",
                 runtime_b: str | None = None) -> float | None:
    """Latency of variant ``a`` on ``runtime`` over variant ``b`` on ``runtime_b`` (default: the same runtime),
    paired per round, median over rounds; None unless both were run."""
    by = {(r.group, r.runtime, r.variant, r.batch): r for r in rows}
    ra, rb = by.get((group, runtime, a, batch)), by.get((group, runtime_b or runtime, b, batch))
    if not (ra and rb):
        return None
    return float(np.median(np.asarray(ra.round_medians_ms) / np.asarray(rb.round_medians_ms)))


def key_ratios(rows: list[BenchRow]) -> str:
    """Markdown table of the headline latency ratios (paired per round, median over rounds) per model, runtime and
    batch, plus each runtime's best INT8 / FP32 fold against onnxruntime's FP32 fold (one interleaved run)."""
    variants = {r.variant for r in rows}
    pairs = [(a, b) for a, b in KEY_RATIOS if a in variants and b in variants]
    if not pairs:
        return ""
    cross = [v for v in ("fold", "int8-cpu") if v in variants] if "fold" in variants else []
    lines = ["| model | runtime | batch | " + " | ".join(f"{a} / {b}" for a, b in pairs)
             + "".join(f" | {v} / onnxruntime fold" for v in cross) + " |",
             "|---|---|---:|" + "---:|" * (len(pairs) + len(cross))]
    for group, runtime, batch in dict.fromkeys((r.group, r.runtime, r.batch) for r in rows):
        cells = [_ratio(paired_ratio(rows, group, a, b, batch, runtime)) for a, b in pairs]
        cells += [_ratio(paired_ratio(rows, group, v, "fold", batch, runtime, "onnxruntime")) for v in cross]
        lines.append(f"| {group} | {runtime} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[BenchRow], path: str | Path) -> Path:
    """One panel per (group, batch): median latency per variant, annotated with the ratio to the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r.group, r.batch) for r in rows))
    runtimes = list(dict.fromkeys(r.runtime for r in rows))
    colors = dict(zip(runtimes, ("#4c78a8", "#f58518", "#54a24b", "#b279a2")))
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    height = 3.2 if len(runtimes) == 1 else 4.6
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, height * nrows), squeeze=False)
    for ax, (group, batch) in zip(axes.flat, panels):
        sel = [r for r in rows if r.group == group and r.batch == batch]
        labels = [r.variant if len(runtimes) == 1 else f"{r.variant} ({r.runtime})" for r in sel]
        ax.barh(labels, [r.median_ms for r in sel], xerr=[[0] * len(sel), [r.p90_ms - r.median_ms for r in sel]],
                color=[colors[r.runtime] for r in sel])
        for i, r in enumerate(sel):
            if r.vs_floor is not None:
                ax.text(r.median_ms, i, f" {r.vs_floor:.2f}x", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{group}, batch {batch}", fontsize=10)
        ax.set_xlabel("median latency, ms (bar: p90); label: ratio to SA-free floor on the same runtime",
                      fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(x=0.18)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    import io

    from sa_deploy.report.plots import png_metadata

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata=png_metadata())
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue(), owned=owned_bench_file)


def write_report(rows: list[BenchRow], path: str | Path, command: str, machine: dict[str, str],
                 notes: list[str] | None = None, chart: str | None = None, extra: str = "",
                 targets: list[str] | None = None) -> Path:
    """RESULTS.md: machine, command, method, the table, notes (how each variant was produced)."""
    r0 = rows[0] if rows else None
    runtimes = ", ".join(dict.fromkeys(r.runtime for r in rows))
    parts = [f"# sa-deploy benchmark: {runtimes} (CPU)", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if k != "summary"), "",
             "Command:", "", "```bash", command, "```", "",
             f"Method: every (variant, runtime) pair of one model is interleaved in {r0.rounds if r0 else 0} rounds "
             "(rotated order), "
             f"{(r0.samples // r0.rounds) if r0 else 0} timed calls each per round after warm-up; "
             "latency = median / p90 of all timed calls; `vs floor` / `vs naive` = median over rounds of the "
             "per-round ratio of medians. `floor` = the same backbone with every SA layer removed; "
             "`naive` = the reference SA exported as is (+ onnxsim); fp16 / int8 are converted from `fold`. "
             "onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL, intra-op threads = cores; OpenVINO reads the same "
             "ONNX files on its CPU plugin with an explicit INFERENCE_PRECISION_HINT (f32, or bf16 for "
             "`openvino-bf16`), LATENCY hint, one stream, the same thread count.", ""]
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
    if targets:  # last, next to the numbers they come from
        parts += ["Targets (from this run):", ""] + [f"- {t}" for t in targets] + [""]
    return write_bytes_atomic(path, "\n".join(parts).encode(), owned=owned_bench_file)


BENCH_FILES = ("latency.png", "RESULTS.md", "results.json")


def _recorded_sha256(out_dir: Path) -> dict[str, str]:
    """The SHA-256 of RESULTS.md and latency.png as written, recorded in results.json beside them ({} if none)."""
    import json

    path = out_dir / "results.json"
    try:
        if not owned_report_file(path) or path.stat().st_size > 64 << 20:
            return {}
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(files, dict) \
        else {}


def owned_bench_file(path: Path) -> bool:
    """Whether an existing benchmark file may be replaced: results.json when it carries sa-deploy's signature;
    RESULTS.md and latency.png only when they are byte for byte what sa-deploy wrote (their SHA-256 recorded in the
    results.json beside them). A RESULTS.md edited by hand (the project's benchmarks/RESULTS.md has hand-written
    findings) or written before the record existed is not sa-deploy's to overwrite."""
    from sa_deploy.util.hashing import file_sha256

    path = Path(path)
    if not owned_report_file(path):
        return False
    if path.name == "results.json":
        return True
    recorded = _recorded_sha256(path.parent).get(path.name)
    try:
        return recorded is not None and path.is_file() and file_sha256(path) == recorded
    except OSError:
        return False


def check_benchmark_outputs(out_dir: str | Path) -> None:
    """The files write_benchmark writes may be written (none is a folder or a file sa-deploy did not write)."""
    from sa_deploy.errors import OutputPathError

    for name in BENCH_FILES:
        path = Path(out_dir) / name
        try:
            check_writable(path, owned_bench_file)
        except OutputPathError:
            if path.is_file() and not path.is_symlink() and owned_report_file(path):  # ours once, changed since
                raise OutputPathError(f"{path} was changed since sa-deploy wrote it (edited by hand, or written "
                                      "before results.json recorded its SHA-256); refusing to overwrite it (pass "
                                      "another --out, or remove the file yourself)") from None
            raise


def write_benchmark(rows: list[BenchRow], out_dir: str | Path, command: str, machine: dict[str, str],
                    notes: list[str] | None = None, extra: str = "", targets: list[str] | None = None) -> Path:
    """latency.png, RESULTS.md and results.json into ``out_dir``; returns RESULTS.md."""
    import json

    from sa_deploy import __version__
    from sa_deploy.util.hashing import file_sha256

    out = Path(out_dir)
    check_benchmark_outputs(out)  # all three or none
    chart = plot(rows, out / "latency.png")
    report = write_report(rows, out / "RESULTS.md", command, machine, notes, chart.name, extra, targets)
    files = {p.name: file_sha256(p) for p in (report, chart)}  # what makes them ours to replace next time
    write_bytes_atomic(out / "results.json", json.dumps({"sa_deploy_version": __version__, "machine": machine,
                                                        "command": command, "files": files,
                                                        "rows": [r.to_dict() for r in rows]},
                                                       indent=1).encode(), owned=owned_bench_file)
    return report
