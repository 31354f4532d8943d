"""Issue 27 item 4: one deploy-metadata type (models.deploy_metadata.DeployMetadata) read and written by one
reader/writer per container -- ONNX metadata_props, OpenVINO rt_info, CoreML user metadata, the TensorRT sidecar
(written here without TensorRT) -- the stored strings unchanged by a round trip, a damaged value one line naming the
file; and one preprocessing resolver (models.preprocess_resolver) behind the API's preprocessing functions."""
from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from sa_deploy import api
from sa_deploy.backends.trt.sidecar import Profile, make_sidecar, read_sidecar_metadata, sidecar_path, write_engine
from sa_deploy.cli import main
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import (
    onnx_metadata,
    read_deploy_metadata,
    read_onnx_metadata,
    set_onnx_metadata,
    write_onnx_metadata,
)
from sa_deploy.models import create_model
from sa_deploy.models.deploy_metadata import DeployMetadata
from sa_deploy.models.preprocess_resolver import agreeing, resolve, resolve_model
from sa_deploy.models.preprocessing import CIFAR10_32, IMAGENET_224
from sa_deploy.util.hashing import file_sha256

STRINGS = {  # every kind of key an sa-deploy file stores, in the form it stores them
    "model": "sa_resnet_cifar", "model_source": "registry sa_resnet_cifar", "lowering": "fold", "precision": "int8",
    "preprocess": CIFAR10_32.to_json(), "checkpoint_sha256": "ab" * 32, "weights_sha256": "cd" * 32,
    "source_onnx_sha256": "ef" * 32, "input_size": "32", "int8_flavour": "cpu", "int8_weight_bits": "7",
    "int16_overflow_safe": "true", "calibration_method": "entropy", "calibration_count": "500",
    "calibration_fingerprint": "0123abcd", "float_nodes": json.dumps(["/layer1/sa/Sigmoid", "/fc/Gemm"]),
    "sa_gate": "float", "sa_deploy_version": "0.1.0", "torch_version": "2.13.0", "onnx_version": "1.19.0",
    "opset": "17", "sa_layers": '[{"name":"layer1.0.sa","form":"fold"}]', "bench_variant": "int8-cpu",
    "format": "openvino", "openvino_version": "2026.4.1", "image_input": "False",
}


@pytest.fixture(scope="module")
def model():
    return create_model("sa_resnet_cifar", pretrained=True).eval()


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory) -> Path:
    """The FP32 export (read only here: tests that write copy it first)."""
    return api.export(model, tmp_path_factory.mktemp("deploy_metadata"), parity=False).export.path


def _with_meta(src: Path, dst: Path, **values: str) -> Path:
    """A copy of ``src`` with the given ``sa_deploy.*`` values set as stored strings (damaged ones included)."""
    m = onnx.load(str(src))
    set_onnx_metadata(m, {**read_onnx_metadata(m), **values})
    onnx.save(m, str(dst))
    return dst


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


# --- the type -------------------------------------------------------------------------------------------------------

def test_strings_round_trip_and_typed_fields():
    meta = DeployMetadata.from_strings(STRINGS, "m.onnx")
    assert meta.to_strings() == STRINGS  # what a container stores reads and writes back unchanged
    assert (meta.model, meta.precision, meta.preprocess, meta.input_size) == ("sa_resnet_cifar", "int8", CIFAR10_32,
                                                                              32)
    assert (meta.int8_flavour, meta.int8_weight_bits, meta.calibration_count) == ("cpu", 7, 500)
    assert meta.float_nodes == ("/layer1/sa/Sigmoid", "/fc/Gemm") and meta.sa_gate == "float"
    assert meta.versions == {"sa_deploy_version": "0.1.0", "torch_version": "2.13.0", "onnx_version": "1.19.0",
                             "openvino_version": "2026.4.1"}
    assert meta.extra == {"int16_overflow_safe": "true", "opset": "17", "bench_variant": "int8-cpu",
                          "sa_layers": STRINGS["sa_layers"], "image_input": "False"}
    assert meta.get("opset") == "17" and "bench_variant" in meta and meta
    assert not DeployMetadata.from_strings({}) and DeployMetadata().to_strings() == {}
    changed = meta.with_strings({"precision": "fp16", "preprocess": IMAGENET_224, "note": 3})
    assert (changed.precision, changed.preprocess, changed.extra["note"]) == ("fp16", IMAGENET_224, "3")
    assert meta.replace(sa_gate="int8").to_strings() == {**STRINGS, "sa_gate": "int8"}


