"""ONNX export of the ImageNet-size models: graph shape rules, node cost per SA layer, parity, determinism."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import randomize

from sa_deploy.api import export, onnx_parity
from sa_deploy.exporters.inspect import inspect_onnx
from sa_deploy.models import create_model

FORBIDDEN = {"Shape", "Gather", "Unsqueeze", "ConstantOfShape"}
MAX_SA_NODES = {"reshape-transpose": 9, "fold": 6, "none": 20}


@pytest.fixture(scope="module")
def models():
    return {name: randomize(create_model(name), seed=3) for name in ("sa_resnet50", "sa_mobilenetv2")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sa_resnet50", "sa_mobilenetv2"])
@pytest.mark.parametrize("lowering", ["reshape-transpose", "fold"])
def test_export_graph_rules_and_parity(models, tmp_path, name, lowering):
    model = models[name]
    result = export(model, tmp_path, lowering=lowering)
    info = inspect_onnx(result.export.path)
    assert not FORBIDDEN & set(info.op_histogram), info.op_histogram
    assert info.max_rank <= 4
    assert info.opset == 17
    assert info.inputs[0]["name"] == "input" and info.inputs[0]["shape"][0] == "batch"
    assert info.outputs[0]["name"] == "logits"
    n_sa = sum(1 for m in model.modules() if type(m).__name__ == "SALayer")
    assert info.sa_layers == n_sa
    assert max(info.sa_nodes_per_layer.values()) <= MAX_SA_NODES[lowering]
    assert [s.batch for s in result.parity] == [1, 3]
    for s in result.parity:
        assert s.max_abs <= 1e-4 and s.passed, s
    meta = info.metadata
    assert meta["model"] == name and meta["lowering"] == lowering and meta["opset"] == "17"
    assert '"input_size": 224' in meta["preprocess"]
    # dynamic batch: a batch of 5 runs through the same file
    sess = ort.InferenceSession(str(result.export.path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((5, 3, 224, 224), np.float32)})[0].shape == (5, 1000)


@pytest.mark.slow
def test_naive_export_costs_more(models, tmp_path):
    info = inspect_onnx(export(models["sa_mobilenetv2"], tmp_path, lowering="none", parity=False).export.path)
    assert min(info.sa_nodes_per_layer.values()) >= MAX_SA_NODES["none"]
    assert info.max_rank == 5


def _official_checkpoint(model, path):
    torch.save({"epoch": 1, "arch": "x", "best_acc": 1.0, "optimizer": {"state": {}, "param_groups": []},
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)


@pytest.mark.slow
def test_export_from_official_checkpoint_is_deterministic(models, tmp_path):
    ck = tmp_path / "model_best.pth.tar"
    _official_checkpoint(models["sa_mobilenetv2"], ck)
    loaded = create_model("sa_mobilenetv2", checkpoint=ck)
    a = export(loaded, tmp_path / "a", lowering="fold")
    b = export(create_model("sa_mobilenetv2", checkpoint=ck), tmp_path / "b", lowering="fold", parity=False)
    for s in a.parity:
        assert s.max_abs <= 1e-4
    bytes_a, bytes_b = a.export.path.read_bytes(), b.export.path.read_bytes()
    assert hashlib.sha256(bytes_a).digest() == hashlib.sha256(bytes_b).digest()
    meta = {p.key: p.value for p in onnx.load(str(a.export.path)).metadata_props}
    assert meta["sa_deploy.checkpoint_sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()


def test_small_model_parity_detects_a_wrong_file(tmp_path):
    """The parity check can fail: a file from other weights does not pass against this model."""
    model = randomize(create_model("sa_resnet_cifar"), seed=1)
    other = randomize(create_model("sa_resnet_cifar"), seed=2)
    path = export(other, tmp_path, lowering="fold", parity=False).export.path
    stats = onnx_parity(model, path, 32)
    assert not any(s.passed for s in stats)


def test_no_partial_file_on_failure(tmp_path, monkeypatch):
    import sa_deploy.exporters.onnx as onnx_exporter

    def boom(*a, **k):
        raise RuntimeError("simulated checker failure")

    monkeypatch.setattr(onnx_exporter.onnx.checker, "check_model", boom)
    with pytest.raises(RuntimeError):
        export(create_model("sa_resnet_cifar"), tmp_path, parity=False)
    assert list(tmp_path.iterdir()) == []
