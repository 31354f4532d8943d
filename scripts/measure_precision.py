#!/usr/bin/env python3
"""One-off measurement: top-1 of FP32 / FP16 / INT8 (every method x flavour, SA gate float or quantized) on a
labeled folder, with quantize times and SQNR highlights. Not a test (minutes on ImageNet-size data).

  python scripts/measure_precision.py --checkpoint runs/x/final.pth --data ../shared/data/cifar10/val \
      --calib ../shared/data/cifar10/train --out /tmp/measure
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sa_deploy.backends import TorchRunner
from sa_deploy.calibration.int8 import quantize_int8
from sa_deploy.calibration.sensitivity import tensor_sensitivity
from sa_deploy.data.resolve import open_images
from sa_deploy.exporters.fp16 import convert_fp16
from sa_deploy.exporters.onnx import export_onnx
from sa_deploy.models import create_model
from sa_deploy.validate.accuracy import validate_artifacts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sa_resnet_cifar")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--calib-num", type=int, default=500)
    p.add_argument("--num", type=int, default=None)
    p.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads (1 on a busy machine)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = create_model(args.model, checkpoint=args.checkpoint)
    fp32 = export_onnx(model, args.out / f"{args.model}_fold.onnx", "fold").path
    calib = open_images(args.calib, model.preprocess, num=args.calib_num, seed=1, split="calib")
    arts, times = [fp32], {}
    t = time.perf_counter()
    arts.append(convert_fp16(fp32, args.out / f"{args.model}_fp16.onnx"))
    arts.append(convert_fp16(fp32, args.out / f"{args.model}_fp16_all.onnx", block_list=[]))
    times["fp16"] = time.perf_counter() - t
    results = {}
    for method in args.methods:
        for flavour in ("tensorrt", "cpu"):
            # entropy: both SA-gate precisions; other methods: the flavour's default gate
            for gate_float in ((True, False) if method == "entropy" else (None,)):
                r = quantize_int8(fp32, args.out / "tmp.onnx", calib, method, flavour, cache_dir=args.out / "cache",
                                  keep_sa_gate_float=gate_float)
                name = f"{args.model}_int8_{flavour}_{method}_gate-{r.sa_gate}.onnx"
                r.path = r.path.replace(args.out / name)
                times[name] = {"seconds": round(r.seconds, 1), "cache_hit": r.cache_hit}
                arts.append(r.path)
    report = validate_artifacts(TorchRunner(model, args.threads), arts,
                                open_images(args.data, model.preprocess, num=args.num), threads=args.threads)
    sens_src = open_images(args.data, model.preprocess, num=64)
    sens = tensor_sensitivity(fp32, args.out / f"{args.model}_int8_tensorrt_entropy_gate-float.onnx", sens_src)
    results = {"report": report.to_dict(), "quantize_times": times,
               "sqnr_worst_loss": [s.to_dict() for s in sens[:8]],
               "sqnr_lowest": [s.to_dict() for s in sorted(sens, key=lambda s: s.sqnr_db)[:5]]}
    (args.out / "measure.json").write_text(json.dumps(results, indent=2))
    print(f"reference {report.reference.top1:.2f} top-1 on {report.reference.num_images} images")
    for r in report.results:
        print(f"{r.name:55s} {r.precision:5s} top1 {r.top1:6.2f} top5 {r.top5:6.2f} drop {r.drop:+.2f} "
              f"cos {r.parity.cosine:.5f} agree {r.parity.top1_agreement:.4f}")
    print(json.dumps(times, indent=1))
    for s in sens[:8]:
        print(f"SQNR {s.sqnr_db:6.1f} dB (loss {s.sqnr_loss_db:5.1f}, own qdq {s.qdq_sqnr_db}) {s.node}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
