"""`sa-deploy run --val v.npz --calib c.npz` (issue 26, item 1): .npz files are a documented layout for both sides
of a run; the run reads them up front like any other source and finishes with its report."""
from __future__ import annotations

import json

import numpy as np

from sa_deploy.cli import main
from sa_deploy.data.sample import EmbeddedSource, load_split
from sa_deploy.models import create_model


def test_run_with_npz_val_and_calib(tmp_path, capsys):
    images, labels, _, _ = load_split("val")
    np.savez(tmp_path / "v.npz", images=images[:40], labels=labels[:40])  # uint8 images, preprocessed by sa-deploy
    cfg = create_model("sa_resnet_cifar").preprocess
    calib = np.concatenate([x for x, _ in EmbeddedSource("calib", cfg, num=16).batches(8)])
    np.savez(tmp_path / "c.npz", inputs=calib)  # already-preprocessed floats, no labels
    (tmp_path / "plan.yaml").write_text("lowerings: [fold]\nint8_flavours: [cpu]\nlatency_iters: 2\n"
                                        "sensitivity: false\n")
    out = tmp_path / "out"
    rc = main(["run", "--val", str(tmp_path / "v.npz"), "--calib", str(tmp_path / "c.npz"), "--out", str(out),
               "--config", str(tmp_path / "plan.yaml"), "--no-coreml", "--no-openvino", "--no-tensorrt",
               "--max-drop", "100"])
    console = capsys.readouterr()
    assert rc == 0, console.err
    assert "internal error" not in console.err and "Traceback" not in console.err
    report = json.loads((out / "report.json").read_text())
    assert report["passed"]
    assert report["data"]["val_images"] == 40 and report["data"]["calib_images"] == 16
    assert report["data"]["val"].endswith("v.npz") and report["data"]["calib"].endswith("c.npz")
    names = {a["name"]: a for a in report["artifacts"]}
    assert {"onnx-fold-fp32", "onnx-fp16", "onnx-int8-cpu"} <= set(names)
    assert all(a["status"] == "ok" for a in names.values()), [(a["name"], a["reason"]) for a in names.values()]
    assert report["reference"]["top1"] > 50  # the embedded trained model on real images, read from the .npz
    assert "validation: 40 images from" in (out / "report.md").read_text()
