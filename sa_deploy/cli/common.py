"""Helpers shared by CLI commands: model loading arguments, argument types that check values where they enter,
console, formatting."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from rich.console import Console

# mirror sa_deploy.models.preprocessing (importing it imports torch, and `--help` must import none of the stack);
# tests/test_cli_imports.py checks they agree
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:  # logs and CI: wide tables instead of rich's 80-column default
    console.width = 160

MAX_THREADS = 1024
MAX_BATCH = 1024
MAX_CLASSES = 100_000
MAX_CLASS_NAMES_BYTES = 10_000_000


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in lo..hi (hi None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


positive_int = int_in(1)
input_size = int_in(MIN_INPUT_SIZE, MAX_INPUT_SIZE)
resize_size = int_in(MIN_INPUT_SIZE, 4 * MAX_INPUT_SIZE)  # PreprocessConfig's bound
threads = int_in(1, MAX_THREADS)
batch_size = int_in(1, MAX_BATCH)


def finite_float(text: str) -> float:
    """argparse type: a finite number (an accuracy-drop budget in points; negative: the artifact must be better)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a normalization std)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def class_names_file(text: str) -> tuple[str, ...]:
    """argparse type: a UTF-8 text file with one class name per line (in output order): not empty, no duplicates,
    no blank line among the names (trailing blank lines are ignored; names are stripped)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a file" if path.exists() else f"{path} not found")
    if path.stat().st_size > MAX_CLASS_NAMES_BYTES:
        raise argparse.ArgumentTypeError(f"{path.name} is larger than {MAX_CLASS_NAMES_BYTES // 1_000_000} MB; "
                                         "expected one class name per line")
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{path.name} is not UTF-8 text (byte {exc.start}); expected one class "
                                         "name per line") from None
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise argparse.ArgumentTypeError(f"{path.name} is empty; expected one class name per line")
    if "" in names:
        raise argparse.ArgumentTypeError(f"{path.name}: line {names.index('') + 1} is blank; expected one class "
                                         "name per line")
    if len(names) > MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"{path.name} lists {len(names)} names (at most {MAX_CLASSES})")
    seen: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if n in seen:
            raise argparse.ArgumentTypeError(f"{path.name}: {n!r} is on lines {seen[n]} and {i}; class names must be "
                                             "distinct")
        seen[n] = i
    return tuple(names)


def _no_file_above(path: Path) -> None:
    for parent in path.parents:
        if parent.is_dir():
            return
        if parent.exists() or parent.is_symlink():
            raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")


def output_file(text: str) -> Path:
    """argparse type: where a file will be written: not an existing folder, not under a file. (Whether an
    existing file may be replaced is decided by the writer, from the file's content: only sa-deploy's own.)"""
    path = Path(text)
    _no_file_above(path)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is an existing folder; pass a file path (sa-deploy never replaces "
                                         "a folder)")
    return path


def output_dir(text: str) -> Path:
    """argparse type: a folder sa-deploy writes its files into (existing or not): not a file, not under a file."""
    path = Path(text)
    _no_file_above(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; pass a folder")
    return path


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, help="registered model name (see `sa-deploy list-models`)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="weights: official training checkpoint or plain state_dict")
    src.add_argument("--pretrained", action="store_true", help="use the weights embedded in sa-deploy")
    g.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=None,
                   help="classifier size if not the model's default")
    g.add_argument("--allow-nonfinite", action="store_true",
                   help="load a checkpoint even if some weights are NaN/Inf (refused by default)")


def add_preprocess_args(p: argparse.ArgumentParser, purpose: str = "") -> None:
    """The preprocessing flags: for an ONNX file sa-deploy did not write (no ``sa_deploy.preprocess`` metadata) they
    are its preprocessing (--mean and --std required); for one it wrote, each given flag replaces that field."""
    g = p.add_argument_group(
        "preprocessing", "for an ONNX file without sa-deploy metadata (--mean and --std required then; the input "
        "size defaults to the graph's fixed H/W, --resize to the input size); for an sa-deploy file each flag "
        "replaces that field" + (f"; {purpose}" if purpose else ""))
    g.add_argument("--input-size", type=input_size, metavar="S",
                   help=f"square model input (crop) size, {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}")
    g.add_argument("--resize", type=resize_size, metavar="R",
                   help="resize the shorter image side to R before the center crop (>= the input size)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, help="resize interpolation (default bilinear)")
    g.add_argument("--mean", type=finite_float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel mean subtracted after scaling pixels to 0..1")
    g.add_argument("--std", type=positive_float, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel std divided by after the mean (positive)")
    g.add_argument("--class-names", type=class_names_file, metavar="FILE",
                   help="UTF-8 text file, one class name per line in output order")


def preprocess_overrides(args: argparse.Namespace):
    """The preprocessing flags given (PreprocessOverrides; empty when none), checked together."""
    from sa_deploy.errors import SADeployError
    from sa_deploy.exporters.preprocess_flags import PreprocessOverrides

    v = {k: getattr(args, k, None) for k in ("input_size", "resize", "interpolation", "mean", "std", "class_names")}
    if v["input_size"] is not None and v["resize"] is not None and v["resize"] < v["input_size"]:
        raise SADeployError(f"--resize {v['resize']} is smaller than --input-size {v['input_size']} (images are "
                            "resized, then center-cropped to the input size)")
    for k in ("mean", "std"):
        v[k] = tuple(v[k]) if v[k] is not None else None
    return PreprocessOverrides(**v)


def load_model(args: argparse.Namespace):
    from sa_deploy.models import create_model

    return create_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                        pretrained=args.pretrained, allow_nonfinite=getattr(args, "allow_nonfinite", False))


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f}"
