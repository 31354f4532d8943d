"""Offline TensorRT lint: passes on every graph our exporters make, fails with named nodes on bad ones."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tensorrt_graphs import conv_weight, image_input, pipeline_graphs, quantize_qdq, tiny_model

from sa_deploy.backends.trt.lint import graph_precision, lint_model, lint_onnx
from sa_deploy.cli import main

GOOD = ["resnet_fold", "resnet_reshape-transpose", "resnet_none", "mbv2_fold", "resnet_fp16", "mbv2_fp16",
        "resnet_qdq", "mbv2_qdq"]


@pytest.fixture(scope="module")
def graphs():
    return pipeline_graphs()


def _weighted(path) -> int:
    return sum(n.op_type in ("Conv", "Gemm") for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("key", GOOD)
def test_lint_passes_on_our_graphs(graphs, key):
    report = lint_onnx(graphs[key], max_batch=32)
    assert report.passed and not report.warnings, [f.describe() for f in report.findings]
    assert report.checked["nodes"] > 50
    if key.endswith("_qdq"):
        model = onnx.load(str(graphs[key]))
        assert graph_precision(model) == "int8"
        # every Conv/Gemm weight went through a checked per-channel axis-0 DequantizeLinear
        assert report.checked["weight_dq_per_channel"] == _weighted(graphs[key]) > 10
        c = report.checked
        assert c["activation_q"] > 50  # every Q/DQ node was checked as a weight or an activation one
        assert c["qdq_nodes"] == c["activation_q"] + c["activation_dq"] + c["weight_dq"]
        assert report.checked["adds_with_qdq_inputs"] >= 9  # residual Adds (and SA gate Adds) are Q/DQ-fed
    else:
        assert report.checked["qdq_nodes"] == 0
        assert graph_precision(onnx.load(str(graphs[key]))) == ("fp16" if key.endswith("fp16") else "fp32")


def _names(report, rule) -> set[str]:
    return {name for f in report.findings if f.rule == rule for name, _ in f.nodes}


def test_cpu_flavour_fails_tensorrt_lint(graphs, tmp_path):
    report = lint_onnx(graphs["resnet_qdq_cpu"])
    assert not report.passed
    assert {"qdq-int8", "qdq-zero-point"} <= report.rules_failed()
    # the input's uint8 asymmetric QuantizeLinear is named, with its op type
    assert "input_QuantizeLinear" in _names(report, "qdq-int8")
    assert ("input_QuantizeLinear", "QuantizeLinear") in next(
        f.nodes for f in report.errors if f.rule == "qdq-zero-point")
    # a quantizer that also quantizes InstanceNormalization's scale/bias (ours keeps the SA gate float) is
    # warned about: the parser wants them as initializers
    everything = quantize_qdq(graphs["resnet_fold"], tmp_path / "all.onnx", "cpu", batches=1)
    assert any(f.rule == "op-restriction" and f.nodes[0][1] == "InstanceNormalization"
               for f in lint_onnx(everything).warnings)


def test_asymmetric_zero_point_fails(graphs):
    model = onnx.load(str(graphs["resnet_qdq"]))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and not n.name.startswith("input"))
    zp = next(t for t in model.graph.initializer if t.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    report = lint_model(model)
    assert report.rules_failed() == {"qdq-zero-point"}
    assert (q.name, "QuantizeLinear") in report.errors[0].nodes


def test_residual_add_without_qdq_is_flagged(graphs):
    model = onnx.load(str(graphs["resnet_qdq"]))
    producer = {o: n for n in model.graph.node for o in n.output}
    add = next(n for n in model.graph.node if n.op_type == "Add"
               and all(producer.get(t) is not None and producer[t].op_type == "DequantizeLinear" for t in n.input))
    add.input[1] = producer[add.input[1]].input[0]  # bypass the DQ -> Q pair on one input
    add.input[1] = producer[add.input[1]].input[0]
    report = lint_model(model)
    assert report.passed
    assert [f.nodes for f in report.warnings if f.rule == "qdq-residual-add"] == [((add.name, "Add"),)]


def test_quantized_int32_bias_fails(graphs, tmp_path):
    path = quantize_qdq(graphs["resnet_fold"], tmp_path / "bias.onnx", "tensorrt", quantize_bias=True, batches=1)
    report = lint_onnx(path)
    assert "qdq-int8" in report.rules_failed()
    assert any(name.endswith("bias_DequantizeLinear") for name in _names(report, "qdq-int8"))


def test_weight_scale_axis_and_length(graphs):
    model = onnx.load(str(graphs["resnet_qdq"]))
    inits = {t.name: t for t in model.graph.initializer}
    conv_inputs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_inputs]
    a, b = weight_dq[0], weight_dq[1]
    del a.attribute[:]
    a.attribute.append(helper.make_attribute("axis", 1))
    for i, suffix in ((1, "scale"), (2, "zp")):  # one scale (and zero point) fewer than output channels
        arr = numpy_helper.to_array(inits[b.input[i]])[:-1]
        model.graph.initializer.append(numpy_helper.from_array(arr, f"short_{suffix}"))
        b.input[i] = f"short_{suffix}"
    report = lint_model(model)
    assert report.rules_failed() == {"qdq-weight-per-channel"}
    assert _names(report, "qdq-weight-per-channel") == {a.name, b.name}
    assert any("on axis 1, expected" in f.message for f in report.errors)


def test_unsupported_ops_are_named():
    w = conv_weight()
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Hardmax", ["c"], ["h"], name="hardmax0"),
             helper.make_node("FancyGate", ["h"], ["g"], name="custom0", domain="my.ops"),
             helper.make_node("Relu", ["g"], ["out"], name="relu0")]
    model = tiny_model(nodes, [image_input()], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                       [w], domains=("my.ops",))
    report = lint_model(model)
    assert report.rules_failed() == {"op-support"}
    assert _names(report, "op-support") == {"hardmax0", "custom0"}
    assert ("hardmax0", "Hardmax") in next(f.nodes for f in report.errors if "Hardmax" in f.message)


def test_dynamic_spatial_dim_without_profile_fails(graphs):
    model = onnx.load(str(graphs["resnet_fold"]))
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.Clear()
    dim.dim_param = "height"
    report = lint_model(model)
    assert report.rules_failed() == {"dynamic-dim"}
    assert "'height'" in report.errors[0].message and report.errors[0].nodes == (("input", "<graph input>"),)
    assert lint_onnx(graphs["resnet_fold"]).passed  # the dynamic batch dim alone is covered by the profile


def test_static_batch_below_max_batch_fails():
    nodes = [helper.make_node("Relu", ["input"], ["out"], name="relu0")]
    model = tiny_model(nodes, [image_input(dims=(1, 3, 8, 8))],
                       [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    assert lint_model(model, max_batch=1).passed
    assert lint_model(model, max_batch=8).rules_failed() == {"static-batch"}


def test_rank_above_8_fails():
    shape = numpy_helper.from_array(np.array([1, 1, 1, 1, 1, 3, 2, 2, 16], np.int64), "shape9")
    nodes = [helper.make_node("Reshape", ["input", "shape9"], ["r9"], name="to_rank9"),
             helper.make_node("Relu", ["r9"], ["out"], name="relu9")]
    model = tiny_model(nodes, [image_input(dims=(1, 3, 8, 8))],
                       [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [shape])
    report = lint_model(model)
    assert report.rules_failed() == {"rank"}
    assert ("to_rank9", "Reshape") in report.errors[0].nodes and "rank 9" in report.errors[0].message


def test_float64_and_int64_compute_fail():
    nodes = [helper.make_node("Cast", ["input"], ["d"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Relu", ["d"], ["r"], name="relu_double"),
             helper.make_node("Cast", ["r"], ["i"], name="to_int64", to=TensorProto.INT64),
             helper.make_node("MaxPool", ["i"], ["out"], name="pool_int64", kernel_shape=[2, 2])]
    model = tiny_model(nodes, [image_input()], [helper.make_tensor_value_info("out", TensorProto.INT64, None)])
    report = lint_model(model)
    assert {"dtype", "int64-compute"} <= report.rules_failed()
    assert "to_double" in _names(report, "dtype")
    assert _names(report, "int64-compute") == {"pool_int64"}


def test_float64_initializer_fails():
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3)), "w64")
    nodes = [helper.make_node("Conv", ["input", "w64"], ["out"], name="conv64")]
    model = tiny_model(nodes, [image_input()], [helper.make_tensor_value_info("out", TensorProto.DOUBLE, None)],
                       [w])
    report = lint_model(model)
    assert "initializer-dtype" in report.rules_failed()


def test_cli_lint_exit_codes_and_json(graphs, capsys):
    assert main(["lint", "--target", "tensorrt", str(graphs["mbv2_qdq"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] and data["target"] == "tensorrt" and data["checked"]["weight_dq_per_channel"] > 10
    assert main(["lint", "--target", "tensorrt", str(graphs["resnet_qdq_cpu"])]) == 1
    out = capsys.readouterr().out
    assert "qdq-int8" in out and "FAILED" in out
