"""The backend registry and the runner lifecycle (Polygraphy's rule: activate before infer, close after)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from sa_deploy.backends import BACKENDS, OnnxRuntimeRunner, TorchRunner, backend_for, open_runner, unavailable_reason
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.onnx import export_onnx, random_inputs
from sa_deploy.models import create_model


def test_registry_says_what_is_available_and_why_not(monkeypatch):
    assert {"pytorch", "onnxruntime", "coreml", "tensorrt"} <= set(BACKENDS)
    assert unavailable_reason("pytorch") is None and unavailable_reason("onnxruntime") is None
    monkeypatch.setitem(sys.modules, "coremltools", None)  # as if not installed
    assert "pip install 'sa-deploy[coreml]'" in unavailable_reason("coreml")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert "pip install 'sa-deploy[tensorrt]'" in unavailable_reason("tensorrt")
    with pytest.raises(SADeployError, match="unknown backend 'tflite'"):
        unavailable_reason("tflite")


def test_open_runner_by_suffix(tmp_path):
    assert backend_for("m.onnx").name == "onnxruntime" and backend_for("m.mlpackage").name == "coreml"
    assert backend_for("m.plan").name == "tensorrt"
    with pytest.raises(SADeployError, match="don't know how to run m.tflite"):
        backend_for("m.tflite")
    with pytest.raises(SADeployError, match="artifact not found"):
        open_runner(tmp_path / "missing.onnx")


def test_runner_must_be_activated_and_with_closes_it(tmp_path):
    model = create_model("sa_resnet_cifar")
    path = export_onnx(model, tmp_path / "m.onnx", "fold").path
    x = random_inputs(32, 2)
    runner = open_runner(path, threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and not runner.active
    with pytest.raises(RuntimeError, match="not active: use `with runner:`"):
        runner.infer(x)
    with runner, TorchRunner(model) as reference:
        assert runner.active
        np.testing.assert_allclose(runner.infer(x), reference.infer(x), atol=1e-4)
    assert not runner.active and runner.session is None
