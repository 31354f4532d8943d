from __future__ import annotations

import argparse
import json
from pathlib import Path

from sa_deploy.cli.common import add_preprocess_args, console, mb, output_dir, positive_int, preprocess_overrides
from sa_deploy.cli.out_path import out_type

EXAMPLES = """examples:
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib cifar10/train    # a folder of images (flat or per class)
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib embedded         # the 512 CIFAR-10 images inside sa-deploy
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib calib.npz --flavour cpu --method minmax --num 256
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --calib imgs/ --cache-dir .calib-cache \\
      --exclude-nodes /layer1/layer1.0/conv1/Conv
  sa-deploy quantize out/sa_resnet_cifar_fold.onnx --precision fp16
  sa-deploy fp16 out/sa_resnet_cifar_fold.onnx          (same as --precision fp16)
  sa-deploy quantize my_model.onnx --calib imgs/ --input-size 224 --resize 256 \
      --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225   # an ONNX file sa-deploy did not write

Any FP32 ONNX file with one float (N, 3, S, S) image input can be quantized: a file without sa-deploy metadata
needs its preprocessing as flags (--mean/--std; --input-size defaults to the graph's fixed H/W, --resize to the
input size); for an sa-deploy export each given flag replaces that field. The INT8 file carries the result, so
validate, convert and bench need no flags for it.

INT8 flavours: tensorrt = s8 symmetric activations and weights (zero point 0), per-channel weights on axis 0,
Q/DQ on both residual Add inputs; cpu = u8 activations + s8 per-channel weights (fast on onnxruntime CPU).
The SA gate (GlobalAveragePool, InstanceNormalization, Sigmoid, gating Mul/Add) follows the flavour: float for
tensorrt (it runs the gate's pointwise chain fused in fp16/fp32), quantized for cpu (onnxruntime's QLinear
kernels; top-1 within 0.18 points on the embedded models, 0.52x instead of 0.73x FP32 latency);
--sa-gate float|int8 overrides it.
Calibration ranges are cached per (model file, calibration data, method) in --cache-dir and reused by both flavours.
"""


