"""Latency of ONNX artifacts on the CPU runtimes (onnxruntime, OpenVINO f32 / bf16 hints), every (variant, runtime)
pair interleaved in rounds so that they share the machine's state (other jobs, clocks, caches) and their ratios stay
meaningful on a busy machine. OpenVINO reads the same ONNX files, so both runtimes time identical graphs.

Each round runs every variant (in a rotated order) for ``iters`` timed calls at each batch size. Latency columns
are the median / p90 of all timed calls; ratio columns are the median over rounds of the per-round ratio of
medians (paired within a round, so slow drifts of the machine cancel)."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sa_deploy.backends import Runner, get_backend, unavailable_reason
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import image_input, load_onnx
from sa_deploy.exporters.metadata import onnx_metadata
from sa_deploy.exporters.preprocess_flags import check_input_size_flag
from sa_deploy.report.bench import BenchRow, check_benchmark_outputs, write_benchmark
from sa_deploy.util.machine import machine_info


@dataclass
class Artifact:
    group: str  # results are compared within a group (one model)
    name: str  # variant name, e.g. fold / floor / int8-cpu
    path: Path
    note: str = ""
    input_size: int | None = None  # the size to time it at when its graph has dynamic H/W (None: from metadata)


# runtime name -> (backend, runner options)
RUNTIMES: dict[str, tuple[str, dict]] = {
    "onnxruntime": ("onnxruntime", {}),
    "openvino": ("openvino", {"precision_hint": "f32"}),
    "openvino-bf16": ("openvino", {"precision_hint": "bf16"}),
}


def available_runtimes() -> list[str]:
    """The runtimes this machine can time (OpenVINO when installed; its bf16 hint where the CPU has bf16)."""
    names = ["onnxruntime"]
    if unavailable_reason("openvino") is None:
        from sa_deploy.backends.openvino.device import cpu_has_bf16

        names += ["openvino"] + (["openvino-bf16"] if cpu_has_bf16() else [])
    return names


def make_runner(runtime: str, path: Path, threads: int | None) -> Runner:
    if runtime not in RUNTIMES:
        raise SADeployError(f"unknown runtime '{runtime}'; choose from: {', '.join(RUNTIMES)}")
    backend, options = RUNTIMES[runtime]
    reason = unavailable_reason(backend)
    if reason:
        raise SADeployError(f"cannot time on {runtime}: {reason}")
    return get_backend(backend).runner(path, threads, **options)  # OpenVINO reads the ONNX file itself


def _paired_ratio(a: list[float], b: list[float]) -> float:
    return float(np.median(np.asarray(a) / np.asarray(b)))


def bench_group(artifacts: list[Artifact], batches: tuple[int, ...] = (1, 8), rounds: int = 5, iters: int = 10,
                warmup: int = 3, threads: int | None = None, floor: str = "floor", naive: str = "naive",
                progress=None, runtimes: tuple[str, ...] = ("onnxruntime",)) -> list[BenchRow]:
    """Benchmark the artifacts of one group (same input size): on each runtime in turn, its files interleaved in
    rotating rounds; ratios to the ``floor`` and ``naive`` variants of the same runtime when the group has them."""
    models = {a.name: load_onnx(a.path) for a in artifacts}
    size = {bench_input_size(models[a.name], a.path.name, a.input_size) for a in artifacts}
    if len(size) != 1:
        raise SADeployError(f"the files of {artifacts[0].group} take different input sizes ({sorted(size)}); "
                            "benchmark them separately")
    input_size = size.pop()
    nodes = {a.name: len(m.graph.node) for a, m in zip(artifacts, models.values())}
    keys = [(rt, a.name) for rt in runtimes for a in artifacts]
    by_name = {a.name: a for a in artifacts}
    rows: list[BenchRow] = []
    with ExitStack() as stack:
        runners = {(rt, name): stack.enter_context(make_runner(rt, by_name[name].path, threads))
                   for rt, name in keys}
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, input_size, input_size), np.float32)
            for r in runners.values():
                r.latency_ms(x, warmup=warmup, iters=0)
            samples: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            per_round: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            # one interleaved run per runtime: onnxruntime's worker threads keep spinning after a call and slow
            # whatever runs next (the OpenVINO floor at 32x32: 4.1 ms right after onnxruntime, 0.9 ms alone)
            for rt in runtimes:
                rt_keys = [key for key in keys if key[0] == rt]
                for rnd in range(rounds):
                    k = rnd % len(rt_keys)
                    for key in rt_keys[k:] + rt_keys[:k]:  # rotate so no variant always runs first or last
                        t = runners[key].latency_ms(x, warmup=1, iters=iters)
                        samples[key] += t
                        per_round[key].append(float(np.median(t)))
                    if progress:
                        progress(f"batch {batch}: {rt} round {rnd + 1}/{rounds}")
            for rt, name in keys:
                t = np.asarray(samples[rt, name])
                med = float(np.median(t))
                a = by_name[name]
                rows.append(BenchRow(
                    a.group, name, batch, nodes[name], a.path.stat().st_size, med, float(np.percentile(t, 90)),
                    batch * 1e3 / med,
                    _paired_ratio(per_round[rt, name], per_round[rt, floor]) if (rt, floor) in per_round else None,
                    _paired_ratio(per_round[rt, name], per_round[rt, naive]) if (rt, naive) in per_round else None,
                    rounds, len(t), per_round[rt, name], rt))
    return rows


def bench_input_size(model, name: str, input_size: int | None = None) -> int:
    """The square input size to time a file at: ``input_size`` (--input-size; fixed H/W must match it), else its
    fixed H/W, else the size in its deploy metadata."""
    _, size = image_input(model, name)
    if input_size is not None:
        check_input_size_flag(input_size, size, name)
        image_input(model, name, input_size)  # one fixed dim (H or W) must match it too
        return input_size
    if size is None:
        cfg = onnx_metadata(model, name).preprocess
        if cfg is None:
            raise SADeployError(f"{name} has a dynamic input size and no sa-deploy metadata saying which to use; "
                                "pass --input-size S")
        size = cfg.input_size
    return size


def artifacts_from_files(paths: list[str | Path], input_size: int | None = None) -> list[Artifact]:
    """Artifacts grouped by the model named in their metadata (a file without: its file stem); named by their
    benchmark tag or file stem. ``input_size``: the size to time files at (needed for dynamic H/W without
    metadata)."""
    from sa_deploy.bench.variants import tags_of

    out = []
    for p in paths:
        model = load_onnx(p)
        bench_input_size(model, Path(p).name, input_size)  # every file checked before any is timed
        meta = onnx_metadata(model, Path(p).name)
        name, note = tags_of(meta, p)
        if name == Path(p).stem and meta.lowering is not None:  # an exported file: name it by its deploy config
            name = "naive" if meta.lowering == "none" else meta.lowering
            name += "" if (meta.precision or "fp32") == "fp32" else f"-{meta.precision}"
        out.append(Artifact(meta.model or Path(p).stem, name, Path(p), note, input_size))
    names = [(a.group, a.name) for a in out]
    if len(set(names)) != len(names):  # two files with one tag: fall back to file names
        out = [Artifact(a.group, a.path.stem, a.path, a.note, a.input_size) for a in out]
    return out


def run_benchmark(artifacts: list[Artifact], out_dir: str | Path, command: str, batches: tuple[int, ...] = (1, 8),
                  rounds: int = 5, iters: int = 10, threads: int | None = None, notes: list[str] | None = None,
                  progress=None, extra: str = "", runtimes: tuple[str, ...] = ("onnxruntime",),
                  verdicts: Callable[[list[BenchRow]], list[str]] | None = None) -> tuple[list[BenchRow], Path]:
    """Benchmark each group in turn and write RESULTS.md, results.json and latency.png into ``out_dir``."""
    check_benchmark_outputs(out_dir)  # before the timing, not after it
    rows: list[BenchRow] = []
    groups = list(dict.fromkeys(a.group for a in artifacts))
    for g in groups:
        sel = [a for a in artifacts if a.group == g]
        step = (lambda msg, g=g: progress(f"{g} {msg}")) if progress else None
        rows += bench_group(sel, batches, rounds, iters, threads=threads, progress=step, runtimes=runtimes)
    produced = [f"{a.group} {a.name}: {a.note}" for a in artifacts if a.note]
    targets = verdicts(rows) if verdicts else []
    report = write_benchmark(rows, out_dir, command, machine_info(threads), (notes or []) + produced, extra, targets)
    return rows, report
