from __future__ import annotations

import json

import torch

from sa_deploy.cli import main
from sa_deploy.models import create_model


def test_list_models(capsys):
    assert main(["list-models"]) == 0
    out = capsys.readouterr().out
    assert "sa_resnet50" in out and "sa_mobilenetv2_cifar" in out
    assert "gc_resnet_cifar" in out and "eca_resnet50" in out


def test_help_has_examples(capsys):
    try:
        main(["export", "--help"])
    except SystemExit as e:
        assert e.code == 0
    assert "examples:" in capsys.readouterr().out


def test_export_and_inspect(tmp_path, capsys):
    assert main(["export", "--model", "sa_resnet_cifar", "--lowering", "reshape-transpose",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parity vs PyTorch" in out and "pass" in out and "sa-deploy inspect" in out
    path = tmp_path / "sa_resnet_cifar_reshape-transpose.onnx"
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sa_layers"] == 9 and info["max_rank"] == 4 and info["inputs"][0]["shape"][0] == "batch"


def test_user_errors_are_one_line_nonzero(tmp_path, capsys):
    cases = [
        ["export", "--model", "resnet9000"],
        ["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "missing.pth")],
        ["inspect", str(tmp_path / "missing.onnx")],
        ["export", "--model", "sa_resnet50", "--pretrained"],
    ]
    torch.save(create_model("sa_mobilenetv2_cifar").state_dict(), tmp_path / "mbv2.pth")
    cases.append(["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "mbv2.pth"),
                  "--out", str(tmp_path)])
    for argv in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc != 0, argv
        assert err.startswith("sa-deploy ") and "error:" in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "sa_resnet_cifar_fold.onnx").exists()
