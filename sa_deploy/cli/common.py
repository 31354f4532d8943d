"""Helpers shared by CLI commands: model loading arguments, console, formatting."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:  # logs and CI: wide tables instead of rich's 80-column default
    console.width = 160


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, help="registered model name (see `sa-deploy list-models`)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="weights: official training checkpoint or plain state_dict")
    src.add_argument("--pretrained", action="store_true", help="use the weights embedded in sa-deploy")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size if not the model's default")


def load_model(args: argparse.Namespace):
    from sa_deploy.models import create_model

    return create_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                        pretrained=args.pretrained)


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f}"