@pytest.mark.parametrize("key, value, reason", [
    ("preprocess", "{input_size: 32", "Expecting property name"),
    ("preprocess", json.dumps({**CIFAR10_32.to_dict(), "std": [0.0, 1.0, 1.0]}), "'std' must be 3 finite positive"),
    ("int8_weight_bits", "eight", "is not an integer"),
    ("input_size", "3.5", "is not an integer"),
    ("calibration_count", "", "is not an integer"),
    ("float_nodes", "[1, 2]", "a JSON list of node names"),
    ("float_nodes", "{", "Expecting property name"),
])
def test_a_damaged_value_is_one_line_naming_the_file_and_key(key, value, reason):
    with pytest.raises(SADeployError) as exc:
        DeployMetadata.from_strings({**STRINGS, key: value}, "my_model.onnx")
    _one_line(exc, "my_model.onnx", f"sa_deploy.{key}", reason)


# --- one reader/writer per container --------------------------------------------------------------------------------

def test_onnx_round_trip(fp32, tmp_path):
    raw = read_onnx_metadata(onnx.load(str(fp32)))
    meta = read_deploy_metadata(fp32)
    assert meta.to_strings() == raw  # byte-compatible: the stored strings, unchanged
    assert (meta.model, meta.lowering, meta.precision, meta.preprocess) == ("sa_resnet_cifar", "fold", "fp32",
                                                                            CIFAR10_32)
    assert meta.checkpoint_sha256 and len(meta.checkpoint_sha256) == 64 and meta.input_size == 32
    assert set(meta.versions) == {"sa_deploy_version", "torch_version", "onnx_version"}
    assert {"opset", "sa_layers"} <= set(meta.extra)

    m = onnx.load(str(fp32))
    m.metadata_props.add(key="author", value="someone")  # not ours: kept by the writer
    write_onnx_metadata(m, meta.with_strings({"sa_gate": "float", "bench_note": "a note"}))
    onnx.save(m, str(tmp_path / "copy.onnx"))
    back = read_deploy_metadata(tmp_path / "copy.onnx")
    assert back == meta.replace(sa_gate="float", extra={**meta.extra, "bench_note": "a note"})
    assert {p.key: p.value for p in onnx.load(str(tmp_path / "copy.onnx")).metadata_props}["author"] == "someone"
    assert onnx_metadata(onnx.load(str(fp32)), fp32.name) == meta


def test_a_converted_onnx_carries_the_source_metadata(fp32, tmp_path):
    src = Path(shutil.copy(fp32, tmp_path / "m.onnx"))
    half = read_deploy_metadata(api.fp16(src))
    source = read_deploy_metadata(src)
    assert half.precision == "fp16" and half.source_onnx_sha256 == file_sha256(src)
    assert half.replace(precision="fp32", source_onnx_sha256=None,
                        extra={k: v for k, v in half.extra.items() if k != "fp16_fp32_ops"}) == source


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_ir_round_trip(fp32, tmp_path):
    from sa_deploy.backends.openvino.export import convert_onnx
    from sa_deploy.backends.openvino.inspect import read_ir_deploy_metadata, read_ir_metadata

    src = Path(shutil.copy(fp32, tmp_path / "m.onnx"))
    exp = convert_onnx(src, tmp_path / "m_fp16.xml", fp16_weights=True)
    meta = read_ir_deploy_metadata(exp.path)
    assert meta.to_strings() == read_ir_metadata(exp.path) == exp.metadata  # rt_info holds the same strings
    assert (meta.format, meta.precision, meta.source_onnx_sha256) == ("openvino", "fp16", file_sha256(src))
    assert "openvino_version" in meta.versions
    source = read_deploy_metadata(src)  # the ONNX metadata travels whole
    assert meta.replace(format=None, precision="fp32", source_onnx_sha256=None,
                        versions={k: v for k, v in meta.versions.items() if k != "openvino_version"}) == source


@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="coremltools not installed")
def test_coreml_mlpackage_round_trip(model, tmp_path):
    from sa_deploy.backends.coreml.export import read_coreml_metadata
    from sa_deploy.backends.coreml.mil_reader import read_mlpackage, read_mlpackage_metadata

    res = api.export_coreml(model, tmp_path, precision="fp16", parity=False)
    meta = read_mlpackage_metadata(res.export.path)
    assert meta.to_strings() == read_coreml_metadata(res.export.path) == res.export.metadata
    assert (meta.format, meta.precision, meta.preprocess, meta.input_size) == ("coreml", "fp16", CIFAR10_32, 32)
    assert meta.extra["image_input"] == "False" and "coremltools_version" in meta.versions
    user = read_mlpackage(res.export.path).metadata  # stored under the prefix, beside the author's own keys
    assert {k for k in user if k.startswith("sa_deploy.")} == {"sa_deploy." + k for k in meta.to_strings()}


