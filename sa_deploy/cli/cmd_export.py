from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import add_model_args, console, input_size, load_model, mb
from sa_deploy.cli.coreml_export import add_coreml_args, run_coreml
from sa_deploy.cli.out_path import FOLDER_FORMS, resolve_out
from sa_deploy.errors import OutputPathError, ParityError, SADeployError

EXAMPLES = """examples:
  sa-deploy export --model sa_resnet_cifar --pretrained                  # out/sa_resnet_cifar_fold.onnx
  sa-deploy export --model sa_resnet_cifar --pretrained --out q2/model.onnx           # that file
  sa-deploy export --model sa_resnet50 --checkpoint model_best.pth.tar --lowering reshape-transpose --out out/
  sa-deploy export --model sa_resnet_cifar --pretrained --lowering fold reshape-transpose --format onnx coreml
      # four artifacts into out/: sa_resnet_cifar_fold.onnx, sa_resnet_cifar_reshape-transpose.onnx,
      # sa_resnet_cifar_fold_fp32.mlpackage, sa_resnet_cifar_reshape-transpose_fp32.mlpackage

--out: a file (.onnx; .mlpackage with --format coreml) or a folder (an existing one, a path ending in /, or a new
name without a suffix) that gets <model>_<lowering>.onnx / <model>_<lowering>_<precision>.mlpackage; several
lowerings or formats need a folder.
"""

SUFFIXES = {"onnx": ".onnx", "coreml": ".mlpackage"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX with an SA deploy lowering, and check parity",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--lowering", nargs="+", default=["fold"], choices=["reshape-transpose", "fold", "none"],
                   help="how SA is written in the graph, one or more (default: fold; none = naive export of the "
                        "reference)")
    p.add_argument("--input-size", type=input_size, default=None, help="square input size (default: the model's)")
    p.add_argument("--out", default="out/", help="output file or folder (default: out/; see below)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--format", nargs="+", default=["onnx"], choices=["onnx", "coreml"],
                   help="artifact format(s) (default onnx)")
    add_coreml_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.api import artifact_name, check_output

    lowerings, formats = list(dict.fromkeys(args.lowering)), list(dict.fromkeys(args.format))
    if "coreml" in formats and args.precision == "w8a8" and args.calib is None:
        raise SADeployError("--precision w8a8 needs --calib DIR (calibration images)")
    count = len(lowerings) * len(formats)
    try:
        out = resolve_out(args.out, () if count > 1 else (SUFFIXES[formats[0]],))
    except OutputPathError:
        if count == 1 or not (Path(args.out).suffix or Path(args.out).is_file()):
            raise
        raise SADeployError(f"--out {args.out}: {count} artifacts ({' and '.join(lowerings)} x "
                            f"{' and '.join(formats)}) go into a folder, not one file; pass {FOLDER_FORMS}") from None
    jobs = []  # (format, lowering, path): every output checked before the model is loaded or anything written
    for fmt in formats:
        for lowering in lowerings:
            parts = (args.model, lowering) + ((args.precision,) if fmt == "coreml" else ())
            path = out.file(artifact_name(*parts, suffix=SUFFIXES[fmt]))
            check_output(path)
            jobs.append((fmt, lowering, path))
    model = load_model(args)
    for fmt, lowering, path in jobs:
        if fmt == "coreml":
            run_coreml(args, model, lowering, path)
        else:
            _export_onnx(args, model, lowering, path)
    return 0


def _export_onnx(args: argparse.Namespace, model, lowering: str, path: Path) -> None:
    from sa_deploy.api import export

    try:
        result = export(model, path.parent, lowering=lowering, input_size=args.input_size,
                        simplify=not args.no_simplify, parity=not args.no_parity, filename=path.name)
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


def parity_table(stats) -> None:
    table = Table(title="parity vs PyTorch (onnxruntime CPU, fp32)")
    for col in ("batch", "max abs", "max rel", "cosine", "top-1 agree", "status"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(str(s.batch), f"{s.max_abs:.2e}", f"{s.max_rel:.2e}", f"{s.cosine:.7f}",
                      f"{s.top1_agreement:.0%}", "[green]pass[/green]" if s.passed else "[red]FAIL[/red]")
    console.print(table)
