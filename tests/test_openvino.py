"""OpenVINO backend: IR per precision from the project's ONNX files (FP32, FP16 weights, INT8 from the Q/DQ file),
parity at each precision's tolerance, the deploy config in rt_info, the bf16 hint, inspect, and clear errors."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import torch_logits

from sa_deploy import api
from sa_deploy.backends import open_runner
from sa_deploy.calibration.int8 import quantize_int8
from sa_deploy.cli import main
from sa_deploy.data.sources import ArraySource
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.onnx import random_inputs
from sa_deploy.models import create_model
from sa_deploy.validate.parity import compare

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def model():
    return create_model("sa_resnet_cifar", pretrained=True)


@pytest.fixture(scope="module")
def onnx_files(exported_cifar, tmp_path_factory):
    work = tmp_path_factory.mktemp("openvino")
    fp32 = Path(shutil.copy(exported_cifar["fold"], work))  # a copy of the session's export: IRs are written beside it
    calib = ArraySource([random_inputs(32, 16, seed=s) for s in range(4)])
    int8 = quantize_int8(fp32, work / "m_int8_cpu.onnx", calib, "minmax", "cpu").path
    return {"fp32": fp32, "int8": int8, "work": work}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_ir_per_precision_loads_and_passes_parity(onnx_files, model, precision):
    source = onnx_files["int8" if precision == "int8" else "fp32"]
    res = api.export_openvino(source, fp16_weights=precision == "fp16")
    exp = res.export
    assert exp.precision == precision and exp.path.suffix == ".xml" and exp.path.with_suffix(".bin").is_file()
    # parity vs the ONNX it came from (onnxruntime), batch 1 and 3 through the dynamic-batch IR
    assert [s.batch for s in res.parity] == [1, 3] and all(s.passed for s in res.parity), res.parity
    if precision == "fp32":
        assert max(s.max_abs for s in res.parity) < 1e-4
    # and vs PyTorch, at the precision's tolerance class
    x = random_inputs(32, 4, seed=9)
    with open_runner(exp.path) as runner:  # the registry picks OpenVINO by the .xml suffix
        assert runner.name == "openvino"
        stats = compare(runner.infer(x), torch_logits(model, x), precision)
    assert stats.passed, stats
    # the deploy config travels in rt_info
    from sa_deploy.backends.openvino.inspect import inspect_ir

    info = inspect_ir(exp.path)
    assert info.metadata["model"] == "sa_resnet_cifar" and info.metadata["precision"] == precision
    assert info.metadata["format"] == "openvino" and len(info.metadata["source_onnx_sha256"]) == 64
    assert info.inputs[0]["shape"] == "[?,3,32,32]"  # dynamic batch
    if precision == "fp16":
        assert "f16" in info.weight_precisions and "f32" not in info.weight_precisions
    if precision == "int8":
        assert info.weight_precisions.get("i8", 0) >= 31  # one int8 weight per conv


def test_bf16_hint(onnx_files, model):
    from sa_deploy.backends.openvino.device import cpu_has_bf16
    from sa_deploy.backends.openvino.runner import OpenVINORunner

    ir = api.export_openvino(onnx_files["fp32"], parity=False).export.path
    if not cpu_has_bf16():
        with pytest.raises(SADeployError, match="no bf16 support"):
            OpenVINORunner(ir, precision_hint="bf16").activate()
        pytest.skip("this CPU has no bf16: the bf16 hint is refused (checked above)")
    x = random_inputs(32, 8, seed=3)
    with OpenVINORunner(ir, precision_hint="bf16") as runner:
        assert runner.name == "openvino-bf16"
        assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
        stats = compare(runner.infer(x), torch_logits(model, x), "bf16")
    assert stats.passed and stats.cosine < 1.0 - 1e-9, stats  # really ran in bf16, within bf16's tolerance


def test_convert_cli_inspect_and_errors(onnx_files, tmp_path, capsys):
    out = tmp_path / "m.xml"
    assert main(["convert", str(onnx_files["fp32"]), "--to", "openvino", "--out", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "OpenVINO IR" in shown and "precision fp32" in shown and "[?,3,32,32]" in shown
    cases = [(["convert", str(onnx_files["int8"]), "--fp16-weights"], "drop --fp16-weights"),
             (["convert", str(onnx_files["fp32"]), "--out", str(tmp_path / "m.onnx")], "written as NAME.xml"),
             (["inspect", str(tmp_path / "nothing.xml")], "OpenVINO IR not found")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err


def test_without_openvino_stages_skip_and_runs_say_why(onnx_files, tmp_path, monkeypatch, capsys):
    from sa_deploy.models import create_model
    from sa_deploy.pipeline import Stages, _build_artifacts
    from sa_deploy.plan import RunPlan

    ir = api.export_openvino(onnx_files["fp32"], parity=False).export.path
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    stages = Stages(log=lambda _: None)
    artifacts: list = []
    plan = RunPlan(lowerings=["fold"], fp16=False, int8_flavours=[], coreml=False, tensorrt=False,
                   out=str(tmp_path / "run"))
    _build_artifacts(plan, create_model("sa_resnet_cifar", pretrained=True), None, tmp_path / "run", stages,
                     artifacts)
    assert [a.name for a in artifacts] == ["onnx-fold-fp32"]  # the ONNX export is built, no OpenVINO row
    skipped = [r for r in stages.records if r["status"] == "skipped" and r["name"] == "OpenVINO IR"]
    assert len(skipped) == 1 and "pip install 'sa-deploy[openvino]'" in skipped[0]["reason"]
    with pytest.raises(SADeployError, match=r"cannot run .*openvino not installed"):
        open_runner(ir)
    assert main(["inspect", str(ir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs 'openvino'" in err and "\n" not in err


def test_same_logits_from_onnx_and_ir(onnx_files):
    """OpenVINO reads the ONNX file directly too (the benchmark uses that): same numbers as the IR."""
    from sa_deploy.backends.openvino.runner import OpenVINORunner

    ir = api.export_openvino(onnx_files["fp32"], parity=False).export.path
    x = random_inputs(32, 2, seed=4)
    with OpenVINORunner(ir) as a, OpenVINORunner(onnx_files["fp32"]) as b:
        np.testing.assert_allclose(a.infer(x), b.infer(x), atol=1e-5)
