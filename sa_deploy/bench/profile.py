"""Where an ONNX file spends its time on onnxruntime CPU: per-op-type kernel time from onnxruntime's profiler,
over the graph *after* onnxruntime's optimizations (so fused ops such as FusedConv and NCHWc reorders show)."""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def op_time_profile(path: str | Path, batch: int = 1, runs: int = 10, warmup: int = 3, threads: int | None = None,
                    optimized_model: str | Path | None = None) -> dict[str, tuple[int, float]]:
    """{op type: (kernels per run, mean ms per run)}, largest first. ``optimized_model``: also save the graph
    onnxruntime actually runs."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        if optimized_model:
            opts.optimized_model_filepath = str(optimized_model)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal((batch, *inp.shape[1:]), np.float32)
        for _ in range(warmup + runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    # only the kernels of the timed runs: those after the start of run number ``warmup``
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = starts[warmup] if len(starts) > warmup else 0
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= cutoff:
            op = e.get("args", {}).get("op_name", "?")
            total[op] += e["dur"] / 1e3
            count[op] += 1
    n = runs
    return {op: (count[op] // n, total[op] / n) for op in sorted(total, key=lambda o: -total[o])}


def format_profile(prof: dict[str, tuple[int, float]]) -> str:
    all_ms = sum(ms for _, ms in prof.values()) or 1.0
    lines = [f"{'op':28s} {'n/run':>6s} {'ms/run':>9s} {'share':>6s}"]
    lines += [f"{op:28s} {n:6d} {ms:9.3f} {ms / all_ms:6.1%}" for op, (n, ms) in prof.items()]
    return "\n".join(lines)


def optimized_op_histogram(path: str | Path) -> dict[str, int]:
    """Op types of the graph onnxruntime actually runs (ORT_ENABLE_ALL); NCHWc convs are tagged with their fused
    activation and ``+sum`` when a residual Add was fused into them."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        # onnxruntime wrote it just above, in this temp folder: a raw load (the caller's file was checked before)
        model = onnx.load(opts.optimized_model_filepath, load_external_data=False)
    hist: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        name = n.op_type
        act = next((a.s.decode() for a in n.attribute if a.name == "activation"), None)
        if act:
            name += f"[{act}]"
        if n.domain.endswith("nchwc") and n.op_type == "Conv" and len(n.input) >= 4 and n.input[3]:
            name += "+sum"
        hist[name] += 1
    return dict(sorted(hist.items(), key=lambda kv: -kv[1]))


def profile_markdown(paths: dict[str, Path], batch: int = 1, runs: int = 10, threads: int | None = None) -> str:
    """A Markdown section: per-op-type kernel time and the optimized graph's ops, for each named file."""
    parts = [f"## Where the time goes (onnxruntime profiler, batch {batch}, {runs} runs, per-op-type kernel time)", ""]
    for name, path in paths.items():
        prof = op_time_profile(path, batch=batch, runs=runs, threads=threads)
        total = sum(ms for _, ms in prof.values()) or 1.0
        parts += [f"**{name}** ({total:.1f} ms of kernels per run)", "", "| op | kernels/run | ms/run | share |",
                  "|---|---:|---:|---:|"]
        parts += [f"| {op} | {n} | {ms:.2f} | {ms / total:.1%} |"
                  for op, (n, ms) in prof.items() if ms / total >= 0.005]
        hist = optimized_op_histogram(path)
        parts += ["", "optimized graph: " + ", ".join(f"{op} x{c}" for op, c in hist.items()), ""]
    return "\n".join(parts)
