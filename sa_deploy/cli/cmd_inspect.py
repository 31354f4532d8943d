from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import console, mb


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="op histogram, parameters, ranks, dynamic dims and SA layers of an ONNX file "
                                       "(or ops, weight precisions and inputs of an OpenVINO IR .xml)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sa_deploy.exporters.inspect import inspect_onnx

    if args.file.suffix == ".xml":
        return _inspect_ir(args)

    info = inspect_onnx(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    console.print(f"[bold]{info.path}[/bold]: {mb(info.size_bytes)} MB, opset {info.opset}, {info.nodes} nodes, "
                  f"{info.parameters:,} parameters, max tensor rank {info.max_rank}")
    for kind, items in (("input", info.inputs), ("output", info.outputs)):
        for it in items:
            dynamic = [str(d) for d in it["shape"] if isinstance(d, str)]
            console.print(f"  {kind} {it['name']}: {it['dtype']} {it['shape']}"
                          + (f"  (dynamic: {', '.join(dynamic)})" if dynamic else ""))
    per = info.sa_nodes_per_layer
    console.print(f"  SA layers: {info.sa_layers}" + (f" ({min(per.values())}-{max(per.values())} nodes each)"
                                                      if per else ""))
    return _print_ops_and_config(info)


def _inspect_ir(args: argparse.Namespace) -> int:
    from sa_deploy.backends.openvino.inspect import inspect_ir

    info = inspect_ir(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    weights = ", ".join(f"{t} x{n}" for t, n in info.weight_precisions.items())
    console.print(f"[bold]{info.path}[/bold]: OpenVINO IR, {mb(info.size_bytes)} MB, {info.nodes} nodes, "
                  f"precision {info.metadata.get('precision', '?')} (constants: {weights})")
    for kind, items in (("input", info.inputs), ("output", info.outputs)):
        for it in items:
            console.print(f"  {kind} {it['name']}: {it['dtype']} {it['shape']}")
    return _print_ops_and_config(info)


def _print_ops_and_config(info) -> int:
    """The op histogram and the deploy config (ONNX metadata or IR rt_info), for either kind of file."""
    table = Table(title="op histogram")
    table.add_column("op")
    table.add_column("count", justify="right")
    for op, n in info.op_histogram.items():
        table.add_row(op, str(n))
    console.print(table)
    if info.metadata:
        console.print("  deploy config: " + ", ".join(f"{k}={v}" for k, v in info.metadata.items()
                                                      if k != "preprocess"))
    return 0