def test_tensorrt_sidecar_round_trip_without_tensorrt(fp32, tmp_path):
    meta = read_deploy_metadata(fp32)
    engine = tmp_path / "m_fp16.engine"
    side = make_sidecar(deploy_config=meta, trt_version="10.9.0", gpu={"name": "GPU", "compute_capability": "8.9"},
                        precision="fp16", typing="builder-flags", profile=Profile("input", (3, 32, 32)),
                        onnx_sha256=file_sha256(fp32), onnx_path=str(fp32), engine_sha256="0" * 64,
                        build_seconds=1.0)
    write_engine(engine, b"not a real engine", side)
    assert json.loads(sidecar_path(engine).read_text())["deploy_config"] == meta.to_strings()  # stored as before
    assert read_sidecar_metadata(engine) == meta.replace(precision="fp16")  # the engine's precision

    data = json.loads(sidecar_path(engine).read_text())
    data["deploy_config"]["int8_weight_bits"] = "eight"
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(SADeployError) as exc:
        read_sidecar_metadata(engine)
    _one_line(exc, "m_fp16.engine.json", "sa_deploy.int8_weight_bits")


@pytest.mark.parametrize("key, value", [("preprocess", "{"), ("int8_weight_bits", "eight"), ("float_nodes", "x")])
def test_a_damaged_onnx_value_is_one_line_naming_the_file(fp32, tmp_path, capsys, key, value):
    bad = _with_meta(fp32, tmp_path / "damaged.onnx", **{key: value})
    with pytest.raises(SADeployError) as exc:
        read_deploy_metadata(bad)
    _one_line(exc, "damaged.onnx", f"sa_deploy.{key}")
    capsys.readouterr()
    assert main(["fp16", str(bad)]) != 0  # the CLI: one error line, no traceback
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "damaged.onnx" in err[0] and f"sa_deploy.{key}" in err[0], err


# --- one preprocessing resolver -------------------------------------------------------------------------------------

def test_the_resolver_decides_base_flags_and_origin():
    mean = (0.5, 0.5, 0.5)
    r = resolve(CIFAR10_32, "metadata", {"mean": mean}, "m.onnx", fixed=32)
    assert r.config == replace(CIFAR10_32, mean=mean)
    assert r.origin == "metadata + flags (mean)"
    assert resolve(CIFAR10_32, "metadata", None, "m.onnx").config is CIFAR10_32
    assert resolve(None, "metadata", None, "m.onnx", required=False).origin == "none"
    flags = resolve(None, "metadata", {"mean": mean, "std": mean}, "m.onnx", fixed=32)
    assert (flags.origin, flags.config.input_size, flags.config.resize) == ("flags", 32, 32)
    with pytest.raises(SADeployError, match="m.onnx carries no sa-deploy preprocessing; pass --mean R G B"):
        resolve(None, "metadata", {"std": mean}, "m.onnx", fixed=32)
    with pytest.raises(SADeployError, match="--input-size 64: m.onnx takes fixed 32x32 inputs"):
        resolve(CIFAR10_32, "metadata", {"input_size": 64}, "m.onnx", fixed=32)
    assert resolve(None, "metadata", None, "m.onnx", fallback=(CIFAR10_32, "a.onnx metadata")).origin == \
        "a.onnx metadata"
    assert resolve_model(CIFAR10_32).origin == "model"
    assert resolve_model(None, IMAGENET_224, {"std": mean}).origin == "given + flags (std)"
    assert resolve_model(None).config is None
    assert agreeing([(CIFAR10_32, "a.onnx"), (None, "b.onnx"), (CIFAR10_32, "c.onnx")]) == (CIFAR10_32,
                                                                                           "a.onnx metadata")
    assert agreeing([(CIFAR10_32, "a.onnx"), (IMAGENET_224, "b.onnx")]) is None


def test_the_api_preprocessing_functions_are_the_resolver(model, fp32, tmp_path):
    std = (0.25, 0.25, 0.25)
    assert api.preprocess_of(fp32, {"std": std}).origin == "metadata + flags (std)"
    assert api.deploy_preprocess(fp32) == CIFAR10_32
    ref = api.reference_for(model, {"std": std})
    assert (ref.preprocess.std, ref.preprocess_origin) == (std, "model + flags (std)")
    bare = tmp_path / "bare.onnx"  # no sa-deploy metadata: the artifacts made from it stand in
    m = onnx.load(str(fp32))
    del m.metadata_props[:]
    onnx.save(m, str(bare))
    carried = _with_meta(fp32, tmp_path / "bare_int8.onnx")
    resolved = api.preprocess_of(bare, derived=(carried,))
    assert (resolved.config, resolved.origin) == (CIFAR10_32, "bare_int8.onnx metadata")
    assert api.reference_for(bare, artifacts=(carried,)).preprocess_origin == "bare_int8.onnx metadata"
