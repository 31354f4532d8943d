from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sa_deploy.cli.common import add_preprocess_args, console, mb, preprocess_overrides

EXAMPLES = """examples:
  sa-deploy inspect out/sa_resnet_cifar_fold.onnx
  sa-deploy inspect my_model.onnx --json                   # any ONNX file, e.g. one sa-deploy did not write
  sa-deploy inspect my_model.onnx --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225   # the preprocessing quantize
                                                           # would use with these flags
  sa-deploy inspect out/sa_resnet_cifar_fold_int8_cpu_entropy.xml            # OpenVINO IR (+ .bin)
  sa-deploy inspect out/sa_resnet_cifar_fold_fp16.mlpackage                  # CoreML ML program
  sa-deploy inspect out/sa_resnet_cifar_fold_int8_tensorrt_entropy.engine    # TensorRT engine: its sidecar

Reads every format sa-deploy writes: .onnx (op histogram, parameters, ranks, dynamic dims, SA layers,
preprocessing), OpenVINO .xml and CoreML .mlpackage (inputs/outputs, op histogram, weight precisions, deploy
config), TensorRT .engine (what its sidecar ENGINE.json records, and whether the engine still matches it: the
engine itself is deserialized only by the TensorRT that built it, on a GPU).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="what an artifact holds: op histogram, parameters, inputs/outputs, SA layers, "
                                       "deploy config (.onnx, OpenVINO .xml, CoreML .mlpackage, TensorRT .engine)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="an .onnx, .xml, .mlpackage or .engine")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_preprocess_args(p, "inspect shows what the file's metadata and these flags resolve to (ONNX only)")
    p.set_defaults(func=run)


def backend_of(path: Path):
    """The backend manager that owns a file other than ONNX (None: read it as ONNX, the default format)."""
    from sa_deploy.backends import find_backend

    backend = find_backend(path)
    return backend if backend is not None and backend.name != "onnxruntime" else None


def run(args: argparse.Namespace) -> int:
    from sa_deploy.exporters.inspect import inspect_onnx

    backend = backend_of(args.file)
    if backend is not None:
        return _inspect_artifact(args, backend)

    info = inspect_onnx(args.file)
    preprocess = _preprocess(args)
    if args.json:
        print(json.dumps({**info.to_dict(), "preprocess": preprocess}, indent=2))
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
                                                      if per else "") + _lowered_as(info.metadata))
    modules = _attention_modules(info.metadata)
    if modules:
        console.print(f"  attention modules: {modules}")
    cfg = preprocess["config"]
    if cfg:
        console.print(f"  preprocessing (from {preprocess['origin']}): {_describe(cfg)}")
    else:
        console.print(f"  preprocessing: {preprocess['note']}")
    return _print_ops_and_config(info)


def _preprocess(args: argparse.Namespace) -> dict:
    """What quantize/validate would preprocess images with: {config, origin} (config None, with a ``note``, when
    the file carries none and no flag is given, or when its input is not an image). Given flags must resolve."""
    from sa_deploy import api
    from sa_deploy.errors import SADeployError

    overrides = preprocess_overrides(args)
    try:
        resolved = api.preprocess_of(args.file, overrides, required=False).to_dict()
    except SADeployError as exc:
        if overrides:
            raise
        return {"config": None, "origin": "none", "note": f"none usable ({exc})"}
    if resolved["config"] is None:
        resolved["note"] = ("none in the file; quantize and validate need --mean R G B --std R G B (and --input-size "
                            "S when its H/W are dynamic)")
    return resolved


def _inspect_artifact(args: argparse.Namespace, backend) -> int:
    """An OpenVINO IR, a CoreML package or a TensorRT engine: its backend's inspect, printed the same way."""
    from sa_deploy.errors import SADeployError

    if preprocess_overrides(args):
        raise SADeployError("the preprocessing flags resolve an ONNX file's preprocessing; "
                            f"{args.file.name} carries its own (shown without flags)")
    info = backend.inspect(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    head, *rest = info.lines()
    console.print(f"[bold]{escape(head)}[/bold]")
    for line in rest:
        console.print(line, markup=False)
    from sa_deploy.models.deploy_metadata import parse_preprocess

    try:  # the metadata as stored (inspect shows it whole); its preprocessing parsed as every reader parses it
        cfg = parse_preprocess(info.metadata.get("preprocess"), args.file.name)
        console.print(f"  preprocessing (from its metadata): {_describe(cfg.to_dict())}" if cfg is not None else
                      "  preprocessing: none in the file", markup=False)
    except SADeployError:
        console.print("  preprocessing: damaged sa_deploy.preprocess metadata", markup=False)
    return _print_ops_and_config(info)


def _describe(cfg: dict) -> str:
    """A preprocessing config (its dict form) in one line."""
    return (f"resize {cfg['resize']} ({cfg.get('interpolation', 'bilinear')}), center crop {cfg['input_size']}, "
            f"mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}"
            + (f", {len(cfg['class_names'])} class names" if cfg.get("class_names") else ""))


def _print_ops_and_config(info) -> int:
    """The op histogram and the deploy config (ONNX metadata, IR rt_info, CoreML user metadata, engine sidecar)."""
    if info.op_histogram:
        table = Table(title="op histogram")
        table.add_column("op")
        table.add_column("count", justify="right")
        for op, n in info.op_histogram.items():
            table.add_row(op, str(n))
        console.print(table)
    if info.metadata:
        console.print("  deploy config: " + ", ".join(f"{k}={v}" for k, v in info.metadata.items()
                                                      if k not in ("preprocess", "sa_layers", "attention_modules")))
    return 0


def _attention_modules(metadata: dict[str, str]) -> str:
    """'16 SEModule as se-conv' from an export's record of its other attention modules (SE, CBAM, ECA, GC)."""
    from collections import Counter

    try:
        kinds = Counter((m["kind"], m["form"]) for m in json.loads(metadata.get("attention_modules", "[]")))
    except (ValueError, TypeError, KeyError):
        return ""
    return ", ".join(f"{n} {kind} as {form}" for (kind, form), n in kinds.items())


def _lowered_as(metadata: dict[str, str]) -> str:
    """', lowered as: 3 fold, 2 reshape-transpose' from the export's per-layer record (--json has every layer)."""
    from collections import Counter

    try:
        layers = json.loads(metadata.get("sa_layers", "[]"))
        forms = Counter(layer["form"] for layer in layers)
    except (ValueError, TypeError, KeyError):
        return ""
    return f"; lowered as {', '.join(f'{n} {form}' for form, n in forms.items())}" if forms else ""
