"""The shipped checkpoints reach the accuracy their model card states, re-evaluated by `sa-deploy validate`."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from sa_deploy.cli import main
from sa_deploy.models import create_model, embedded_models
from sa_deploy.models.checkpoint import read_checkpoint


def _card(name: str) -> dict:
    return json.loads((resources.files("sa_deploy") / "weights" / f"{name}.card.json").read_text())


@pytest.mark.slow  # the whole validation set (5,000 images) per model
@pytest.mark.parametrize("name", embedded_models())
def test_card_accuracy_reproduces(name, cifar_dir, tmp_path):
    card = _card(name)
    state, meta = read_checkpoint(resources.files("sa_deploy") / "weights" / f"{name}.pth")
    assert meta["arch"] == name and "epoch" in meta and "best_acc" in meta  # official training format
    assert main(["export", "--model", name, "--pretrained", "--out", str(tmp_path), "--no-parity"]) == 0
    out = tmp_path / "val.json"
    rc = main(["validate", "--model", name, "--pretrained", "--data", str(cifar_dir / "val"), "--artifacts",
               str(tmp_path / f"{name}_fold.onnx"), "--json", str(out), "--no-progress", "--max-drop", "0.1"])
    report = json.loads(out.read_text())
    assert report["reference"]["num_images"] == card["data"]["val_images"] == 5000
    assert abs(report["reference"]["top1"] - card["val_top1"]) <= 0.02, (report["reference"]["top1"], card)
    assert rc == 0 and abs(report["results"][0]["drop"]) <= 0.1


def test_pretrained_models_have_class_names():
    for name in embedded_models():
        model = create_model(name, pretrained=True)
        assert model.preprocess.class_names[0] == "airplane" and len(model.preprocess.class_names) == 10
