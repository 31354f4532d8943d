"""CoreML export -> saved .mlpackage -> reference MIL executor, checked against PyTorch and onnxruntime.

Each conversion takes seconds, so packages are built once per module and shared."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers import randomize, torch_logits

from sa_deploy.api import coreml_parity, export_coreml
from sa_deploy.backends import open_runner
from sa_deploy.backends.coreml.export import read_coreml_metadata
from sa_deploy.backends.coreml.reference import MILExecutor, UnsupportedOpError
from sa_deploy.backends.coreml.runner import CoreMLRunner
from sa_deploy.backends.coreml.w8a8 import calibrate_w8a8
from sa_deploy.data.preprocess import normalize
from sa_deploy.data.sample import load_split
from sa_deploy.errors import SADeployError
from sa_deploy.models import create_model, get_spec
from sa_deploy.rewrite import lower_model
from sa_deploy.validate.parity import compare

pytest.importorskip("coremltools")
MODELS = ("sa_resnet_cifar", "sa_mobilenetv2_cifar")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: randomize(create_model(name), seed=5) for name in MODELS}


@pytest.fixture(scope="module")
def fp32(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    return {(name, low): export_coreml(models[name], out, "fp32", low, parity=False).export.path
            for name in MODELS for low in ("fold", "reshape-transpose")}


@pytest.fixture(scope="module")
def val(models, labeled_data):
    src = labeled_data.val.open(models[MODELS[0]].preprocess, num=40)
    return next(iter(src.batches(40)))[0]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("lowering", ["fold", "reshape-transpose"])
def test_fp32_reference_matches_pytorch(models, fp32, name, lowering):
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with open_runner(fp32[name, lowering]) as runner:  # .mlpackage dispatch -> CoreMLRunner
        assert isinstance(runner, CoreMLRunner)
        s = compare(runner.infer(x), torch_logits(models[name], x), "fp32")
    assert s.max_abs <= 1e-3 and s.cosine >= 0.9999 and s.top1_agreement == 1.0, s


def test_executor_matches_onnxruntime(models, fp32, tmp_path):
    """Independent reference: the same lowered model through ONNX + onnxruntime."""
    from sa_deploy.backends import OnnxRuntimeRunner
    from sa_deploy.exporters.onnx import export_onnx

    model = models["sa_mobilenetv2_cifar"]
    onnx_path = export_onnx(model, tmp_path / "m.onnx", "fold").path
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    executor = MILExecutor(fp32["sa_mobilenetv2_cifar", "fold"])
    got = np.concatenate([executor.run({"input": s[None]})["logits"] for s in x])
    with OnnxRuntimeRunner(onnx_path) as ort_runner:
        want = ort_runner.infer(x)
    s = compare(got, want, "fp32")
    assert s.max_abs <= 1e-4 and s.cosine >= 0.99999, s


def test_metadata_and_ops(fp32):
    meta = read_coreml_metadata(fp32["sa_resnet_cifar", "fold"])
    assert meta["model"] == "sa_resnet_cifar" and meta["lowering"] == "fold" and meta["precision"] == "fp32"
    assert meta["format"] == "coreml" and '"input_size": 32' in meta["preprocess"]
    hist = MILExecutor(fp32["sa_resnet_cifar", "fold"]).op_histogram()
    assert hist["instance_norm"] == hist["sigmoid"] > 0 and "transpose" not in hist  # fold: no shuffle ops
    assert MILExecutor(fp32["sa_resnet_cifar", "reshape-transpose"]).op_histogram()["transpose"] > 0


def test_corrupted_weight_fails_parity(models, fp32, tmp_path):
    """Change one conv weight tensor inside weight.bin: the reference executor sees it and parity fails."""
    bad = tmp_path / "bad.mlpackage"
    shutil.copytree(fp32["sa_resnet_cifar", "fold"], bad)
    executor = MILExecutor(bad)
    op = next(o for o in executor.block.operations
              if o.type == "const" and o.attributes["val"].WhichOneof("value") == "blobFileValue"
              and len(o.attributes["val"].type.tensorType.dimensions) == 4)
    weights = executor._consts[op.outputs[0].name].astype(np.float32)
    weight_bin = executor.package.weights_dir / "weight.bin"
    data = bytearray(weight_bin.read_bytes())
    start = data.find(weights.tobytes())  # the tensor's bytes, located without assuming the blob header layout
    assert start > 0
    data[start:start + weights.nbytes] = (weights * -3.0).tobytes()
    weight_bin.write_bytes(bytes(data))
    stats, _ = coreml_parity(models["sa_resnet_cifar"], bad, 32, "fp32")
    assert not any(s.passed for s in stats)
    good, runner = coreml_parity(models["sa_resnet_cifar"], fp32["sa_resnet_cifar", "fold"], 32, "fp32")
    assert all(s.passed for s in good) and runner in ("coreml", "coreml-reference")


def test_unknown_op_is_named(fp32, monkeypatch):
    from sa_deploy.backends.coreml import mil_ops

    monkeypatch.delitem(mil_ops.KERNELS, "sigmoid")
    with pytest.raises(UnsupportedOpError, match="sigmoid"):
        MILExecutor(fp32["sa_resnet_cifar", "fold"])


@pytest.mark.parametrize("name", MODELS)
def test_fp16_on_validation_images(models, val, tmp_path, name):
    result = export_coreml(models[name], tmp_path, "fp16", "fold", parity_inputs=[val[:8]])
    assert all(s.passed for s in result.parity), result.parity
    with CoreMLRunner(result.export.path) as runner:
        s = compare(runner.infer(val), torch_logits(models[name], val), "fp16")
    assert s.cosine >= 0.999 and s.top1_agreement == 1.0, s


def test_int8_weights_and_palettize(models, val, tmp_path):
    model = models["sa_mobilenetv2_cifar"]
    ref = torch_logits(model, val)
    for precision, min_cos in (("int8-weights", 0.995), ("palettize", 0.9)):
        result = export_coreml(model, tmp_path, precision, "fold", parity=False)
        ops = result.export.op_histogram
        assert ("constexpr_affine_dequantize" in ops) if precision == "int8-weights" \
            else ("constexpr_lut_to_dense" in ops)
        with CoreMLRunner(result.export.path) as runner:
            s = compare(runner.infer(val), ref, "int8")
        assert s.cosine >= min_cos, (precision, s)


def test_image_input_classifier(models, val, tmp_path):
    """ImageType (scale 1/255, bias -mean, 1/std folded into the first conv) + ClassifierConfig: exact."""
    model = models["sa_resnet_cifar"]
    result = export_coreml(model, tmp_path, "fp32", "fold", image_input=True, classifier=True, parity_inputs=[val[:4]])
    s = result.parity[0]
    assert s.max_abs <= 1e-3 and s.cosine >= 0.9999 and s.passed, s
    spec = result.export.path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    assert spec.is_file() and result.export.op_histogram.get("classify") == 1


def test_user_errors(models, tmp_path):
    model = models["sa_resnet_cifar"]
    with pytest.raises(SADeployError, match="w8a8 needs calibration"):
        export_coreml(model, tmp_path, "w8a8")
    with pytest.raises(SADeployError, match="unknown CoreML precision"):
        export_coreml(model, tmp_path, "int4")
    with pytest.raises(SADeployError, match="supports lowering fold"):
        export_coreml(model, tmp_path, "w8a8", "reshape-transpose", calib=[np.zeros((1, 3, 32, 32), np.float32)])


@pytest.mark.slow
def test_w8a8_calibrated_on_images(models, val, labeled_data, tmp_path):
    model = models["sa_mobilenetv2_cifar"]
    calib = labeled_data.calib.open(model.preprocess, num=64)
    result = export_coreml(model, tmp_path, "w8a8", "fold", calib=calib, parity_inputs=[val[:8]])
    ops = result.export.op_histogram
    assert ops.get("quantize", 0) > 0 and ops.get("dequantize", 0) > 0, ops
    assert read_coreml_metadata(result.export.path)["deployment_target"] == "iOS17"
    with CoreMLRunner(result.export.path) as runner:
        s = compare(runner.infer(val), torch_logits(model, val), "int8")
    assert s.cosine >= 0.95, s


TRAINED_SMALL = [name for name in ("sa_resnet_cifar", "se_resnet_cifar", "cbam_resnet_cifar", "eca_resnet_cifar",
                                   "gc_resnet_cifar") if get_spec(name).pretrained_file]


@pytest.mark.parametrize("name", TRAINED_SMALL)
def test_w8a8_calibration_keeps_trained_accuracy(name):
    """The calibrated int8 model that CoreML's W8A8 converts, on real images with the embedded trained weights. Found
    this way: CBAM's deploy form with a Concat[mean; max] before its spatial conv gave both maps one int8 scale,
    and top-1 fell from 89% to 70% (cosine 0.85); the form now convolves each map on its own."""
    model = create_model(name, pretrained=True).eval()
    calib_images, _, _, _ = load_split("calib")
    val_images, val_labels, _, _ = load_split("val")
    calib = [normalize(calib_images[i:i + 64], model.preprocess) for i in range(0, 256, 64)]
    x = torch.from_numpy(normalize(val_images[:300], model.preprocess))
    y = torch.from_numpy(val_labels[:300])
    lowered = lower_model(model, "fold", 32)
    quantized = calibrate_w8a8(lowered, calib, torch.zeros(1, 3, 32, 32))
    with torch.no_grad():
        ref, out = lowered(x), quantized(x)
    drop = 100 * ((ref.argmax(1) == y).float().mean() - (out.argmax(1) == y).float().mean()).item()
    cosine = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), 0).item()
    assert drop <= 2.0 and cosine >= 0.99, (drop, cosine)
