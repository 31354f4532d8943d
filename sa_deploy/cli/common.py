"""Helpers shared by CLI commands: model loading arguments, argument types that check values where they enter,
console, formatting."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from rich.console import Console

from sa_deploy.models.preprocessing import MAX_INPUT_SIZE, MIN_INPUT_SIZE

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:  # logs and CI: wide tables instead of rich's 80-column default
    console.width = 160

MAX_THREADS = 1024
MAX_BATCH = 1024
MAX_CLASSES = 100_000


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


def load_model(args: argparse.Namespace):
    from sa_deploy.models import create_model

    return create_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                        pretrained=args.pretrained, allow_nonfinite=getattr(args, "allow_nonfinite", False))


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f}"
