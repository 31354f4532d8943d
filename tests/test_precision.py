"""INT8 (tensorrt / cpu flavours), FP16, calibration cache, accuracy budget and sensitivity, on a model trained here.

The model: the embedded trained sa_resnet_cifar (sa_deploy/weights, see its model card)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sa_deploy.calibration.int8 import quantize_int8, sa_gate_nodes
from sa_deploy.cli import main
from sa_deploy.exporters.fp16 import convert_fp16
from sa_deploy.exporters.metadata import read_onnx_metadata
from sa_deploy.exporters.onnx import export_onnx
from sa_deploy.models import create_model
from sa_deploy.models.registry import pretrained_path


@pytest.fixture(scope="session")
def trained_checkpoint():
    """The embedded trained SA-ResNet (CIFAR-10); SA_DEPLOY_PRECISION_CHECKPOINT can point at another one."""
    if os.environ.get("SA_DEPLOY_PRECISION_CHECKPOINT"):
        return Path(os.environ["SA_DEPLOY_PRECISION_CHECKPOINT"])
    return pretrained_path("sa_resnet_cifar")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="module")
def model(trained_checkpoint):
    return create_model("sa_resnet_cifar", checkpoint=trained_checkpoint)


@pytest.fixture(scope="module")
def fp32_onnx(model, work, request):
    if os.environ.get("SA_DEPLOY_PRECISION_CHECKPOINT"):  # another checkpoint: its own export
        return export_onnx(model, work / "m_fold.onnx", "fold").path
    # the embedded weights: a copy of the session's export (tests here write beside it)
    return Path(shutil.copy(request.getfixturevalue("exported_cifar")["fold"], work / "m_fold.onnx"))


@pytest.fixture(scope="module")
def calib(labeled_data, model):
    return labeled_data.calib.open(model.preprocess, num=200, seed=1)


@pytest.fixture(scope="module")
def artifacts(fp32_onnx, calib, work):
    cache = work / "cache"
    trt = quantize_int8(fp32_onnx, work / "m_int8_trt.onnx", calib, "minmax", "tensorrt", cache_dir=cache)
    cpu = quantize_int8(fp32_onnx, work / "m_int8_cpu.onnx", calib, "minmax", "cpu", cache_dir=cache)
    fp16 = convert_fp16(fp32_onnx, work / "m_fp16.onnx")
    return {"fp32": fp32_onnx, "fp16": fp16, "trt": trt, "cpu": cpu, "cache": cache}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _qdq_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def _axis(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "axis"), None)


def test_tensorrt_flavour_is_symmetric_int8_per_channel_weights(artifacts):
    m = onnx.load(str(artifacts["trt"].path))
    inits = _inits(m)
    qdq = _qdq_nodes(m)
    assert len(qdq) > 60
    consumers = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weight_dq = 0
    for n in qdq:
        assert len(n.input) == 3, f"{n.name} has no explicit zero point"
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point {zp.dtype} {zp}"
        scale = inits[n.input[1]]
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # a weight
            assert inits[n.input[0]].dtype == np.int8
            user = consumers[n.output[0]][0]
            if user.op_type in ("Conv", "Gemm") and user.input[1] == n.output[0]:
                weight_dq += 1
                assert scale.ndim == 1 and scale.size == inits[n.input[0]].shape[0] > 1
                assert _axis(n) == 0, f"{n.name}: per-channel axis {_axis(n)}"  # absent would mean ONNX's default 1
        else:  # activation: per-tensor
            assert scale.ndim == 0 or scale.size == 1, f"{n.name}: activation scale {scale.shape}"
    assert weight_dq == 31 + 1  # every Conv and the classifier Gemm
    # bias stays float (no int32 Q/DQ): TensorRT folds it into the fused conv
    assert all(inits[n.input[0]].dtype != np.int32 for n in qdq if n.input[0] in inits)
    # both inputs of every residual Add come through DequantizeLinear, so Conv + Add can fuse
    producer = {o: n for n in m.graph.node for o in n.output}
    residual = [n for n in m.graph.node if n.op_type == "Add" and "/sa/" not in n.name]
    assert len(residual) == 9
    for add in residual:
        assert all(producer[i].op_type == "DequantizeLinear" for i in add.input), add.name
    # the SA gate computes in float by default (on the dequantized conv output): no Q/DQ inside it
    gate = [n for n in m.graph.node if n.op_type in ("Sigmoid", "InstanceNormalization")]
    assert len(gate) == 18
    assert all(c.op_type != "QuantizeLinear" for n in gate for c in consumers[n.output[0]])
    assert all(producer[n.input[0]].op_type != "DequantizeLinear" for n in gate if n.op_type == "Sigmoid")


def test_cpu_flavour_uint8_activations_int8_weights(artifacts):
    m = onnx.load(str(artifacts["cpu"].path))
    inits = _inits(m)
    act_types, weight_types = set(), set()
    for n in _qdq_nodes(m):
        zp = inits[n.input[2]]
        (weight_types if n.op_type == "DequantizeLinear" and n.input[0] in inits else act_types).add(zp.dtype)
    assert act_types == {np.dtype(np.uint8)}
    assert np.dtype(np.int8) in weight_types


def test_sa_gate_precision_follows_the_flavour(artifacts, fp32_onnx, calib, work):
    """cpu quantizes the SA gate by default (onnxruntime runs it as QLinear ops), tensorrt keeps it float."""
    assert artifacts["cpu"].excluded_nodes == [] and artifacts["cpu"].sa_gate == "int8"
    assert artifacts["trt"].sa_gate == "float"
    m = onnx.load(str(artifacts["cpu"].path))
    producer = {o: n for n in m.graph.node for o in n.output}
    sigmoids = [n for n in m.graph.node if n.op_type == "Sigmoid"]
    assert len(sigmoids) == 9 and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in sigmoids)
    # the override: a float gate for the cpu flavour (ranges from the cache)
    r = quantize_int8(fp32_onnx, work / "m_int8_cpu_gatef.onnx", calib, "minmax", "cpu", cache_dir=artifacts["cache"],
                      keep_sa_gate_float=True)
    assert r.cache_hit and r.sa_gate == "float"
    assert set(r.excluded_nodes) == set(sa_gate_nodes(onnx.load(str(fp32_onnx))))


def test_cli_sa_gate_override(fp32_onnx, work, capsys):
    npz = work / "few.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    for gate, excluded in (("float", 9 * 6), ("int8", 0)):
        out = work / f"cli_gate_{gate}.onnx"
        capsys.readouterr()
        assert main(["quantize", str(fp32_onnx), "--calib", str(npz), "--method", "minmax", "--flavour", "cpu",
                     "--sa-gate", gate, "--out", str(out), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["excluded_nodes"]) == excluded


def test_int8_metadata_and_result(artifacts, fp32_onnx):
    trt = artifacts["trt"]
    meta = read_onnx_metadata(onnx.load(str(trt.path)))
    base = read_onnx_metadata(onnx.load(str(fp32_onnx)))
    assert meta["precision"] == "int8" and meta["int8_flavour"] == "tensorrt" and meta["calibration_method"] == "minmax"
    assert meta["calibration_count"] == "200" and meta["calibration_fingerprint"] == trt.data_fingerprint
    assert meta["preprocess"] == base["preprocess"] and meta["checkpoint_sha256"] == base["checkpoint_sha256"]
    d = json.loads(json.dumps(trt.to_dict()))
    assert d["num_calibration"] == 200 and d["cache_hit"] is False and d["seconds"] > 0
    assert len(trt.excluded_nodes) == 9 * 6 and set(trt.excluded_nodes) == set(sa_gate_nodes(onnx.load(str(fp32_onnx))))


def test_calibration_cache_reused_only_when_valid(artifacts, fp32_onnx, calib, labeled_data, model, work):
    cache = artifacts["cache"]
    assert artifacts["trt"].cache_hit is False
    assert artifacts["cpu"].cache_hit is True  # ranges are flavour-independent
    again = quantize_int8(fp32_onnx, work / "again.onnx", calib, "minmax", "tensorrt", cache_dir=cache)
    assert again.cache_hit is True
    assert onnx.load(str(again.path)).graph == onnx.load(str(artifacts["trt"].path)).graph
    # other data -> stale
    other_data = labeled_data.calib.open(model.preprocess, num=40, seed=3)
    r = quantize_int8(fp32_onnx, work / "other_data.onnx", other_data, "minmax", "tensorrt", cache_dir=cache)
    assert r.cache_hit is False
    # other model -> stale (same architecture, other weights)
    other_model = export_onnx(create_model("sa_resnet_cifar"), work / "other_model.onnx", "fold").path
    r = quantize_int8(other_model, work / "other_model_int8.onnx", other_data, "minmax", "tensorrt", cache_dir=cache)
    assert r.cache_hit is False
    # a cache file whose stored key does not match is not trusted, even under the expected name
    stale_key_file = r.ranges_path
    payload = json.loads(stale_key_file.read_text())
    payload["sa_deploy_key"]["data_fingerprint"] = "something-else"
    stale_key_file.write_text(json.dumps(payload))
    r2 = quantize_int8(other_model, work / "other_model_int8.onnx", other_data, "minmax", "cpu", cache_dir=cache)
    assert r2.cache_hit is False
    assert quantize_int8(other_model, work / "x.onnx", other_data, "minmax", "cpu", cache_dir=cache).cache_hit


def test_fp16_graph(artifacts, fp32_onnx):
    m = onnx.load(str(artifacts["fp16"]))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer if i.name in conv_weights)
    assert read_onnx_metadata(m)["precision"] == "fp16"


def test_validate_report_fp32_fp16_int8(artifacts, trained_checkpoint, labeled_data, work, capsys):
    """The acceptance run: one table/JSON with PyTorch, ONNX FP32, FP16, INT8-tensorrt and INT8-cpu."""
    out = work / "validation.json"
    paths = [artifacts["fp32"], artifacts["fp16"], artifacts["trt"].path, artifacts["cpu"].path]
    rc = main(["validate", "--model", "sa_resnet_cifar", "--checkpoint", str(trained_checkpoint),
               "--data", labeled_data.val.cli_value, "--num", "500", "--artifacts", *map(str, paths),
               "--max-drop", "3", "--json", str(out), "--no-progress", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    for col in ("top-1", "top-5", "drop", "cosine", "top-1 agree", "status"):
        assert col in text
    report = json.loads(out.read_text())
    ref = report["reference"]
    rows = {r["name"]: r for r in report["results"]}
    print(json.dumps({k: (v["precision"], v["top1"], v["drop"]) for k, v in rows.items()}))
    assert ref["num_images"] == 500 and ref["top1"] > 30, "the test model did not train"
    fp32, fp16 = rows[paths[0].name], rows[paths[1].name]
    assert fp32["precision"] == "fp32" and abs(fp32["drop"]) < 1e-9 and fp32["parity"]["top1_agreement"] == 1.0
    one_image = 100 / ref["num_images"]  # points; drops are differences of floats: compare with a little slack
    assert fp16["precision"] == "fp16" and abs(fp16["drop"]) <= one_image + 1e-6 and fp16["parity"]["cosine"] > 0.999
    for p in paths[2:]:
        r = rows[p.name]
        assert r["precision"] == "int8" and r["drop"] <= 3.0 and r["parity"]["cosine"] > 0.95, r
        assert r["passed"] and 0 < r["top5"] <= 100


def test_budget_gate_fails(artifacts, trained_checkpoint, labeled_data, fp32_onnx, work, capsys):
    """A deliberately broken INT8 artifact (calibrated on constant images: every range collapses) fails the default
    budget with exit code 3; a negative budget fails even a perfect FP32 artifact."""
    npz = work / "flat.npz"
    np.savez(npz, images=np.full((16, 32, 32, 3), 128, np.uint8))
    bad = work / "bad_int8.onnx"
    assert main(["quantize", str(fp32_onnx), "--calib", str(npz), "--method", "minmax", "--out", str(bad)]) == 0
    common = ["validate", "--model", "sa_resnet_cifar", "--checkpoint", str(trained_checkpoint),
              "--data", labeled_data.val.cli_value, "--num", "200", "--no-progress", "--threads", "1"]
    capsys.readouterr()
    assert main(common + ["--artifacts", str(bad), "--json", str(work / "bad.json")]) == 3
    err = capsys.readouterr().err.strip()
    assert "over the accuracy budget" in err and "\n" not in err
    assert json.loads((work / "bad.json").read_text())["passed"] is False
    assert main(common + ["--artifacts", str(fp32_onnx), "--max-drop", "-1"]) == 3
    # --auto-fallback, for real: the broken artifact is re-quantized from its FP32 source on real calibration images
    # (its recorded calibration data differs, so the fallback re-calibrates) until the budget holds
    out = work / "fallback.json"
    with pytest.warns(UserWarning, match="calibration data differs"):
        rc = main(common + ["--artifacts", str(fp32_onnx), str(bad), "--auto-fallback", "--calib",
                            labeled_data.calib.cli_value, "--cache-dir", str(work / "fb_cache"), "--json", str(out)])
    report = json.loads(out.read_text())
    rows = {Path(r["name"]).name: r for r in report["results"]}
    fixed = Path(report["auto_fallback"][0]["quantize"]["path"])
    assert rc == 0 and report["passed"] and fixed.is_file()
    assert rows[bad.name]["details"]["replaced_by"] == str(fixed) and not rows[bad.name]["passed"]
    assert rows[fixed.name]["passed"] and rows[fixed.name]["drop"] <= 1.0


def test_sensitivity_and_auto_fallback(artifacts, fp32_onnx, calib, labeled_data, model, work):
    from sa_deploy.calibration.sensitivity import auto_fallback, tensor_sensitivity

    few = labeled_data.val.open(model.preprocess, num=32)
    rows = tensor_sensitivity(fp32_onnx, artifacts["trt"].path, few)
    names = {n.name for n in onnx.load(str(artifacts["trt"].path)).graph.node}
    assert len(rows) > 30
    assert [r.sqnr_loss_db for r in rows] == sorted((r.sqnr_loss_db for r in rows), reverse=True)
    convs = [r for r in rows if r.op_type == "Conv"]
    assert len(convs) == 31 and all(r.node in names and 0 < r.sqnr_db < 200 for r in convs)
    assert json.loads(json.dumps([r.to_dict() for r in rows]))
    # the loop: a fake evaluator that says the budget holds once 2 more nodes are float
    seen = []

    def drop_of(path):
        n = len(json.loads(read_onnx_metadata(onnx.load(str(path)))["float_nodes"]))
        seen.append(n)
        return 5.0 if n < 54 + 2 else 0.5

    res = auto_fallback(fp32_onnx, work / "fallback.onnx", calib, drop_of, 1.0, "minmax", "tensorrt",
                        cache_dir=artifacts["cache"], per_round=2, sensitivity_source=few)
    assert seen == [54, 56] and res.passed and res.quantize.cache_hit
    initial = set(artifacts["trt"].excluded_nodes)
    added = [n for n in res.fallback_nodes if n not in initial]
    worst = [r.node for r in res.sensitivity if r.node and r.node not in initial and r.sqnr_loss_db > 0]
    assert len(added) == 2 and added == list(dict.fromkeys(worst))[:2]
    assert all(n in res.quantize.excluded_nodes for n in added)
    assert json.loads(json.dumps(res.to_dict()))["passed"] is True


def test_quantize_cli_errors_and_help(fp32_onnx, artifacts, work, capsys, labeled_data):
    for argv in (["quantize", str(fp32_onnx)],  # int8 without --calib
                 ["quantize", str(fp32_onnx), "--calib", labeled_data.val.cli_value, "--num", "8",
                  "--exclude-nodes", "no/such/node"],
                 ["quantize", str(artifacts["trt"].path), "--calib", labeled_data.val.cli_value, "--num", "8"],
                 ["fp16", str(work / "missing.onnx")],
                 ["validate", "--model", "sa_resnet_cifar", "--data", labeled_data.val.cli_value,
                  "--artifacts", str(work / "missing.onnx")]):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("sa-deploy ") and "\n" not in err and "Traceback" not in err, (argv, err)
    for cmd in ("quantize", "fp16", "validate"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and "examples:" in capsys.readouterr().out
