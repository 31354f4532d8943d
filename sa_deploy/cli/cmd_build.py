from __future__ import annotations

import argparse
from pathlib import Path

from sa_deploy.cli.common import batch_size, console, int_in, mb, output_file, positive_int
from sa_deploy.cli.out_path import out_type
from sa_deploy.errors import MissingDependencyError, SADeployError

INSTALL = ("pip install 'tensorrt>=10' (the NVIDIA package; from a source checkout of sa-deploy also: "
           "pip install -e '.[tensorrt]')")
EXAMPLES = f"""examples:
  sa-deploy build out/sa_resnet50_fold_fp16.onnx --precision fp16 --max-batch 32
  sa-deploy build out/sa_resnet50_fold_int8_tensorrt_entropy.onnx --precision int8 --timing-cache trt.cache \\
      --out engines/                     # engines/sa_resnet50_fold_int8_tensorrt_entropy.engine
  sa-deploy build out/sa_resnet50_fold.onnx --precision int8 --legacy-calibrator entropy --calib DIR  (TensorRT 10)
needs: {INSTALL} and a CUDA GPU; writes ENGINE and ENGINE.json (sidecar)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine from an ONNX file (lints it first)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="ONNX model (Q/DQ for int8, FP16 graph for fp16 on TensorRT 11)")
    p.add_argument("--precision", choices=["fp16", "int8"], required=True)
    p.add_argument("--min-batch", type=batch_size, default=1)
    p.add_argument("--opt-batch", type=batch_size, default=8)
    p.add_argument("--max-batch", type=batch_size, default=32)
    p.add_argument("--workspace-mb", type=positive_int, default=None,
                   help="builder workspace limit (default: TensorRT's)")
    p.add_argument("--timing-cache", type=output_file, default=None,
                   help="timing cache file, read if present, then saved")
    p.add_argument("--opt-level", type=int_in(0, 5), default=None, help="builder optimization level 0..5")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10: take precision from the graph, as TensorRT 11 always does")
    p.add_argument("--legacy-calibrator", choices=["entropy", "minmax"], default=None,
                   help="TensorRT 10 only: implicit INT8 calibration of an fp32 graph (needs --calib)")
    p.add_argument("--calib", type=Path, default=None, help="calibration images (folder or .npz)")
    p.add_argument("--calib-num", type=positive_int, default=512, help="calibration images used (default 512)")
    p.add_argument("--no-lint", action="store_true", help="skip the offline TensorRT lint")
    p.add_argument("--out", type=out_type((".engine", ".plan")), default=None, metavar="ENGINE|DIR/",
                   help="engine path (.engine), or a folder for the default name (default: FILE with .engine)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.api import build_engine

    out = args.out.file(args.file.with_suffix(".engine").name) if args.out else None
    try:
        result = build_engine(args.file, out, args.precision, args.min_batch, args.opt_batch, args.max_batch,
                              args.workspace_mb, args.timing_cache, args.opt_level,
                              strongly_typed=args.strongly_typed or None, legacy_calibrator=args.legacy_calibrator,
                              calib=args.calib, calib_num=args.calib_num, lint=not args.no_lint)
    except MissingDependencyError as exc:  # its hint names the extra of an sa-deploy package not on PyPI
        if "'tensorrt'" not in str(exc):
            raise
        raise SADeployError(f"{str(exc).split(':')[0]}: {INSTALL}") from None
    side = result.sidecar
    low, high = side.batch_range
    console.print(f"[bold]built[/bold] {result.path} ({mb(result.size_bytes)} MB, {side.precision}, {side.typing}, "
                  f"TensorRT {side.tensorrt_version}, {side.gpu.get('name')}, batch {low}..{high}, "
                  f"{side.build_seconds} s)")
    console.print(f"  sidecar {result.sidecar_path}")
    return 0
