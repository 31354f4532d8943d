"""The shipped checkpoints reach the accuracy their model card states (and the accuracy recorded on the embedded
image sample), re-evaluated by `sa-deploy validate`."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from sa_deploy.cli import main
from sa_deploy.data.sample import read_card
from sa_deploy.models import create_model, embedded_models
from sa_deploy.models.checkpoint import read_checkpoint


def _card(name: str) -> dict:
    return json.loads((resources.files("sa_deploy") / "weights" / f"{name}.card.json").read_text())


def _validate(name: str, data: str, tmp_path) -> tuple[int, dict]:
    out = tmp_path / f"val_{name}.json"
    onnx_file = tmp_path / f"{name}_fold.onnx"
    if not onnx_file.is_file():
        assert main(["export", "--model", name, "--pretrained", "--out", str(tmp_path), "--no-parity"]) == 0
    rc = main(["validate", "--model", name, "--pretrained", "--data", data, "--artifacts", str(onnx_file),
               "--json", str(out), "--no-progress", "--max-drop", "0.1"])
    return rc, json.loads(out.read_text())


@pytest.mark.slow  # with the development copy: the whole validation set (5,000 images) per model
@pytest.mark.parametrize("name", embedded_models())
def test_card_accuracy_reproduces(name, labeled_data, tmp_path):
    """`sa-deploy validate` reproduces the top-1 recorded for the shipped checkpoint on the embedded sample (every
    machine) and, where the CIFAR-10 folder the model card was measured on is present, the card's top-1 on it."""
    state, meta = read_checkpoint(resources.files("sa_deploy") / "weights" / f"{name}.pth")
    assert meta["arch"] == name and "epoch" in meta and "best_acc" in meta  # official training format
    recorded = read_card()["model_top1"][name]
    sha = create_model(name, pretrained=True).deploy_config.checkpoint_sha256
    assert recorded["checkpoint_sha256"] == sha, (
        f"{name}'s checkpoint changed since its accuracy on the embedded sample was measured: "
        "python scripts/build_embedded_sample.py --measure-only")
    rc, report = _validate(name, "embedded", tmp_path)
    assert report["reference"]["num_images"] == recorded["images"] == 1000
    assert abs(report["reference"]["top1"] - recorded["top1"]) <= 0.02, (report["reference"]["top1"], recorded)
    assert rc == 0 and abs(report["results"][0]["drop"]) <= 0.1
    if labeled_data.embedded:
        return  # no CIFAR-10 folder here: the 5,000-image check of the model card needs one
    card = _card(name)
    rc, report = _validate(name, labeled_data.val.cli_value, tmp_path)
    assert report["reference"]["num_images"] == card["data"]["val_images"] == 5000
    assert abs(report["reference"]["top1"] - card["val_top1"]) <= 0.02, (report["reference"]["top1"], card)
    assert rc == 0 and abs(report["results"][0]["drop"]) <= 0.1


def test_pretrained_models_have_class_names():
    for name in embedded_models():
        model = create_model(name, pretrained=True)
        assert model.preprocess.class_names[0] == "airplane" and len(model.preprocess.class_names) == 10
