"""``sa-deploy`` command line: a thin layer over the Python API. One module per command (``cmd_*.py``)
exposing ``register(subparsers)``; add a command by adding its module to COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from sa_deploy.errors import SADeployError

COMMANDS = ["cmd_list_models", "cmd_export", "cmd_inspect", "cmd_quantize", "cmd_convert", "cmd_validate",
            "cmd_run", "cmd_lint", "cmd_build", "cmd_bench"]

EPILOG = """examples:
  sa-deploy list-models
  sa-deploy export --model sa_resnet_cifar --pretrained --lowering fold --out out/
  sa-deploy export --model sa_resnet50 --checkpoint sa_resnet50.pth.tar --lowering reshape-transpose
  sa-deploy inspect out/sa_resnet_cifar_fold.onnx
  sa-deploy lint --target tensorrt out/sa_resnet_cifar_fold.onnx
  sa-deploy build out/sa_resnet_cifar_fold_int8.onnx --precision int8
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib embedded --flavour tensorrt
  sa-deploy fp16 out/sa_resnet_cifar_fold.onnx
  sa-deploy convert out/sa_resnet_cifar_fold.onnx --to openvino --fp16-weights
  sa-deploy validate --model sa_resnet_cifar --pretrained --data embedded \\
      --artifacts out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_fold_fp16.onnx --json out/validation.json
  sa-deploy bench out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_none.onnx --batch 1 8 --rounds 10
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-deploy", description="Deploy Shuffle Attention (SA-Net) models to ONNX / TensorRT / CoreML and "
        "prove each artifact right.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from sa_deploy import __version__

    parser.add_argument("--version", action="version", version=f"sa-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


_FORMAT_WARNING = warnings.formatwarning


def _one_line_warnings(command: str) -> None:
    """sa-deploy's own warnings (skipped images, unlisted files...) print as one line, like its errors."""
    package = str(Path(__file__).resolve().parents[1])

    def fmt(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"sa-deploy {command}: warning: {message}\n"
        return _FORMAT_WARNING(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _one_line_warnings(args.command)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    # FP16 conversion warns for every tiny weight it rounds; the parity column reports the real effect
    warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
    try:
        return int(args.func(args) or 0)
    except SADeployError as exc:
        print(f"sa-deploy {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sa-deploy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
