from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import console, positive_int

EXAMPLES = """examples:
  sa-deploy lint --target tensorrt out/sa_resnet50_fold_int8_tensorrt_entropy.onnx
  sa-deploy lint --target tensorrt model.onnx --max-batch 64 --json
  sa-deploy lint --target cpu out/sa_resnet_cifar_fold_int8_cpu_entropy.onnx   # int16 saturation without VNNI
exit status: 0 when no error is found (warnings allowed), 1 otherwise
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lint", help="check offline that an ONNX file suits a deployment target (no TensorRT needed)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--target", choices=["tensorrt", "cpu"], default="tensorrt",
                   help="deployment target (default tensorrt); cpu: can an INT8 Q/DQ file saturate the int16 pair "
                   "sums of x86 CPUs without VNNI (a static bound from the file, the same answer on any machine)")
    p.add_argument("--max-batch", type=positive_int, default=None, help="largest batch the engine profile will cover")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.api import lint_onnx

    report = lint_onnx(args.file, max_batch=args.max_batch, target=args.target)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.passed else 1
    checked = ", ".join(f"{k} {v}" for k, v in report.checked.items() if v)
    console.print(f"[bold]{args.file}[/bold] for {report.target}: checked {checked}")
    if report.findings:
        table = Table(title="findings")
        for col in ("severity", "rule", "message", "nodes"):
            table.add_column(col)
        for f in report.findings:
            nodes = ", ".join(f"{n} ({op})" for n, op in f.nodes[:3]) + (
                f" +{len(f.nodes) - 3}" if len(f.nodes) > 3 else "")
            table.add_row("[red]error[/red]" if f.severity == "error" else "[yellow]warning[/yellow]", f.rule,
                          f.message, nodes)
        console.print(table)
    console.print(("[green]" if report.passed else "[red]") + report.summary() + ("[/green]" if report.passed
                                                                                   else "[/red]"))
    return 0 if report.passed else 1
