from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import batch_size, console, input_size, positive_int, threads
from sa_deploy.cli.out_path import out_type

BENCH_WRITES = "RESULTS.md, results.json and latency.png"

EXAMPLES = """examples:
  sa-deploy bench out/sa_resnet50_fold.onnx out/sa_resnet50_none.onnx --batch 1 8 --rounds 10
  sa-deploy bench out/*.onnx --runtimes onnxruntime openvino openvino-bf16   # same files, both runtimes
  sa-deploy bench my_model.onnx my_model_int8_tensorrt_entropy.onnx --input-size 224   # any ONNX files; the size
                                                    # is needed only when H/W are dynamic and there is no metadata
  sa-deploy bench out/*.onnx --out out/bench_b8/ --batch 8        # RESULTS.md, results.json, latency.png there
  python scripts/bench.py            # builds every variant of the registered models and benchmarks them

bench writes RESULTS.md, results.json and latency.png into --out (default out/bench/) and replaces them only when
they are unchanged since sa-deploy wrote them (results.json records their SHA-256): a RESULTS.md edited by hand,
like the project's own benchmarks/RESULTS.md, is never overwritten.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency of ONNX artifacts on onnxruntime / OpenVINO CPU, interleaved in rounds",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+", type=Path,
                   help=".onnx files (grouped by the model in their metadata, else by file name)")
    add_bench_args(p)
    p.add_argument("--input-size", type=input_size, metavar="S", default=None,
                   help="square input size to time at (default: the graph's fixed H/W, else the size in its "
                        "sa-deploy metadata)")
    p.add_argument("--out", type=out_type(what=BENCH_WRITES), default="out/bench/", metavar="DIR/",
                   help=f"folder for {BENCH_WRITES} (an existing one, a path ending in /, or a new name without a "
                        "suffix; default: out/bench/)")
    p.set_defaults(func=run)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=batch_size, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--iters", type=positive_int, default=10, help="timed calls per variant per round (default: 10)")
    p.add_argument("--threads", type=threads, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--runtimes", nargs="+", default=None, metavar="RUNTIME",
                   help="onnxruntime, openvino, openvino-bf16 (default: every one available here)")


def print_rows(rows) -> None:
    from sa_deploy.report.bench import COLUMNS, row_cells

    table = Table(title="CPU latency (one interleaved run)")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right")
    for r in rows:
        table.add_row(*row_cells(r))
    console.print(table)


def check_bench_args(args: argparse.Namespace) -> None:
    from sa_deploy.bench.timing import RUNTIMES, available_runtimes
    from sa_deploy.errors import SADeployError

    if args.rounds < 1 or args.iters < 1 or min(args.batch) < 1:
        raise SADeployError("--rounds, --iters and --batch must be positive")
    if args.runtimes is None:
        args.runtimes = available_runtimes()
    unknown = [r for r in args.runtimes if r not in RUNTIMES]
    if unknown:
        raise SADeployError(f"unknown runtime {unknown[0]!r}; choose from: {', '.join(RUNTIMES)}")


# artifacts of other runtimes that bench does not time (by backend), and what to do instead
NOT_TIMED = {
    "coreml": "a CoreML package; bench times ONNX files on CPU runtimes (CoreML runs on macOS, and sa-deploy's "
              "reference MIL executor off macOS is a correctness check, not a latency): pass the ONNX file it was "
              "exported from",
    "openvino": "an OpenVINO IR; bench times ONNX files, and OpenVINO reads them itself (--runtimes openvino): pass "
                "the ONNX file it was converted from",
    "tensorrt": "a TensorRT engine; bench times ONNX files on CPU runtimes (TensorRT runs on a CUDA GPU)",
}


def run(args: argparse.Namespace) -> int:
    from sa_deploy.bench.timing import artifacts_from_files, run_benchmark
    from sa_deploy.errors import SADeployError

    check_bench_args(args)
    missing = [str(p) for p in args.artifacts if not (p.exists() or p.is_symlink())]
    if missing:
        raise SADeployError(f"artifact not found: {', '.join(missing)}")
    from sa_deploy.backends import find_backend

    for p in args.artifacts:
        backend = find_backend(p)
        if backend is not None and backend.name != "onnxruntime":
            raise SADeployError(f"{p.name}: " + NOT_TIMED.get(backend.name, f"a {backend.name} artifact; bench "
                                                             "times ONNX files: pass the ONNX file it came from"))
    artifacts = artifacts_from_files(args.artifacts, args.input_size)
    command = "sa-deploy " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "sa-deploy bench ..."
    rows, report = run_benchmark(artifacts, args.out.path, command, tuple(args.batch), args.rounds, args.iters,
                                 args.threads, progress=lambda m: console.print(m, style="dim"),
                                 runtimes=tuple(args.runtimes))
    print_rows(rows)
    from sa_deploy.util.machine import machine_info

    console.print(f"machine: {machine_info(args.threads)['summary']}", markup=False)  # the int8 path included
    console.print(f"wrote {report}")
    return 0
