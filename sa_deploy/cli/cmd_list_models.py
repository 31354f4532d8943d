from __future__ import annotations

import argparse

from rich.table import Table

from sa_deploy.cli.common import console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list-models", help="list the registered models (SA and the attention family)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.models.registry import get_spec, list_models

    table = Table(title="models")
    for col in ("name", "input", "classes", "embedded weights", "description"):
        table.add_column(col)
    for name in list_models():
        spec = get_spec(name)
        table.add_row(name, f"{spec.preprocess.input_size}x{spec.preprocess.input_size}", str(spec.num_classes),
                      "yes" if spec.pretrained_file else "-", spec.description)
    console.print(table)
    return 0
