"""``sa-deploy`` command line: a thin layer over the Python API. One module per command (``cmd_*.py``)
exposing ``register(subparsers)``; add a command by adding its module to COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings
from typing import NoReturn

from sa_deploy.errors import SADeployError

COMMANDS = ["cmd_list_models", "cmd_export", "cmd_inspect", "cmd_quantize", "cmd_convert", "cmd_validate",
            "cmd_run", "cmd_lint", "cmd_build", "cmd_bench"]

EPILOG = """examples:
  sa-deploy list-models
  sa-deploy export --model sa_resnet_cifar --pretrained --lowering fold --out out/
  sa-deploy export --model sa_resnet50 --checkpoint sa_resnet50.pth.tar --lowering reshape-transpose
  sa-deploy inspect out/sa_resnet_cifar_fold.onnx
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib embedded --flavour tensorrt
  sa-deploy lint --target tensorrt out/sa_resnet_cifar_fold_int8_tensorrt_entropy.onnx
  sa-deploy build out/sa_resnet_cifar_fold_int8_tensorrt_entropy.onnx --precision int8
  sa-deploy fp16 out/sa_resnet_cifar_fold.onnx
  sa-deploy convert out/sa_resnet_cifar_fold.onnx --to openvino --fp16-weights
  sa-deploy validate --model sa_resnet_cifar --pretrained --data embedded \\
      --artifacts out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_fold_fp16.onnx --json out/validation.json
  sa-deploy bench out/sa_resnet_cifar_fold.onnx out/sa_resnet_cifar_none.onnx --batch 1 8 --rounds 10
  sa-deploy quantize my_model.onnx --calib imgs/ --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225   # your own ONNX
  sa-deploy validate --reference my_model.onnx --data val/ --artifacts my_model_int8_tensorrt_entropy.onnx

--out (export, fp16, quantize, convert, build, run, bench): a path ending in the suffix the command writes (.onnx,
.xml, .mlpackage, .engine) is that file; a path ending in /, an existing folder or a new name without a suffix is
a folder that gets the default name(s); anything else is refused. run, bench and several exports take a folder.
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``sa-deploy CMD: error: MESSAGE (see sa-deploy CMD --help)``.
    Sub-command parsers are of this class too (argparse creates them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sa-deploy", description="Deploy Shuffle Attention (SA-Net) models to ONNX / TensorRT / CoreML and "
        "prove each artifact right.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from sa_deploy import __version__

    parser.add_argument("--version", action="version", version=f"sa-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _one_line(message: str) -> str:
    """A message as one printable line: newlines folded, undecodable file-name bytes shown as escapes."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "(no details)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(command: str, message: str) -> None:
    print(f"sa-deploy {command}: error: {_one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The CLI and its error boundary. Exit status: 0 ok; 1 lint findings; 2 a user error (bad flag, bad file,
    unwritable output: one line naming it); 3 a validation gate (accuracy budget, parity); 70 an internal error (a bug
    in sa-deploy: its traceback is shown); 130 interrupted."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error, already printed as one line: its status (--help/--version exit 0)
        if exc.code in (0, None):
            raise
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    command = args.command
    # warnings print as one line; formatwarning (not showwarning) so that recorders such as pytest.warns still work
    original_format = warnings.formatwarning
    warnings.formatwarning = _warning_formatter(command)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        # FP16 conversion warns for every tiny weight it rounds; the parity column reports the real effect
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
        try:
            return int(args.func(args) or 0)
        except SADeployError as exc:
            _error(command, str(exc))
            return exc.exit_code
        except KeyboardInterrupt:
            print("sa-deploy: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:
            if not exc.filename:  # an OS error not about a path the user gave: treat as a bug below
                return _internal_error(command)
            # the OS refused an operation on a named path (permissions, disk full, ...): the user can fix that
            where = exc.filename if not exc.filename2 else f"{exc.filename} -> {exc.filename2}"
            _error(command, f"{exc.strerror or type(exc).__name__}: {where}")
            return 2
        except MemoryError:
            _error(command, "out of memory (an input or a flag asks for more memory than this machine has)")
            return 2
        except Exception:  # noqa: BLE001 - the boundary: anything else is a bug and keeps its traceback
            return _internal_error(command)
        finally:
            warnings.formatwarning = original_format


def _internal_error(command: str) -> int:
    traceback.print_exc()
    print(f"sa-deploy {command}: internal error: this is a bug in sa-deploy, not a problem with your input; please "
          "report it with the traceback above", file=sys.stderr)
    return 70


def _warning_formatter(command: str):
    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"sa-deploy {command}: warning: {_one_line(str(message))}\n"
    return format_warning


if __name__ == "__main__":
    raise SystemExit(main())
