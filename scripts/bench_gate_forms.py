"""Side by side: exact alternative ONNX forms of the fold gate, timed as *CPU time* of one intra-op thread.

CPU time of a single-threaded session barely moves when other jobs share the machine (wall time does), so this
is the tool for comparing forms on a busy machine; benchmarks/RESULTS.md (scripts/bench.py) gives wall time.

Forms (all equal to the SA layer; fold = the current sa_deploy gate):
  fold             x * sigmoid(IN(x; s, b) + cw * GlobalAveragePool(x))          6 nodes per SA
  fold-reducemean  the same with ReduceMean(x, axes 2,3) (the gate before GlobalAveragePool)
  fold-stats       z = alpha*x + beta from ReduceMean(x) and ReduceMean(x*x) (no InstanceNormalization)

    python scripts/bench_gate_forms.py --model sa_resnet50 --batch 1 8
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sa_deploy.bench.converters import to_int8
from sa_deploy.bench.variants import build_variants, calibration_batches, tag_variant
from sa_deploy.exporters.onnx import export_onnx
from sa_deploy.models import create_model
from sa_deploy.models.random_weights import randomize
from sa_deploy.rewrite.sa_gate import SAGate


def _reducemean(self: SAGate, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    normed = F.instance_norm(x, weight=self.in_scale, bias=self.in_bias, eps=self.eps)
    return x * torch.sigmoid(normed + mean * self.cw)


def _stats(self: SAGate, x: torch.Tensor) -> torch.Tensor:
    # var = E[x^2] - E[x]^2 cancels when |mean| >> std: fine for timing, not the exactness tests
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = (x * x).mean(dim=(2, 3), keepdim=True) - mu * mu
    alpha = self.in_scale[None, :, None, None] / torch.sqrt(var + self.eps)
    beta = self.in_bias[None, :, None, None] + (self.cw - alpha) * mu
    return x * torch.sigmoid(x * alpha + beta)


FORMS = {"fold-reducemean": _reducemean, "fold-stats": _stats}


def build_forms(model_name: str, out: Path) -> dict[str, Path]:
    files = {v.name: v.path for v in build_variants(model_name, out, ("floor", "fold", "int8-cpu"))}
    model = randomize(create_model(model_name))  # the weights build_variants uses for untrained models
    original = SAGate.forward
    for name, forward in FORMS.items():
        path = out / f"{model_name}_{name}.onnx"
        if not path.is_file():
            SAGate.forward = forward
            try:
                export_onnx(model, path, lowering="fold")
            finally:
                SAGate.forward = original
            tag_variant(path, name, f"experiment: {forward.__name__.strip('_')} gate")
        files[name] = path
    q = out / f"{model_name}_int8-cpu-reducemean.onnx"
    if not q.is_file():
        to_int8(files["fold-reducemean"], q, "cpu", calibration_batches(model)[0])
        tag_variant(q, "int8-cpu-reducemean", "experiment: int8-cpu of fold-reducemean")
    files["int8-cpu-reducemean"] = q
    return files


def cpu_ms(files: dict[str, Path], batch: int, rounds: int, iters: int, level: str = "all") -> dict[str, list[float]]:
    """Per-round median CPU milliseconds per inference, variants interleaved (rotated) in each round."""
    import onnxruntime as ort

    sessions = {}
    for name, path in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # all work on the calling thread, so thread_time() sees all of it
        opts.log_severity_level = 3
        # "extended": every fusion except the NCHWc layout, to see how much of SA's cost is layout
        opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                         "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    size = next(iter(sessions.values())).get_inputs()[0].shape[-1]
    feed = {"input": np.random.default_rng(0).standard_normal((batch, 3, size, size), np.float32)}
    for s in sessions.values():
        s.run(None, feed)
    names, per_round = list(sessions), {n: [] for n in sessions}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times = []
            for _ in range(iters):
                t = time.thread_time()
                sessions[name].run(None, feed)
                times.append((time.thread_time() - t) * 1e3)
            per_round[name].append(float(np.median(times)))
    return per_round


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sa_resnet50")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/artifacts/forms"))
    p.add_argument("--ort-level", choices=["all", "extended"], default="all",
                   help="onnxruntime graph optimization level (default: all, as deployed)")
    args = p.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    files = build_forms(args.model, args.out)
    print(f"onnxruntime level {args.ort_level}\n")
    print(f"| {args.model} | batch | CPU ms (1 thread) | vs floor | vs fold (same precision) |")
    print("|---|---:|---:|---:|---:|")
    for batch in args.batch:
        per = cpu_ms(files, batch, args.rounds, args.iters, args.ort_level)
        for name, t in per.items():
            ref = "int8-cpu" if name.startswith("int8") else "fold"
            vs_floor = np.median(np.asarray(t) / np.asarray(per["floor"]))
            vs_ref = np.median(np.asarray(t) / np.asarray(per[ref]))
            print(f"| {name} | {batch} | {np.median(t):.1f} | {vs_floor:.3f}x | {vs_ref:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
