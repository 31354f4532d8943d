"""``sa-deploy export --format coreml``: a real export with parity, and one-line user errors."""
from __future__ import annotations

import pytest

from sa_deploy.cli import main

pytest.importorskip("coremltools")


def test_cli_coreml_export(tmp_path, capsys):
    assert main(["export", "--model", "sa_mobilenetv2_cifar", "--format", "coreml", "--precision", "fp32",
                 "--image-input", "--classifier", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parity vs PyTorch (coreml" in out and "pass" in out
    assert (tmp_path / "sa_mobilenetv2_cifar_fold_fp32.mlpackage" / "Manifest.json").is_file()


def test_cli_w8a8_needs_calib(tmp_path, capsys):
    code = main(["export", "--model", "sa_resnet_cifar", "--format", "coreml", "--precision", "w8a8",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--calib" in err and len(err.strip().splitlines()) == 1


def test_cli_validate_reads_the_mlpackage_precision(tmp_path, capsys):
    """validate of an FP16 .mlpackage judges it as fp16 (its tolerance and budget), not as fp32."""
    import json

    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--format", "coreml", "--precision",
                 "fp16", "--out", f"{tmp_path}/"]) == 0
    package = tmp_path / "sa_resnet_cifar_fold_fp16.mlpackage"
    report = tmp_path / "v.json"
    rc = main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", "embedded", "--num", "20",
               "--no-progress", "--artifacts", str(package), "--json", str(report)])
    capsys.readouterr()
    row = json.loads(report.read_text())["results"][0]
    assert row["precision"] == "fp16" and rc == 0, row
