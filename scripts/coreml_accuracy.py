"""Top-1 of each CoreML precision vs PyTorch on labeled images (reference executor on Linux, MLModel on macOS).

  python scripts/coreml_accuracy.py --model sa_resnet_cifar --checkpoint sa_deploy/weights/sa_resnet_cifar.pth \
      --val ../shared/data/cifar10/val --calib ../shared/data/cifar10/train --num 500
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sa_deploy.api import export_coreml
from sa_deploy.backends import TorchRunner
from sa_deploy.backends.coreml.runner import CoreMLRunner
from sa_deploy.data.resolve import open_images
from sa_deploy.models import create_model
from sa_deploy.validate.parity import compare


def top1(runner, source) -> tuple[float, np.ndarray]:
    logits, labels = [], []
    for x, y in source.batches(32):
        logits.append(runner.infer(x))
        labels.append(y)
    out = np.concatenate(logits)
    return float((out.argmax(1) == np.concatenate(labels)).mean()), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--lowering", default="fold")
    p.add_argument("--precisions", default="fp32,fp16,int8-weights,palettize,w8a8")
    p.add_argument("--out", type=Path, default=Path("out/coreml_accuracy"))
    args = p.parse_args()
    model = create_model(args.model, checkpoint=args.checkpoint)
    val = open_images(args.val, model.preprocess, num=args.num)
    with TorchRunner(model) as reference:
        base, ref = top1(reference, val)
    rows = {"pytorch": {"top1": base}}
    for prec in args.precisions.split(","):
        r = export_coreml(model, args.out, prec, args.lowering, calib=args.calib if prec == "w8a8" else None,
                          calib_num=256, parity=False)
        t = time.perf_counter()
        with CoreMLRunner(r.export.path) as runner:
            acc, logits = top1(runner, val)
        s = compare(logits, ref, "int8")
        rows[prec] = {"top1": acc, "drop": base - acc, "cosine": s.cosine, "max_abs": s.max_abs,
                      "top1_agreement": s.top1_agreement, "convert_s": r.export.seconds,
                      "eval_s": time.perf_counter() - t, "size_mb": r.export.size_bytes / 1e6}
        print(prec, json.dumps(rows[prec]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
