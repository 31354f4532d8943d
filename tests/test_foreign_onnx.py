"""Issue 16 (items 3-4): ONNX files sa-deploy did not write. A trained SA-ResNet exported with plain
``torch.onnx.export`` (producer "pytorch", no sa_deploy metadata) is quantized, converted to FP16, inspected, linted,
benchmarked and validated against itself as the FP32 reference (``validate --reference``), with the preprocessing
given as flags once and carried by the artifacts from then on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sa_deploy import api
from sa_deploy.cli import main
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import read_onnx_metadata
from sa_deploy.models import create_model
from sa_deploy.models.preprocessing import CIFAR10_MEAN, CIFAR10_STD
from sa_deploy.util.hashing import file_sha256

MEAN = [str(v) for v in CIFAR10_MEAN]
STD = [str(v) for v in CIFAR10_STD]
FLAGS = ["--input-size", "32", "--mean", *MEAN, "--std", *STD]


def _meta(path: Path) -> dict[str, str]:
    return read_onnx_metadata(onnx.load(str(path), load_external_data=False))


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and ": error: " in lines[0], err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("foreign")


@pytest.fixture(scope="module")
def foreign(work) -> Path:
    """The embedded trained SA-ResNet (CIFAR-10), exported the way a user would, without sa-deploy."""
    path = work / "foreign.onnx"
    model = create_model("sa_resnet_cifar", pretrained=True).eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["scores"],
                      dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}})
    m = onnx.load(str(path))
    assert m.producer_name == "pytorch" and not [p for p in m.metadata_props if p.key.startswith("sa_deploy.")]
    return path


@pytest.fixture(scope="module")
def int8(foreign) -> Path:
    rc = main(["quantize", str(foreign), "--calib", "embedded", "--num", "64", *FLAGS])
    assert rc == 0
    return foreign.with_name("foreign_int8_tensorrt_entropy.onnx")


@pytest.fixture(scope="module")
def fp16(foreign) -> Path:
    assert main(["fp16", str(foreign)]) == 0  # no flags: FP16 needs no preprocessing
    return foreign.with_name("foreign_fp16.onnx")


def test_quantize_foreign_onnx_with_flags(foreign, int8):
    meta = _meta(int8)
    assert json.loads(meta["preprocess"]) == {"input_size": 32, "resize": 32, "interpolation": "bilinear",
                                              "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
                                              "class_names": []}
    assert meta["precision"] == "int8" and meta["model"] == "foreign"
    assert meta["source_onnx_sha256"] == file_sha256(foreign)
    assert meta["calibration_count"] == "64"


def test_validate_with_onnx_reference(foreign, int8, fp16, work, capsys):
    """INT8 and FP16 vs the FP32 ONNX they came from, no PyTorch model and no flags: the preprocessing comes from
    the INT8 file (the only artifact that carries one)."""
    report_path = work / "validation.json"
    rc, out, err = _run(["validate", "--reference", str(foreign), "--data", "embedded", "--num", "300",
                         "--artifacts", str(int8), str(fp16), "--no-progress", "--json", str(report_path)], capsys)
    assert rc == 0, err
    report = json.loads(report_path.read_text())
    assert report["reference"]["name"] == "reference foreign.onnx (onnxruntime fp32)"
    assert "pytorch" not in out.lower()
    src = report["reference_source"]
    assert src["kind"] == "onnx" and src["sha256"] == file_sha256(foreign)
    assert src["preprocess_from"] == f"{int8.name} metadata" and src["preprocess"]["mean"] == list(CIFAR10_MEAN)
    rows = {r["name"]: r for r in report["results"]}
    q, h = rows[int8.name], rows[fp16.name]
    assert report["reference"]["num_images"] == 300 and report["reference"]["top1"] > 70  # a trained model
    assert q["precision"] == "int8" and abs(q["drop"]) <= 1.0 and q["passed"]
    assert q["parity"]["cosine"] > 0.99 and q["parity"]["top1_agreement"] > 0.95
    assert h["precision"] == "fp16" and abs(h["drop"]) <= 0.1 and h["parity"]["cosine"] > 0.9999
    print(f"INT8 drop vs the ONNX reference on 300 images: {q['drop']:+.2f} points (reference top-1 "
          f"{report['reference']['top1']:.2f}%, cosine {q['parity']['cosine']:.5f}); FP16 {h['drop']:+.2f}")


def test_validate_fp16_alone_needs_flags(foreign, fp16, capsys):
    """The FP16 file carries no preprocessing (none was given): validate asks for it, then takes it as flags."""
    argv = ["validate", "--reference", str(foreign), "--data", "embedded", "--num", "100", "--artifacts", str(fp16),
            "--no-progress"]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "foreign.onnx carries no sa-deploy preprocessing; pass --mean R G B --std R G B" in \
        _one_error_line(err)
    rc, out, err = _run(argv + ["--mean", *MEAN, "--std", *STD], capsys)
    assert rc == 0, err
    assert "preprocessing from flags" in out


def test_quantize_without_flags_is_one_line_error(foreign, work, capsys):
    d = work / "noflags"
    d.mkdir()
    src = Path(shutil.copy(foreign, d / "foreign.onnx"))
    rc, _, err = _run(["quantize", str(src), "--calib", "embedded", "--num", "16"], capsys)
    assert rc == 2
    assert _one_error_line(err) == (
        "sa-deploy quantize: error: foreign.onnx carries no sa-deploy preprocessing; pass --mean R G B --std R G B "
        "(and --input-size/--resize/--interpolation if not 32/32/bilinear)")
    assert sorted(p.name for p in d.iterdir()) == ["foreign.onnx"]  # nothing written
    rc, _, err = _run(["quantize", str(src), "--calib", "embedded", "--num", "16", "--mean", *MEAN], capsys)
    assert rc == 2 and "pass --std R G B (" in _one_error_line(err)


def test_flags_override_sa_deploy_metadata(work, capsys):
    """On an sa-deploy export each flag replaces that field; the rest stays the metadata's."""
    from sa_deploy.exporters.onnx import export_onnx

    path = work / "ours.onnx"
    export_onnx(create_model("sa_resnet_cifar"), path, "fold", simplify=False)
    base = json.loads(_meta(path)["preprocess"])
    rc, _, err = _run(["quantize", str(path), "--calib", "embedded", "--num", "16", "--method", "minmax",
                       "--mean", "0.5", "0.5", "0.5", "--out", str(work / "ours_int8.onnx")], capsys)
    assert rc == 0, err
    written = json.loads(_meta(work / "ours_int8.onnx")["preprocess"])
    assert written == {**base, "mean": [0.5, 0.5, 0.5]} and written["std"] == list(CIFAR10_STD)
    assert _meta(work / "ours_int8.onnx")["model"] == "sa_resnet_cifar"
    rc, _, err = _run(["fp16", str(path), "--interpolation", "nearest", "--out", str(work / "ours_fp16.onnx")],
                      capsys)
    assert rc == 0, err
    assert json.loads(_meta(work / "ours_fp16.onnx")["preprocess"]) == {**base, "interpolation": "nearest"}
    rc, out, _ = _run(["inspect", str(path), "--json", "--std", "1", "1", "1"], capsys)
    info = json.loads(out)
    assert rc == 0 and info["preprocess"]["origin"] == "metadata + flags (std)"
    assert info["preprocess"]["config"] == {**base, "std": [1.0, 1.0, 1.0]}


