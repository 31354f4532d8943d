"""The CoreML branch of ``sa-deploy export`` (--format coreml): arguments and the run, kept out of cmd_export."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from sa_deploy.cli.common import console, mb, positive_int
from sa_deploy.errors import ParityError, SADeployError

# mirror backends.coreml.export (kept lazy: coremltools is optional); tests/test_coreml_cli.py checks they agree
PRECISIONS = ("fp32", "fp16", "int8-weights", "palettize", "w8a8")
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")


def add_coreml_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CoreML (--format coreml)")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="CoreML precision (default fp32); w8a8 needs --calib")
    g.add_argument("--calib", type=Path, default=None, help="calibration images (folder or .npz) for w8a8")
    g.add_argument("--calib-num", type=positive_int, default=256, help="calibration images to use (default 256)")
    g.add_argument("--image-input", action="store_true",
                   help="take an RGB image (mean/std inside the model) instead of a normalized tensor")
    g.add_argument("--classifier", action="store_true", help="classifier output with the model's class labels")
    g.add_argument("--target", default=None, choices=TARGETS, metavar="TARGET",
                   help=f"minimum deployment target: {', '.join(TARGETS)} (default: iOS16; iOS17 for w8a8)")


def run_coreml(args: argparse.Namespace, model, lowering: str, path: Path) -> int:
    """Export ``model`` with ``lowering`` to the .mlpackage ``path`` (sa-deploy export checked it first)."""
    from sa_deploy.api import export_coreml

    if args.precision == "w8a8" and args.calib is None:
        raise SADeployError("--precision w8a8 needs --calib DIR (calibration images)")
    try:
        result = export_coreml(model, path.parent, precision=args.precision, lowering=lowering, calib=args.calib,
                               calib_num=args.calib_num, image_input=args.image_input, classifier=args.classifier,
                               deployment_target=args.target, input_size=args.input_size,
                               parity=not args.no_parity, filename=path.name)
    except ParityError as exc:  # the failing package was not written
        _parity_table(exc.stats, "coreml")
        raise
    exp = result.export
    console.print(f"[bold]exported[/bold] {exp.path}  ({mb(exp.size_bytes)} MB, precision {exp.precision}, "
                  f"lowering {exp.lowering}, target {exp.deployment_target}, {exp.seconds:.1f} s)")
    if result.parity:
        _parity_table(result.parity, result.runner)
    return 0


def _parity_table(stats, runner: str) -> None:
    table = Table(title=f"parity vs PyTorch ({runner})")
    for col in ("batch", "max abs", "cosine", "top-1 agree", "status"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(str(s.batch), f"{s.max_abs:.2e}", f"{s.cosine:.7f}", f"{s.top1_agreement:.0%}",
                      "[green]pass[/green]" if s.passed else "[red]FAIL[/red]")
    console.print(table)
