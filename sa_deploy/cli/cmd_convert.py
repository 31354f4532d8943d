from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import add_preprocess_args, console, mb, preprocess_overrides
from sa_deploy.cli.out_path import out_type

EXAMPLES = """examples:
  sa-deploy convert out/sa_resnet_cifar_fold.onnx --to openvino                  # FP32 IR
  sa-deploy convert out/sa_resnet_cifar_fold.onnx --to openvino --fp16-weights   # FP16-compressed weights
  sa-deploy convert out/sa_resnet_cifar_fold_int8_cpu_entropy.onnx --to openvino # INT8 from the Q/DQ ONNX
  sa-deploy convert my_model.onnx --to openvino --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225
      # an ONNX file sa-deploy did not write: the flags are recorded in the IR (optional)
needs: pip install 'sa-deploy[openvino]'; writes NAME.xml + NAME.bin (the deploy config is in the IR's rt_info)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an sa-deploy ONNX file to another runtime's format (OpenVINO IR)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="FP32 or INT8 Q/DQ ONNX file (sa-deploy's or your own)")
    p.add_argument("--to", choices=["openvino"], default="openvino", help="target format (default: openvino)")
    p.add_argument("--fp16-weights", action="store_true", help="store weights as FP16 (FP32 ONNX only)")
    p.add_argument("--out", type=out_type((".xml",), "an OpenVINO IR is written as NAME.xml + NAME.bin"), default=None,
                   metavar="NAME.xml|DIR/",
                   help="the IR's .xml (its .bin beside it), or a folder for the default name (default: beside "
                        "FILE: <stem>_fp32.xml, <stem>_fp16.xml with --fp16-weights, <stem>.xml for an INT8 file)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check against the ONNX file")
    add_preprocess_args(p, "optional for convert: given, the IR carries the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy import api
    from sa_deploy.errors import BudgetExceededError

    out = args.out.file(default_ir_name(args.file, args.fp16_weights)) if args.out else None
    result = api.export_openvino(args.file, out, args.fp16_weights, parity=not args.no_parity,
                                 preprocess=preprocess_overrides(args))
    exp = result.export
    console.print(f"[bold]converted[/bold] {exp.path} (+ {exp.path.with_suffix('.bin').name}; {mb(exp.size_bytes)} MB, "
                  f"{exp.precision}, OpenVINO {exp.metadata['openvino_version']}, {exp.seconds:.1f} s)")
    if result.parity:
        table = Table(title=f"parity vs {args.file.name} (OpenVINO CPU f32 hint vs onnxruntime)")
        for col in ("batch", "max abs", "cosine", "top-1 agree", "status"):
            table.add_column(col, justify="right")
        for s in result.parity:
            table.add_row(str(s.batch), f"{s.max_abs:.2e}", f"{s.cosine:.7f}", f"{s.top1_agreement:.0%}",
                          "[green]pass[/green]" if s.passed else "[red]FAIL[/red]")
        console.print(table)
        if not all(s.passed for s in result.parity):
            raise BudgetExceededError(f"parity check failed for {exp.path.name} (see table above)")
    return 0


def default_ir_name(onnx_path: Path, fp16_weights: bool) -> str:
    """The IR name api.export_openvino gives a file by default: ``<stem>.xml`` for an INT8 (Q/DQ) file,
    ``<stem>_fp16.xml`` with FP16 weights, else ``<stem>_fp32.xml``."""
    from sa_deploy.api import derived_path
    from sa_deploy.exporters.metadata import read_deploy_metadata

    int8 = read_deploy_metadata(onnx_path).precision == "int8"
    return derived_path(onnx_path, "" if int8 else ("fp16" if fp16_weights else "fp32"), suffix=".xml").name