FP16_EXAMPLES = """examples:
  sa-deploy fp16 out/sa_resnet_cifar_fold.onnx --out out/model_fp16.onnx
  sa-deploy fp16 my_model.onnx                     # any FP32 ONNX file; needs no preprocessing
  sa-deploy fp16 my_model.onnx --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225   # ... written into the FP16 file
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 Q/DQ (calibrated) or FP16 ONNX from an FP32 ONNX file",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, metavar="MODEL.onnx",
                   help="FP32 ONNX: from `sa-deploy export`, or any with one NCHW float image input (see below)")
    p.add_argument("--precision", choices=["int8", "fp16"], default="int8", help="target precision (default int8)")
    p.add_argument("--calib", type=Path, help="calibration images: folder (flat or per class), .npz, or `embedded` "
                   "(the CIFAR-10 calibration sample inside sa-deploy) (int8)")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="entropy",
                   help="calibration method (default entropy)")
    p.add_argument("--flavour", choices=["tensorrt", "cpu"], default="tensorrt", help="INT8 flavour (default tensorrt)")
    p.add_argument("--weight-bits", type=int, choices=[7, 8], default=None,
                   help="weight bits (default: cpu 7, tensorrt 8). 7-bit weights cannot saturate the int16 pair sums "
                   "of x86 CPUs without VNNI; 8 only for VNNI/AMX/Arm CPUs or TensorRT (`sa-deploy lint --target "
                   "cpu` checks a file)")
    p.add_argument("--num", type=positive_int, default=500,
                   help="calibration images, class-balanced sample (default 500)")
    p.add_argument("--out", type=out_type((".onnx",)), metavar="FILE.onnx|DIR/",
                   help="output file, or a folder for the default name (default: next to MODEL, suffixed "
                        "_int8_<flavour>_<method> or _fp16)")
    p.add_argument("--exclude-nodes", nargs="+", default=[], metavar="NODE", help="node names kept in float")
    p.add_argument("--sa-gate", choices=["float", "int8"], default=None,
                   help="SA gate precision (default: float for --flavour tensorrt, int8 for --flavour cpu)")
    p.add_argument("--cache-dir", type=output_dir, help="calibration range cache folder (reused when still valid)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_preprocess_args(p, "the calibration images are preprocessed with the result")
    p.set_defaults(func=run)
    f = sub.add_parser("fp16", help="FP16 ONNX (FP32 inputs/outputs) from an FP32 ONNX file",
                       epilog=FP16_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("model", type=Path, metavar="MODEL.onnx")
    f.add_argument("--out", type=out_type((".onnx",)), metavar="FILE.onnx|DIR/",
                   help="output file, or a folder for the default name (default: next to MODEL, suffixed _fp16)")
    f.add_argument("--json", action="store_true")
    add_preprocess_args(f, "optional for fp16: given, the FP16 file carries the result")
    f.set_defaults(func=run, precision="fp16")


def run(args: argparse.Namespace) -> int:
    from sa_deploy import api
    from sa_deploy.errors import SADeployError

    overrides = preprocess_overrides(args)
    parts = ("fp16",) if args.precision == "fp16" else ("int8", args.flavour, args.method)
    out = args.out.file(api.derived_path(args.model, *parts).name) if args.out else None
    if args.precision == "fp16":
        path = api.fp16(args.model, out, preprocess=overrides)
        if args.json:
            print(json.dumps({"path": str(path), "precision": "fp16"}))
        else:
            console.print(f"[bold]fp16[/bold] {path}  ({mb(path.stat().st_size)} MB, FP32 inputs/outputs)")
        return 0
    if args.calib is None:
        raise SADeployError("--calib DIR|FILE.npz|embedded is required for int8 (calibration images)")
    res = api.quantize(args.model, args.calib, out, args.method, args.flavour, args.num,
                       tuple(args.exclude_nodes), args.cache_dir,
                       keep_sa_gate_float=None if args.sa_gate is None else args.sa_gate == "float",
                       preprocess=overrides, weight_bits=args.weight_bits)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    console.print(f"[bold]int8[/bold] {res.path}  ({mb(res.path.stat().st_size)} MB, flavour {res.flavour}, "
                  f"method {res.method}, {res.weight_bits}-bit weights, {res.num_calibration} calibration images, "
                  f"ranges {'from cache' if res.cache_hit else 'calibrated'}, {len(res.excluded_nodes)} float nodes, "
                  f"{res.seconds:.1f}s)")
    console.print(f"next:\n  sa-deploy validate --reference {args.model} --data DIR --artifacts {res.path}")
    weights = pytorch_weights_flags(args.model)
    if weights:
        console.print(f"  sa-deploy validate {weights} --data DIR --artifacts {args.model} {res.path}   (vs PyTorch)")
    return 0


def pytorch_weights_flags(onnx_path: Path) -> str | None:
    """The ``--model NAME --pretrained`` / ``--model NAME --checkpoint CKPT`` flags that rebuild the PyTorch model an
    sa-deploy ONNX file was exported from, read from its metadata (``--pretrained`` when its checkpoint hash is that
    of the embedded weights); None for a model sa-deploy cannot rebuild (a user's module, random init, not ours)."""
    from sa_deploy.errors import SADeployError
    from sa_deploy.exporters.metadata import read_deploy_metadata
    from sa_deploy.models.registry import embedded_models, list_models, pretrained_path
    from sa_deploy.util.hashing import file_sha256

    try:
        meta = read_deploy_metadata(onnx_path)
    except SADeployError:  # quantize has read it already; a hint is not worth an error
        return None
    name, sha = meta.model or "", meta.checkpoint_sha256 or ""
    if name not in list_models() or (meta.model_source or f"registry {name}") != f"registry {name}":
        return None
    if name in embedded_models() and sha == file_sha256(pretrained_path(name)):
        return f"--model {name} --pretrained"
    return f"--model {name} --checkpoint CKPT" if len(sha) == 64 else None  # random init: nothing to rebuild
