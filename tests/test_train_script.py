"""scripts/train.py, which made every embedded weight file: a two-stage run (--init-from) on a tiny CIFAR-like folder
writes weights that load strictly and a card that records both stages; --resume continues a stopped schedule."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import ROOT
from PIL import Image

from sa_deploy.data.sample import load_split
from sa_deploy.models import create_model
from sa_deploy.util.hashing import file_sha256


@pytest.fixture(scope="module")
def train_script():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """Class folders of PNGs from the embedded sample: 32 train and 16 validation images."""
    root = tmp_path_factory.mktemp("cifar")
    images, labels, _, classes = load_split("val")
    for split, rows in (("train", range(0, 32)), ("val", range(32, 48))):
        for i in rows:
            folder = root / split / classes[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root


def _args(data, run, export, *extra: str) -> list[str]:
    return ["--model", "eca_resnet_cifar", "--data", str(data), "--batch-size", "8", "--run-dir", str(run),
            "--export-to", str(export), *extra]


def test_two_stages_export_loadable_weights_and_a_card_of_both(train_script, cifar_folder, tmp_path):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert train_script.main(_args(cifar_folder, s1, s1 / "export", "--epochs", "1", "--lr", "0.1")) == 0
    first = s1 / "export" / "eca_resnet_cifar.pth"
    card1 = json.loads(first.with_suffix(".card.json").read_text())
    assert card1["steps"] == 4 and len(card1["curve"]) == 1 and card1["data"]["val_images"] == 16
    assert train_script.main(_args(cifar_folder, s2, s2 / "export", "--epochs", "2", "--lr", "0.05",
                                   "--init-from", str(first))) == 0
    card2 = json.loads((s2 / "export" / "eca_resnet_cifar.card.json").read_text())
    assert card2["init_from"]["sha256"] == file_sha256(first) and card2["init_from"]["val_top1"] == card1["val_top1"]
    assert card2["total_epochs"] == 3 and len(card2["curve"]) == 2

    # the exported file is a strict checkpoint of the model, with the weights the run ended on
    model = create_model("eca_resnet_cifar", checkpoint=s2 / "export" / "eca_resnet_cifar.pth").eval()
    final = torch.load(s2 / "final.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(final["state_dict"][k], v) for k, v in model.state_dict().items())
    stage1 = create_model("eca_resnet_cifar", checkpoint=first).state_dict()
    assert any(not torch.equal(stage1[k], v) for k, v in model.state_dict().items())  # stage 2 trained


def test_resume_continues_a_stopped_schedule(train_script, cifar_folder, tmp_path):
    run = tmp_path / "run"
    assert train_script.main(_args(cifar_folder, run, run / "export", "--epochs", "1")) == 0
    # stopped after epoch 1 of what is now a 2-epoch schedule: --resume --reschedule picks it up at step 4
    assert train_script.main(_args(cifar_folder, run, run / "export", "--epochs", "2", "--resume",
                                   "--reschedule")) == 0
    card = json.loads((run / "export" / "eca_resnet_cifar.card.json").read_text())
    assert card["steps"] == 8 and [p["epoch"] for p in card["curve"]] == [1, 2]
    assert card["rescheduled"] == [{"at_step": 4, "total_steps": 8}] and len(card["commands"]) == 2
    assert "resumed at step 4 (epoch 1)" in (run / "train.log").read_text()
