"""Time the CoreML reference MIL executor (numpy, runs .mlpackage programs off macOS) against an earlier version of
itself, on the same images, in one process, and check that both give the same outputs.

    python scripts/bench_mil_executor.py                                  # sa_resnet_cifar, fp16 + w8a8, 64 images
    python scripts/bench_mil_executor.py --model sa_mobilenetv2_cifar --images 16 --precisions fp16
    python scripts/bench_mil_executor.py --baseline 0e07dec --rounds 5 --out /tmp/mil_bench

The baseline is the executor (mil_ops.py + reference.py) at a git revision, loaded from ``git show``. Both run
through CoreMLRunner, which feeds the executor one image at a time, as ``sa-deploy run`` does. Two settings:
``default``: each executor as it ships (the baseline leaves numpy's OpenBLAS at a thread per core; the current one
runs it on one thread); ``blas1``: both with OpenBLAS on one thread, which isolates the executor's own work from
BLAS thread contention. Packages are exported (fold lowering, embedded weights and calibration images) into --out
when missing."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXECUTOR_FILES = ("sa_deploy/backends/coreml/mil_ops.py", "sa_deploy/backends/coreml/reference.py")
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "asimd", "sve")


def cpu_lines() -> list[str]:
    """CPU model, SIMD flags this benchmark cares about, core count, numpy and its BLAS, load average."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    blas = "unknown"
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{deps.get('name')} {deps.get('version')}"
    except Exception:  # noqa: BLE001 - older numpy: no dict form
        pass
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [f"cpu: {model} ({os.cpu_count()} logical cores)",
            "simd: " + (" ".join(f for f in SIMD_FLAGS if f in flags) or "none of " + " ".join(SIMD_FLAGS)),
            f"avx512_vnni: {'yes' if 'avx512_vnni' in flags else 'no'}",
            f"numpy {np.__version__}, BLAS {blas}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}",
            f"load average (1, 5, 15 min): {load}"]


def load_baseline(rev: str) -> type:
    """MILExecutor of the executor files at git revision ``rev``, as a class of private modules (the current
    mil_reader is shared: the baseline's reference.py imports it)."""
    sources = {}
    for path in EXECUTOR_FILES:
        sources[path] = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                                       capture_output=True, text=True).stdout
    import sa_deploy.backends.coreml.reference  # noqa: F401 - the current executor, imported before the swap below

    ops = types.ModuleType("baseline_mil_ops")
    exec(compile(sources[EXECUTOR_FILES[0]], f"{rev}:{EXECUTOR_FILES[0]}", "exec"), ops.__dict__)
    reference = types.ModuleType("baseline_reference")
    current = sys.modules["sa_deploy.backends.coreml.mil_ops"]
    sys.modules["sa_deploy.backends.coreml.mil_ops"] = ops  # what the baseline's `from ... import KERNELS` sees
    try:
        exec(compile(sources[EXECUTOR_FILES[1]], f"{rev}:{EXECUTOR_FILES[1]}", "exec"), reference.__dict__)
    finally:
        sys.modules["sa_deploy.backends.coreml.mil_ops"] = current
    return reference.MILExecutor


def package(model: str, precision: str, out: Path) -> Path:
    """The fold-lowered .mlpackage of ``model`` at ``precision`` in ``out``, exported when missing."""
    from sa_deploy.api import artifact_name, export_coreml
    from sa_deploy.models import create_model

    path = out / artifact_name(model, "fold", precision, suffix=".mlpackage")
    if not path.exists():
        print(f"exporting {path.name} ...", flush=True)
        calib = "embedded" if precision == "w8a8" else None
        export_coreml(create_model(model, pretrained=True), out, precision, "fold", calib=calib, parity=False)
    return path


def images(model: str, count: int) -> np.ndarray:
    """``count`` normalized images of the embedded validation sample (repeated if it holds fewer)."""
    from sa_deploy.data.preprocess import normalize
    from sa_deploy.data.sample import load_split
    from sa_deploy.models import create_model

    pixels = load_split("val")[0]
    pixels = np.resize(pixels, (count, *pixels.shape[1:])) if count > len(pixels) else pixels[:count]
    return normalize(pixels, create_model(model).preprocess)


def time_runner(runner: Any, x: np.ndarray, blas: Callable[[], Any]) -> tuple[float, np.ndarray]:
    """ms per image of one ``runner.infer`` over all of ``x`` (the runner runs them one at a time), and its output."""
    with blas():
        start = time.perf_counter()
        out = runner.infer(x)
        return (time.perf_counter() - start) * 1e3 / len(x), out


def bench(path: Path, x: np.ndarray, baseline_cls: type, rounds: int, settings: list[str]) -> list[str]:
    from sa_deploy.backends.coreml.reference import _BLAS, MILExecutor
    from sa_deploy.backends.coreml.runner import CoreMLRunner

    lines = []
    with CoreMLRunner(path, backend="reference") as runner:
        executors = {"before": baseline_cls(runner.model.package), "after": MILExecutor(runner.model.package)}
        for setting in settings:
            blas = (lambda: _BLAS.limit(1)) if setting == "blas1" else nullcontext
            times: dict[str, list[float]] = {name: [] for name in executors}
            outs: dict[str, np.ndarray] = {}
            for name, executor in executors.items():  # warm-up: first-call costs, caches
                runner.model = executor
                time_runner(runner, x[:2], blas)
            for _ in range(rounds):  # alternating, a pause between, so neither gets the other's spinning threads
                for name, executor in executors.items():
                    runner.model = executor
                    time.sleep(0.5)
                    ms, outs[name] = time_runner(runner, x, blas)
                    times[name].append(ms)
            before, after = (float(np.median(times[n])) for n in ("before", "after"))
            diff = np.abs(outs["before"].astype(np.float64) - outs["after"].astype(np.float64))
            agree = float(np.mean(outs["before"].argmax(1) == outs["after"].argmax(1)))
            lines.append(f"{path.name} [{setting}] {len(x)} images, one per executor call: before {before:.2f} "
                         f"ms/image, after {after:.2f} ms/image, {before / after:.2f}x; outputs: max |diff| "
                         f"{diff.max():.3g}, identical {bool(np.array_equal(outs['before'], outs['after']))}, top-1 "
                         f"agreement {agree:.0%} (per-round ms/image before {_fmt(times['before'])}, after "
                         f"{_fmt(times['after'])})")
            print(lines[-1], flush=True)
    return lines


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sa_resnet_cifar", help="registered model with embedded weights")
    p.add_argument("--images", type=int, default=64, help="images per timed round (default 64)")
    p.add_argument("--precisions", nargs="+", default=["fp16", "w8a8"], help="CoreML precisions (fp16 w8a8)")
    p.add_argument("--baseline", default="0e07dec", help="git revision of the executor to compare with (default "
                   "0e07dec: the executor before its vectorized rewrite)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per executor and setting (median reported)")
    p.add_argument("--settings", nargs="+", default=["default", "blas1"], choices=["default", "blas1"])
    p.add_argument("--out", type=Path, default=Path("/tmp/sa_mil_bench"), help="where the .mlpackages are")
    args = p.parse_args(argv)
    if args.images < 1 or args.rounds < 1:
        p.error("--images and --rounds must be at least 1")
    import sa_deploy.backends.coreml  # noqa: F401 - installs the filter for coremltools' import-time noise

    for line in cpu_lines():
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    baseline = load_baseline(args.baseline)
    x = images(args.model, args.images)
    print(f"baseline: executor at {args.baseline}; after: the working tree")
    for precision in args.precisions:
        bench(package(args.model, precision, args.out), x, baseline, args.rounds, args.settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
