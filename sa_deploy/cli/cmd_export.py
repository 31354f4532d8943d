from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import add_model_args, console, input_size, load_model, mb, output_dir
from sa_deploy.cli.coreml_export import add_coreml_args, run_coreml
from sa_deploy.errors import ParityError

EXAMPLES = """examples:
  sa-deploy export --model sa_resnet_cifar --pretrained
  sa-deploy export --model sa_resnet50 --checkpoint model_best.pth.tar --lowering reshape-transpose --out out/
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX with an SA deploy lowering, and check parity",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--lowering", default="fold", choices=["reshape-transpose", "fold", "none"],
                   help="how SA is written in the graph (default: fold; none = naive export of the reference)")
    p.add_argument("--input-size", type=input_size, default=None, help="square input size (default: the model's)")
    p.add_argument("--out", type=output_dir, default=Path("out"), help="output folder (default: out/)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--format", default="onnx", choices=["onnx", "coreml"], help="artifact format (default onnx)")
    add_coreml_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.api import export

    model = load_model(args)
    if args.format == "coreml":
        return run_coreml(args, model)
    try:
        result = export(model, args.out, lowering=args.lowering, input_size=args.input_size,
                        simplify=not args.no_simplify, parity=not args.no_parity)
    except ParityError as exc:  # the failing file was not written; show what failed, then the one-line error
        parity_table(exc.stats)
        raise
    exp = result.export
    console.print(f"[bold]exported[/bold] {exp.path}  ({mb(exp.size_bytes)} MB, {exp.nodes} nodes, "
                  f"lowering {exp.lowering}, input {exp.input_size}x{exp.input_size}, {exp.simplify_note})")
    console.print(exp.lowering_summary)
    unfolded = [layer for layer in exp.sa_layers if layer.reason]
    if unfolded:
        table = Table(title="SA layers not folded (lowered with reshape-transpose)")
        for col in ("layer", "channels", "why not folded"):
            table.add_column(col)
        for layer in unfolded:
            table.add_row(layer.name, str(layer.channels), layer.reason)
        console.print(table)
    if result.parity:
        parity_table(result.parity)
    console.print("next:\n"
                  f"  sa-deploy inspect {exp.path}\n"
                  f"  sa-deploy quantize {exp.path} --calib DIR")
    return 0


def parity_table(stats) -> None:
    table = Table(title="parity vs PyTorch (onnxruntime CPU, fp32)")
    for col in ("batch", "max abs", "max rel", "cosine", "top-1 agree", "status"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(str(s.batch), f"{s.max_abs:.2e}", f"{s.max_rel:.2e}", f"{s.cosine:.7f}",
                      f"{s.top1_agreement:.0%}", "[green]pass[/green]" if s.passed else "[red]FAIL[/red]")
    console.print(table)
