"""Latency of ONNX artifacts on onnxruntime CPU, variants interleaved in rounds so that they share the machine's
state (other jobs, clocks, caches) and their ratios stay meaningful on a busy machine.

Each round runs every variant (in a rotated order) for ``iters`` timed calls at each batch size. Latency columns
are the median / p90 of all timed calls; ratio columns are the median over rounds of the per-round ratio of
medians (paired within a round, so slow drifts of the machine cancel)."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..exporters.onnx import file_input_size
from ..onnx_info import load_onnx
from ..runners import OnnxRuntimeRunner


@dataclass
class Artifact:
    group: str  # results are compared within a group (one model)
    name: str  # variant name, e.g. fold / floor / int8-cpu
    path: Path
    note: str = ""


@dataclass
class BenchRow:
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

    def to_dict(self) -> dict:
        return asdict(self)


def _paired_ratio(a: list[float], b: list[float]) -> float:
    return float(np.median(np.asarray(a) / np.asarray(b)))


def bench_group(artifacts: list[Artifact], batches: tuple[int, ...] = (1, 8), rounds: int = 5, iters: int = 10,
                warmup: int = 3, threads: int | None = None, floor: str = "floor", naive: str = "naive",
                progress=None) -> list[BenchRow]:
    """Benchmark the artifacts of one group (same input size), interleaved; ratios to the ``floor`` and
    ``naive`` variants when the group has them."""
    size = {file_input_size(load_onnx(a.path)) for a in artifacts}
    if len(size) != 1 or 0 in size:
        raise ValueError(f"artifacts of one group need one static input size, got {sorted(size)}")
    input_size = size.pop()
    nodes = {a.name: len(load_onnx(a.path).graph.node) for a in artifacts}
    runners = {a.name: OnnxRuntimeRunner(a.path, threads).activate() for a in artifacts}
    rows: list[BenchRow] = []
    try:
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, input_size, input_size), np.float32)
            for r in runners.values():
                r.latency_ms(x, warmup=warmup, iters=0)
            samples: dict[str, list[float]] = {a.name: [] for a in artifacts}
            per_round: dict[str, list[float]] = {a.name: [] for a in artifacts}
            names = [a.name for a in artifacts]
            for rnd in range(rounds):
                k = rnd % len(names)
                for name in names[k:] + names[:k]:  # rotate so no variant always runs first or last
                    t = runners[name].latency_ms(x, warmup=1, iters=iters)
                    samples[name] += t
                    per_round[name].append(float(np.median(t)))
                if progress:
                    progress(f"batch {batch}: round {rnd + 1}/{rounds}")
            for a in artifacts:
                t = np.asarray(samples[a.name])
                med = float(np.median(t))
                rows.append(BenchRow(
                    a.group, a.name, batch, nodes[a.name], a.path.stat().st_size, med, float(np.percentile(t, 90)),
                    batch * 1e3 / med,
                    _paired_ratio(per_round[a.name], per_round[floor]) if floor in per_round else None,
                    _paired_ratio(per_round[a.name], per_round[naive]) if naive in per_round else None,
                    rounds, len(t), per_round[a.name]))
    finally:
        for r in runners.values():
            r.deactivate()
    return rows


def machine_info(threads: int | None = None) -> dict[str, str]:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "simd": ", ".join(simd) or "unknown",
            "threads": str(threads or os.cpu_count()), "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}x"


COLUMNS = ("model", "variant", "batch", "nodes", "size MB", "median ms", "p90 ms", "img/s", "vs floor", "vs naive")


def markdown_table(rows: list[BenchRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in
                                                                 range(len(COLUMNS))) + "|"]
    for r in rows:
        cells = (r.group, r.variant, str(r.batch), str(r.nodes), f"{r.size_bytes / 1e6:.2f}", f"{r.median_ms:.2f}",
                 f"{r.p90_ms:.2f}", f"{r.throughput:.1f}", _ratio(r.vs_floor), _ratio(r.vs_naive))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


KEY_RATIOS = (("fold", "floor"), ("naive", "floor"), ("reshape-transpose", "floor"), ("int8-cpu", "fold"),
              ("int8-cpu-float-gate", "fold"), ("int8-tensorrt", "fold"), ("fp16", "fold"))


def paired_ratio(rows: list[BenchRow], group: str, a: str, b: str, batch: int) -> float | None:
    """Latency of variant ``a`` over variant ``b`` (paired per round, median over rounds), if both were run."""
    by = {(r.group, r.variant, r.batch): r for r in rows}
    ra, rb = by.get((group, a, batch)), by.get((group, b, batch))
    return _paired_ratio(ra.round_medians_ms, rb.round_medians_ms) if ra and rb else None


def key_ratios(rows: list[BenchRow]) -> str:
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


def plot(rows: list[BenchRow], path: str | Path) -> Path:
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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(rows: list[BenchRow], path: str | Path, command: str, machine: dict[str, str],
                 notes: list[str] | None = None, chart: str | None = None, extra: str = "") -> Path:
    """RESULTS.md: machine, command, method, the table, notes (how each variant was produced)."""
    r0 = rows[0] if rows else None
    parts = ["# sa-deploy benchmark: onnxruntime CPU", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def artifacts_from_files(paths: list[str | Path]) -> list[Artifact]:
    """Artifacts grouped by the model named in their metadata; named by their benchmark tag or file stem."""
    from ..exporters.metadata import read_onnx_metadata
    from .bench_variants import read_tags

    out = []
    for p in paths:
        meta = read_onnx_metadata(load_onnx(p))
        name, note = read_tags(p)
        if name == Path(p).stem and "lowering" in meta:  # an exported file: name it by its deploy config
            name = "naive" if meta["lowering"] == "none" else meta["lowering"]
            name += "" if meta.get("precision", "fp32") == "fp32" else f"-{meta['precision']}"
        out.append(Artifact(meta.get("model", "artifacts"), name, Path(p), note))
    names = [(a.group, a.name) for a in out]
    if len(set(names)) != len(names):  # two files with one tag: fall back to file names
        out = [Artifact(a.group, a.path.stem, a.path, a.note) for a in out]
    return out


def run_benchmark(artifacts: list[Artifact], out_dir: str | Path, command: str, batches: tuple[int, ...] = (1, 8),
                  rounds: int = 5, iters: int = 10, threads: int | None = None, notes: list[str] | None = None,
                  progress=None, extra: str = "") -> tuple[list[BenchRow], Path]:
    """Benchmark each group in turn and write RESULTS.md, results.json and latency.png into ``out_dir``."""
    import json

    rows: list[BenchRow] = []
    groups = list(dict.fromkeys(a.group for a in artifacts))
    for g in groups:
        sel = [a for a in artifacts if a.group == g]
        step = (lambda msg, g=g: progress(f"{g} {msg}")) if progress else None
        rows += bench_group(sel, batches, rounds, iters, threads=threads, progress=step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(threads)
    chart = plot(rows, out / "latency.png")
    produced = [f"{a.group} {a.name}: {a.note}" for a in artifacts if a.note]
    report = write_report(rows, out / "RESULTS.md", command, machine, (notes or []) + produced, chart.name, extra)
    (out / "results.json").write_text(json.dumps({"machine": machine, "command": command,
                                                  "rows": [r.to_dict() for r in rows]}, indent=1))
    return rows, report
