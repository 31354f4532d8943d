"""Build every benchmark variant of the registered SA models and time them on onnxruntime CPU.

    python scripts/bench.py                       # all four models, batch 1 and 8 -> benchmarks/
    python scripts/bench.py --models sa_resnet_cifar --rounds 1 --iters 2 --batch 1 --out /tmp/b

Artifacts go to <out>/artifacts/ and are reused by later runs (--rebuild to export them again)."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from sa_deploy.bench.profile import profile_markdown
from sa_deploy.bench.timing import Artifact, run_benchmark
from sa_deploy.bench.variants import VARIANTS, build_variants
from sa_deploy.cli.cmd_bench import add_bench_args, check_bench_args, print_rows
from sa_deploy.cli.common import console
from sa_deploy.report.bench import paired_ratio

MODELS = ("sa_resnet50", "sa_mobilenetv2", "sa_resnet_cifar", "sa_mobilenetv2_cifar")
PROFILED = ("floor", "fold", "int8-cpu", "int8-cpu-float-gate")
# targets: (model, runtime, variant, reference runtime, reference variant, limit)
TARGETS = (("sa_resnet50", "onnxruntime", "fold", "onnxruntime", "floor", 1.05),
           ("sa_resnet50", "onnxruntime", "int8-cpu", "onnxruntime", "fold", 0.55),
           ("sa_resnet50", "openvino", "fold", "openvino", "floor", 1.05),
           ("sa_resnet50", "openvino", "int8-cpu", "onnxruntime", "fold", 0.30))


def target_lines(rows, batches) -> list[str]:
    out = []
    for model, rt, a, rt_b, b, limit in TARGETS:
        for batch in batches:
            r = paired_ratio(rows, model, a, b, batch, rt, rt_b)
            if r is not None:
                verdict = "reached" if r <= limit else "NOT reached"
                out.append(f"target {model} {a} ({rt}) / {b} ({rt_b}) <= {limit:.2f}x at batch {batch}: "
                           f"{r:.3f}x, {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"registered models (default: {MODELS})")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                   help=f"variants to build and time (default: all of {', '.join(VARIANTS)})")
    add_bench_args(p)
    p.add_argument("--out", type=Path, default=Path("benchmarks"), help="output folder (default: benchmarks/)")
    p.add_argument("--rebuild", action="store_true", help="export the artifacts again even if present")
    p.add_argument("--profile", nargs="*", default=None, metavar="MODEL",
                   help="add onnxruntime per-op-type profiles of these models' floor / fold / int8-cpu(-float-gate) "
                        "files to RESULTS.md (default: sa_resnet50 when benchmarked; none with an empty list)")
    p.add_argument("--profile-batch", type=int, nargs="+", default=[1], metavar="N",
                   help="batch sizes of the profiles (default: 1)")
    args = p.parse_args(argv)
    check_bench_args(args)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice per tensor
    artifacts: list[Artifact] = []
    weights: dict[str, str] = {}
    for name in args.models:
        console.print(f"building {name} variants", style="dim")
        for v in build_variants(name, args.out / "artifacts", tuple(args.variants), reuse=not args.rebuild):
            artifacts.append(Artifact(name, v.name, v.path, v.note))
            weights[name] = v.weights
    command = "python scripts/bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    notes = [f"{m} weights: {w}" for m, w in weights.items()]
    notes.append("exact alternative forms of the fold gate, side by side in CPU time: benchmarks/gate_forms.md")
    profiled = args.profile if args.profile is not None else [m for m in args.models if m == "sa_resnet50"]
    extra = ""
    if profiled:
        console.print(f"profiling {', '.join(profiled)}", style="dim")
        files = {f"{a.group} {a.name}": a.path for a in artifacts if a.group in profiled and a.name in PROFILED}
        extra = "\n".join(profile_markdown(files, batch=b, threads=args.threads) for b in args.profile_batch)
    rows, report = run_benchmark(artifacts, args.out, command.strip(), tuple(args.batch), args.rounds, args.iters,
                                 args.threads, notes, progress=lambda m: console.print(m, style="dim"), extra=extra,
                                 runtimes=tuple(args.runtimes), verdicts=lambda r: target_lines(r, args.batch))
    print_rows(rows)
    console.print("\n".join(target_lines(rows, args.batch)))
    console.print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
