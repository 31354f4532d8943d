from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import console, finite_float, positive_int
from sa_deploy.cli.out_path import out_type
from sa_deploy.errors import BudgetExceededError

EXAMPLES = """examples:
  sa-deploy run                                   # embedded default model + images (see "images" below)
  sa-deploy run --model sa_mobilenetv2_cifar --out out/mbv2
  sa-deploy run --data cifar10/                   # cifar10/train/<class>/*.png and cifar10/val/<class>/*.png
  sa-deploy run --model sa_resnet50 --checkpoint model_best.pth.tar \\
      --val imagenet/val --labels imagenet/val.txt --calib imagenet/calib   # flat folder + labels file
  sa-deploy run --config plan.yaml                # any RunPlan key (see sa_deploy/plan.py)

images: --data DIR (DIR/train for calibration, DIR/val for validation), else $SA_DEPLOY_DATA, else
../shared/data/cifar10 when present, else the CIFAR-10 sample embedded in sa-deploy (1,000 validation / 512
calibration images; `--data embedded` asks for it). --labels FILE: CSV `filename,label` with a header, or
`filename label` lines (ImageNet's val.txt); labels are class indices or the model's class names.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline: export, FP16, INT8, CoreML/TensorRT, parity, accuracy, "
                       "latency, report", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model (default: sa_resnet_cifar, with embedded weights)")
    p.add_argument("--checkpoint", help="weights (default: the model's embedded weights)")
    p.add_argument("--data", help="folder with train/ (calibration) and val/ (labeled) image folders, or "
                   "`embedded` (default: see \"images\" below)")
    p.add_argument("--val", help="validation images: class folders, .npz, or a flat folder with --labels "
                   "(default: DATA/val)")
    p.add_argument("--calib", help="calibration images: a folder (flat or per class) or .npz (default: DATA/train)")
    p.add_argument("--labels", help="labels file for a flat validation folder: CSV `filename,label` or "
                   "`filename label` lines")
    p.add_argument("--out", type=out_type(what="artifacts and report.html/md/json"), metavar="DIR/",
                   help="output folder (an existing one, a path ending in /, or a new name without a suffix; "
                        "default: out/run)")
    p.add_argument("--config", type=Path, help="YAML file with RunPlan keys; command-line options win")
    p.add_argument("--calib-num", type=positive_int, help="calibration images (default 512)")
    p.add_argument("--val-num", type=positive_int, help="validation images (default: all)")
    p.add_argument("--int8-method", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--max-drop", type=finite_float, dest="int8_max_drop",
                   help="INT8 top-1 drop budget, points (1.0)")
    p.add_argument("--int8-weight-bits", type=int, choices=[7, 8],
                   help="INT8 weight bits (default: cpu flavour 7, overflow-safe on every CPU; tensorrt 8)")
    p.add_argument("--no-coreml", action="store_false", dest="coreml", default=None)
    p.add_argument("--no-openvino", action="store_false", dest="openvino", default=None)
    p.add_argument("--no-executorch", action="store_false", dest="executorch", default=None)
    p.add_argument("--no-tensorrt", action="store_false", dest="tensorrt", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.pipeline import run as run_pipeline
    from sa_deploy.plan import load_plan
    from sa_deploy.report.render import COLUMNS, summary_rows

    overrides = {k: getattr(args, k) for k in ("model", "checkpoint", "data", "val", "calib", "labels",
                                                 "calib_num", "val_num",
                                                 "int8_method", "int8_weight_bits", "int8_max_drop", "coreml",
                                                 "openvino", "executorch", "tensorrt")}
    overrides["out"] = str(args.out.path) if args.out else None
    plan = load_plan(args.config, overrides)
    report = run_pipeline(plan, log=lambda s: console.print(s, markup=False))
    table = Table(title=f"{report['model']['name']}: {report['data']['source']}; "
                        f"PyTorch FP32 top-1 {report['reference'].get('top1', float('nan')):.2f}%")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col not in ("format", "status") else "left")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report['files']['html']}  {report['files']['md']}  {report['files']['json']}  "
                  f"({report['seconds']:.0f}s)")
    if not report["passed"]:
        raise BudgetExceededError(failure_summary(report))
    return 0


def failure_summary(report: dict) -> str:
    """Which artifacts failed (and why) and which are valid, in one line."""
    arts = report["artifacts"]
    bad = [a for a in arts if a["status"] != "ok" or a.get("top1") is None]
    good = [Path(a["path"]).name for a in arts if a not in bad and a.get("path")]
    why = "; ".join(f"{a['name']} {a['status']}" + (f" ({str(a['reason'])[:150]})" if a.get("reason") else
                                                    " (not evaluated)") for a in bad[:3])
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"{len(bad)} of {len(arts)} artifact(s) failed a gate or a stage: {why}{more}; valid: "
            f"{', '.join(good) or 'none'}; report: {report['files']['md']}")