def _graph(inputs: list, nodes: list, inits: list = ()) -> onnx.ModelProto:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [y], list(inits)),
                             opset_imports=[helper.make_opsetid("", 17)])


def _conv_model(dims: list) -> onnx.ModelProto:
    """(N, C, H, W) -> Conv(10 filters, kernel covering a 32x32 image) -> Flatten -> (N, 10)."""
    w = numpy_helper.from_array(np.random.RandomState(0).randn(10, dims[1], 32, 32).astype(np.float32) * 0.01, "w")
    return _graph([helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                  [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["y"])], [w])


NOT_IMAGES = {
    "rank-2": (_graph([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                      [helper.make_node("Identity", ["x"], ["y"])]), "has shape ['N', 10], expected (N, 3, H, W)"),
    "two-inputs": (_graph([helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 10]) for n in ("a", "b")],
                          [helper.make_node("Add", ["a", "b"], ["y"])]), "has 2 inputs (a, b)"),
    "int-input": (_graph([helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 10])],
                         [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]),
                  "input 'x' is a int64 tensor, expected a float32 tensor"),
    "1-channel": (_conv_model(["N", 1, 32, 32]), "has shape ['N', 1, 32, 32], expected (N, 3, H, W)"),
}


@pytest.mark.parametrize("kind", NOT_IMAGES)
def test_not_an_image_model_is_one_line_error(kind, tmp_path, capsys):
    model, message = NOT_IMAGES[kind]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for argv in (["quantize", str(path), "--calib", "embedded", "--num", "8", *FLAGS],
                 ["fp16", str(path)],
                 ["validate", "--reference", str(path), "--data", "embedded", "--artifacts", str(path), *FLAGS]):
        rc, _, err = _run(argv, capsys)
        assert rc == 2 and message in _one_error_line(err), (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_inspect_and_lint_foreign(foreign, capsys):
    rc, out, err = _run(["inspect", str(foreign), "--json"], capsys)
    info = json.loads(out)
    assert rc == 0 and info["metadata"] == {} and info["sa_layers"] == 9
    assert info["preprocess"]["config"] is None and "--mean R G B --std R G B" in info["preprocess"]["note"]
    rc, out, _ = _run(["inspect", str(foreign), "--json", "--mean", *MEAN, "--std", *STD], capsys)
    resolved = json.loads(out)["preprocess"]
    assert rc == 0 and resolved["origin"] == "flags" and resolved["config"]["input_size"] == 32  # the graph's H/W
    rc, out, _ = _run(["inspect", str(foreign)], capsys)
    assert rc == 0 and "preprocessing: none in the file" in out
    rc, out, err = _run(["lint", "--target", "tensorrt", str(foreign)], capsys)
    assert rc == 0 and "passed" in out, out + err


def test_bench_foreign_and_dynamic_size(foreign, int8, tmp_path, capsys):
    out_dir = tmp_path / "bench"
    rc, _, err = _run(["bench", str(foreign), str(int8), "--rounds", "1", "--iters", "1", "--batch", "1",
                       "--runtimes", "onnxruntime", "--out", str(out_dir)], capsys)
    assert rc == 0, err
    rows = json.loads((out_dir / "results.json").read_text())["rows"]
    assert {(r["group"], r["variant"]) for r in rows} == {("foreign", "foreign"),
                                                          ("foreign", "foreign_int8_tensorrt_entropy")}
    dyn = tmp_path / "dynamic.onnx"  # dynamic H/W and no metadata: the size must be given
    onnx.save(_conv_model(["N", 3, "H", "W"]), str(dyn))
    base = ["bench", str(dyn), "--rounds", "1", "--iters", "1", "--batch", "1", "--runtimes", "onnxruntime",
            "--out", str(tmp_path / "bench2")]
    rc, _, err = _run(base, capsys)
    assert rc == 2 and "pass --input-size S" in _one_error_line(err)
    rc, _, err = _run(base + ["--input-size", "32"], capsys)
    assert rc == 0, err
    rc, _, err = _run(["quantize", str(dyn), "--calib", "embedded", "--mean", *MEAN, "--std", *STD], capsys)
    assert rc == 2 and "pass --input-size S (and --resize/--interpolation if not S/bilinear)" in _one_error_line(err)


def test_validate_reference_conflicts(foreign, int8, capsys):
    base = ["--data", "embedded", "--artifacts", str(int8)]
    rc, _, err = _run(["validate", "--model", "sa_resnet_cifar", "--reference", str(foreign), *base], capsys)
    assert rc == 2 and _one_error_line(err).endswith("pass --model NAME or --reference FP32.onnx, not both")
    rc, _, err = _run(["validate", *base], capsys)
    assert rc == 2 and _one_error_line(err).endswith("pass --model NAME or --reference FP32.onnx")
    rc, _, err = _run(["validate", "--reference", str(int8), *base], capsys)
    assert rc == 2 and "is int8; pass the FP32 ONNX" in _one_error_line(err)


def test_api_overrides_and_fallback_with_onnx_reference(foreign, int8, work):
    cfg = api.deploy_preprocess(foreign, {"mean": CIFAR10_MEAN, "std": CIFAR10_STD})
    assert (cfg.input_size, cfg.resize, cfg.mean) == (32, 32, CIFAR10_MEAN)
    assert api.deploy_preprocess(foreign, required=False) is None
    with pytest.raises(SADeployError, match="unknown preprocessing field 'crop'"):
        api.deploy_preprocess(foreign, {"crop": 32})
    # auto-fallback's re-quantization, with the FP32 ONNX as the reference (one round: the budget holds)
    with pytest.warns(UserWarning, match="calibration data differs"):  # 32 images here, 64 for the INT8 file
        res = api.int8_fallback(foreign, foreign, int8, "embedded", "embedded", max_drop=100.0, num=100,
                                calib_num=32, out=work / "fallback.onnx", max_rounds=0)
    assert res.passed and len(res.rounds) == 1 and np.isfinite(res.rounds[0].drop)
    assert _meta(work / "fallback.onnx")["preprocess"] == _meta(int8)["preprocess"]


def test_convert_foreign_onnx_to_openvino(foreign, work, capsys):
    pytest.importorskip("openvino", reason="openvino extra not installed")
    from sa_deploy.backends.openvino.inspect import read_ir_metadata

    bare, flagged = work / "bare.xml", work / "flagged.xml"
    rc, out, err = _run(["convert", str(foreign), "--to", "openvino", "--out", str(bare)], capsys)
    assert rc == 0 and "pass" in out, err  # parity at the graph's fixed 32x32, no flags needed
    assert "preprocess" not in read_ir_metadata(bare)
    rc, out, err = _run(["convert", str(foreign), "--to", "openvino", "--out", str(flagged), *FLAGS], capsys)
    assert rc == 0, err
    meta = read_ir_metadata(flagged)
    assert json.loads(meta["preprocess"])["mean"] == list(CIFAR10_MEAN) and meta["model"] == "foreign"
