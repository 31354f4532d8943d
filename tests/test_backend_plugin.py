"""A runtime is one object: a backend manager registered from this test folder (a thin ONNX-consuming runtime with
its own suffix, running on onnxruntime: a real runner, not a mock) is built, evaluated and reported by
`sa-deploy run`, checked and inspected by `validate` / `inspect`, with no edit anywhere else."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sa_deploy.backends import BackendManager, backend_for, register_backend, unregister_backend
from sa_deploy.backends.manager import ArtifactSpec
from sa_deploy.cli import main


class OrtCopyManager(BackendManager):
    """'.ortx': an FP32 ONNX file under another name, run by onnxruntime; planned from the run's first FP32 export."""

    name = "ortcopy"
    suffixes = (".ortx",)
    runner_path = "sa_deploy.backends.ort.runner:OnnxRuntimeRunner"

    def metadata(self, path: Path) -> dict[str, str]:
        import onnx

        from sa_deploy.exporters.metadata import read_onnx_metadata

        return read_onnx_metadata(onnx.load(str(path), load_external_data=False))

    def owned_output(self, path: Path) -> bool:
        return path.is_file() and "model" in self.metadata(path)

    def plan_artifacts(self, plan, upstream: list[ArtifactSpec]) -> list[ArtifactSpec]:
        base = next(s for s in upstream if s.backend == "onnxruntime" and s.precision == "fp32")
        return [ArtifactSpec("ortcopy-fp32", self.name, "ortcopy", "fp32", base.path.with_suffix(".ortx"),
                             base.lowering, "fp32, copied", base.name)]

    def build(self, spec: ArtifactSpec, source: Path | None, context) -> dict:
        tmp = spec.path.with_name(spec.path.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, spec.path)
        return {}


@pytest.fixture
def ortcopy():
    manager = register_backend(OrtCopyManager())
    yield manager
    unregister_backend(manager.name)


def test_run_builds_evaluates_and_reports_a_registered_runtime(ortcopy, tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--data", "embedded", "--val-num", "40", "--calib-num", "16", "--no-coreml", "--no-openvino",
               "--no-tensorrt", "--out", f"{out}/"])
    report = json.loads((out / "report.json").read_text())
    rows = {a["name"]: a for a in report["artifacts"]}
    assert rc == 0 and report["passed"]
    row = rows["ortcopy-fp32"]
    assert row["format"] == "ortcopy" and row["status"] == "ok" and row["runner"] == "onnxruntime"
    assert row["drop"] == 0.0 and row["cosine"] > 0.99999 and row["size_mb"] == rows["onnx-fold-fp32"]["size_mb"]
    assert Path(row["path"]) == out / "sa_resnet_cifar_fold.ortx"
    assert any(s["name"] == "ortcopy: ortcopy-fp32" and s["status"] == "ok" for s in report["stages"])
    assert "| ortcopy fold | fp32, copied |" in (out / "report.md").read_text()
    # a second run may replace it (its manager says the file is sa-deploy's), the user's own file it may not
    assert main(["run", "--data", "embedded", "--val-num", "40", "--calib-num", "16", "--no-coreml", "--no-openvino",
                 "--no-tensorrt", "--out", f"{out}/"]) == 0


def test_validate_and_inspect_ask_the_registered_runtime(ortcopy, tmp_path, capsys):
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--out", f"{tmp_path}/"]) == 0
    copy = tmp_path / "m.ortx"
    shutil.copyfile(tmp_path / "sa_resnet_cifar_fold.onnx", copy)
    assert backend_for(copy) is ortcopy and ortcopy.precision_of(copy) == "fp32"
    out = tmp_path / "v.json"
    assert main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", "embedded", "--num", "50",
                 "--no-progress", "--artifacts", str(copy), "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["precision"] == "fp32" and result["drop"] == 0.0 and result["details"]["runner"] == "onnxruntime"
    capsys.readouterr()
    # a runtime that does not say how to inspect its files: one line, exit 2
    assert main(["inspect", str(copy)]) == 2
    assert "cannot inspect m.ortx (ortcopy)" in capsys.readouterr().err


def test_unregistered_suffix_is_one_line_error(tmp_path, capsys):
    stray = tmp_path / "m.ortx"
    stray.write_bytes(b"x")
    assert main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", "embedded",
                 "--artifacts", str(stray)]) == 2
    assert "don't know how to run m.ortx" in capsys.readouterr().err
