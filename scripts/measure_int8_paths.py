"""INT8 on both x86 kernel paths, measured on one machine: the before/after table of docs/precision.md.

For an embedded model it makes the INT8 files sa-deploy makes (cpu flavour with 8-bit weights, the old default, and
7-bit weights, the overflow-safe default; tensorrt flavour) from one calibration, then scores each on the same
validation images with:
  - onnxruntime's int8 kernels on this CPU (its path from the CPU flags),
  - onnxruntime with Q/DQ fusion off (float emulation: int32 semantics, what TensorRT computes),
  - OpenVINO's int8 kernels on this CPU, and OpenVINO with oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, a
    subprocess): the real non-VNNI kernels (pairwise int16, saturating) even on a VNNI/AMX host;
and runs ``sa-deploy lint --target cpu``'s static check on each file. Prints the machine line first.

    python scripts/measure_int8_paths.py --model sa_resnet_cifar --data embedded --out benchmarks/int8_paths
    SA_DEPLOY_DATA=../shared/data/cifar10 python scripts/measure_int8_paths.py --data $SA_DEPLOY_DATA
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

FILES = (("cpu, 8-bit weights (before)", "cpu", 8), ("cpu, 7-bit weights (now)", "cpu", 7),
         ("tensorrt, 8-bit weights", "tensorrt", 8))


def load_images(model_name: str, data: str, num: int | None, calib_num: int):
    from sa_deploy.data.resolve import resolve_labeled_data
    from sa_deploy.models import create_model

    model = create_model(model_name, pretrained=True)
    found = resolve_labeled_data(data)
    cfg = model.deploy_config.preprocess
    return model, found.val.open(cfg, num=num, seed=0), found.calib.open(cfg, num=calib_num, seed=0)


def logits_of(runner, source) -> tuple:
    from sa_deploy.validate.accuracy import predict

    with runner:
        pred = predict(runner, source, progress=False)
        path = runner.int8_path()
    return pred.logits, pred.labels, path


def openvino_scores(files: dict[str, str], model_name: str, data: str, num: int | None) -> dict:
    """Top-1 of each file on OpenVINO here (this process's ISA) -> {label: [top1, path line]}."""
    from sa_deploy.backends.openvino.runner import OpenVINORunner

    _, val, _ = load_images(model_name, data, num, 1)
    out = {}
    for label, path in files.items():
        logits, labels, kpath = logits_of(OpenVINORunner(path, threads=os.cpu_count()), val)
        out[label] = [float(100 * (logits.argmax(1) == labels).mean()), kpath.line() if kpath else "no int8"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sa_resnet_cifar")
    ap.add_argument("--data", default="embedded", help="folder with train/ and val/, or `embedded`")
    ap.add_argument("--num", type=int, default=None, help="validation images (default all)")
    ap.add_argument("--calib-num", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("out/int8_paths"))
    ap.add_argument("--openvino-only", type=Path, help=argparse.SUPPRESS)  # the AVX2-capped subprocess
    args = ap.parse_args()
    if args.openvino_only:
        files = json.loads(args.openvino_only.read_text())
        print(json.dumps(openvino_scores(files, args.model, args.data, args.num)))
        return

    from sa_deploy import api
    from sa_deploy.backends import OnnxRuntimeRunner, TorchRunner
    from sa_deploy.backends.cpu_lint import lint_cpu_overflow
    from sa_deploy.util.machine import machine_info

    info = machine_info()
    print(f"machine: {info['cpu']}; {info['simd']}; {info['int8_kernels']}; {info['summary']}")
    model, val, calib = load_images(args.model, args.data, args.num, args.calib_num)
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = api.export(model, args.out, lowering="fold", parity=False).export.path
    files = {}
    for label, flavour, bits in FILES:
        dest = args.out / f"{args.model}_int8_{flavour}_{bits}bit.onnx"
        api.quantize(fp32, calib, dest, flavour=flavour, weight_bits=bits, cache_dir=args.out / "calib_cache")
        files[label] = str(dest)
    ref_logits, labels, _ = logits_of(TorchRunner(model), val)
    ref_top1 = float(100 * (ref_logits.argmax(1) == labels).mean())
    rows = {}
    for label, path in files.items():
        row = {"static check": "pass" if lint_cpu_overflow(path).passed else "can saturate"}
        for column, emulate in (("onnxruntime kernels here", False), ("onnxruntime Q/DQ emulated", True)):
            logits, _, kpath = logits_of(OnnxRuntimeRunner(path, qdq_emulation=emulate), val)
            cos = float(np.mean(np.sum(logits * ref_logits, 1) / np.linalg.norm(logits, axis=1)
                                / np.linalg.norm(ref_logits, axis=1)))
            row[column] = {"top1": float(100 * (logits.argmax(1) == labels).mean()), "cosine": cos,
                           "path": kpath.line()}
        rows[label] = row
    spec = args.out / "files.json"
    spec.write_text(json.dumps(files))
    capped = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    for column, env in (("openvino kernels here", {}), ("openvino, oneDNN capped at AVX2", capped)):
        cmd = [sys.executable, __file__, "--openvino-only", str(spec), "--model", args.model, "--data", args.data]
        cmd += ["--num", str(args.num)] if args.num else []
        done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        for label, (top1, path) in json.loads(done.stdout.strip().splitlines()[-1]).items():
            rows[label][column] = {"top1": top1, "path": path}
    data_line = f"{len(val)} validation images of {args.data} ({args.calib_num} calibration images)"
    result = {"machine": info, "model": args.model, "data": data_line, "images": len(val),
              "pytorch_top1": ref_top1, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    columns = ["onnxruntime kernels here", "onnxruntime Q/DQ emulated", "openvino kernels here",
               "openvino, oneDNN capped at AVX2"]
    lines = [f"{args.model}, {data_line}; PyTorch FP32 top-1 {ref_top1:.2f}%. Cells: top-1 (drop). "
             f"Machine: {info['cpu']} ({info['simd']}); {info['summary']}.", "",
             "| INT8 file | static check (`lint --target cpu`) | " + " | ".join(columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for label, row in rows.items():
        cells = [f"{row[c]['top1']:.2f} ({ref_top1 - row[c]['top1']:+.2f})" for c in columns]
        lines.append(f"| {label} | {row['static check']} | " + " | ".join(cells) + " |")
    lines += ["", "paths: " + "; ".join(sorted({row[c]["path"] for row in rows.values() for c in columns}))]
    (args.out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
