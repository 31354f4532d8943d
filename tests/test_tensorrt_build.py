"""The TensorRT builder's parts that run without TensorRT: typing plan, batch profile, sidecar, CLI errors."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from tensorrt_graphs import pipeline_graphs

from sa_deploy.backends import open_runner
from sa_deploy.backends.trt.build import FLAGS, STRONG, build_engine, plan_typing
from sa_deploy.backends.trt.runner import TensorRTRunner
from sa_deploy.backends.trt.sidecar import Profile, Sidecar, make_sidecar, read_sidecar, sidecar_path, write_engine
from sa_deploy.cli import main
from sa_deploy.errors import MissingDependencyError, SADeployError
from sa_deploy.util.hashing import bytes_sha256


@pytest.fixture(scope="module")
def onnx_files():
    g = pipeline_graphs()
    return {"fp32": g["resnet_fold"], "int8": g["resnet_qdq"], "cpu": g["resnet_qdq_cpu"]}


@pytest.mark.parametrize("major,precision,graph,strong,legacy,mode,flags", [
    (11, "int8", "int8", None, None, STRONG, ()),
    (11, "fp16", "fp16", None, None, STRONG, ()),
    (10, "int8", "int8", None, None, FLAGS, ("INT8", "FP16")),
    (10, "int8", "int8", True, None, STRONG, ()),
    (10, "fp16", "fp32", None, None, FLAGS, ("FP16",)),
    (10, "int8", "fp32", None, "entropy", FLAGS, ("INT8", "FP16")),
])
def test_typing_plan(major, precision, graph, strong, legacy, mode, flags):
    plan = plan_typing(major, precision, graph, strong, legacy)
    assert (plan.mode, plan.flags, plan.calibrator) == (mode, flags, legacy)


@pytest.mark.parametrize("major,precision,graph,strong,legacy,needle", [
    (11, "int8", "fp32", None, None, "needs Q/DQ"),          # TensorRT 11 cannot calibrate implicitly
    (11, "fp16", "fp32", None, None, "FP16 graph"),           # nor turn an fp32 graph into fp16 by a flag
    (11, "int8", "fp32", None, "minmax", "removed implicit INT8 calibration"),
    (10, "int8", "fp32", None, None, "--legacy-calibrator"),  # TensorRT 10: says both ways out
    (10, "fp16", "int8", None, None, "--precision int8"),
    (10, "int8", "int8", None, "entropy", "fp32 graph"),
    (10, "fp32", "fp32", None, None, "precision must be"),
])
def test_typing_plan_refuses(major, precision, graph, strong, legacy, needle):
    with pytest.raises(SADeployError, match=needle):
        plan_typing(major, precision, graph, strong, legacy)


def test_profile():
    p = Profile("input", (3, 224, 224), 1, 8, 32)
    assert p.shapes() == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert p.to_dict()["max"] == [32, 3, 224, 224]
    for bad in ((0, 1, 1), (4, 2, 8), (1, 16, 8)):
        with pytest.raises(SADeployError, match="min <= opt <= max"):
            Profile("input", (3, 8, 8), *bad)


def _sidecar(engine_bytes: bytes, version="10.3.0", cc="9.0", name="NVIDIA H100 80GB HBM3") -> Sidecar:
    return make_sidecar(deploy_config={"model": "sa_resnet50", "lowering": "fold"}, trt_version=version,
                        gpu={"index": 0, "name": name, "compute_capability": cc}, precision="int8",
                        typing=STRONG, profile=Profile("input", (3, 224, 224)), onnx_sha256="ab" * 32,
                        onnx_path="m.onnx", engine_sha256=bytes_sha256(engine_bytes), build_seconds=12.345)


def test_sidecar_roundtrip_and_checks(tmp_path):
    engine = tmp_path / "m.engine"
    assert write_engine(engine, b"serialized engine", _sidecar(b"serialized engine")).name == "m.engine.json"
    assert engine.read_bytes() == b"serialized engine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "m.engine", "m.engine.json"]
    side = read_sidecar(engine)
    assert side.deploy_config["model"] == "sa_resnet50" and side.profile["opt"] == [8, 3, 224, 224]
    assert side.build_seconds == 12.35 and side.built_at.endswith("+00:00") and side.batch_range == (1, 32)
    here = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    side.check(b"serialized engine", "10.3.0", here)  # matches: no error
    with pytest.raises(SADeployError, match="TensorRT 10.3.0, but TensorRT 10.8.0"):
        side.check(b"serialized engine", "10.8.0", here)
    with pytest.raises(SADeployError, match=r"compute capability 9.0\), but this GPU is NVIDIA L4 \(8.9\)"):
        side.check(b"serialized engine", "10.3.0", {"name": "NVIDIA L4", "compute_capability": "8.9"})
    with pytest.raises(SADeployError, match="does not match its sidecar"):
        side.check(b"another engine", "10.3.0", here)
    with pytest.warns(UserWarning, match="timed on NVIDIA H100 80GB HBM3"):
        side.check(b"serialized engine", "10.3.0", {"name": "NVIDIA H100 PCIe", "compute_capability": "9.0"})


def test_sidecar_missing_or_broken(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(SADeployError, match="m.engine.json not found"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(SADeployError, match="not readable JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"precision": "int8"}))
    with pytest.raises(SADeployError, match="lacks tensorrt_version"):
        read_sidecar(engine)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sa-deploy build: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_build_without_tensorrt(onnx_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError, installed or not
    out = tmp_path / "engines" / "r.engine"
    rc = main(["build", str(onnx_files["int8"]), "--precision", "int8", "--out", str(out)])
    assert rc != 0
    assert "pip install 'tensorrt>=10'" in _one_line_error(capsys)  # sa-deploy is not on PyPI: its extra would not do
    assert not out.exists() and not sidecar_path(out).exists()
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_cli_build_refuses_lint_errors(onnx_files, tmp_path, capsys):
    out = tmp_path / "r.engine"
    assert main(["build", str(onnx_files["cpu"]), "--precision", "int8", "--out", str(out)]) != 0
    err = _one_line_error(capsys)
    assert "fails the TensorRT lint" in err and "qdq-int8" in err and "--no-lint" in err
    assert not out.exists()


def test_build_without_gpu_is_one_line(onnx_files, tmp_path, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the no-GPU error cannot be shown here")
    fake = types.ModuleType("tensorrt")  # just enough API to get past the import check
    fake.Builder, fake.__version__ = object, "11.0.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    out = tmp_path / "r.engine"
    assert main(["build", str(onnx_files["int8"]), "--precision", "int8", "--out", str(out)]) != 0
    assert "needs a CUDA GPU" in _one_line_error(capsys)
    assert not out.exists()
    # the same fake TensorRT 11 refuses an fp32 graph for int8 before looking for a GPU
    with pytest.raises(SADeployError, match="needs Q/DQ"):
        build_engine(onnx_files["fp32"], out, "int8")


def test_placeholder_tensorrt_package_counts_as_missing(onnx_files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # PyPI stub: no API
    with pytest.raises(MissingDependencyError, match="pip install"):
        build_engine(onnx_files["int8"], tmp_path / "r.engine", "int8")


def test_build_option_errors(onnx_files, tmp_path):
    with pytest.raises(SADeployError, match="--opt-level must be 0..5"):
        build_engine(onnx_files["int8"], tmp_path / "e", "int8", opt_level=7)
    with pytest.raises(SADeployError, match="go together"):
        build_engine(onnx_files["fp32"], tmp_path / "e", "int8", calib=tmp_path)
    with pytest.raises(SADeployError, match="min <= opt <= max"):
        build_engine(onnx_files["int8"], tmp_path / "e", "int8", min_batch=4, opt_batch=2, max_batch=8)


def test_runner_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    runner = open_runner(engine)
    assert isinstance(runner, TensorRTRunner)
    with pytest.raises(MissingDependencyError, match="running a TensorRT engine needs 'tensorrt'"):
        runner.activate()


def test_engine_and_sidecar_are_written_together(tmp_path, monkeypatch):
    """A failure while writing leaves neither file; a user's file named like the engine is never replaced."""
    def disk_full(self):
        raise OSError("disk full")

    engine = tmp_path / "sub" / "m.engine"
    monkeypatch.setattr(Sidecar, "to_dict", disk_full)  # fails after the engine's temp file was written
    with pytest.raises(OSError, match="disk full"):
        write_engine(engine, b"serialized engine", _sidecar(b"serialized engine"))
    monkeypatch.undo()
    assert not (tmp_path / "sub").exists()  # no engine, no sidecar, not even the folder it created
    mine = tmp_path / "mine.engine"
    mine.write_bytes(b"the user's engine")
    with pytest.raises(SADeployError, match="not written by sa-deploy|sa-deploy did not write"):
        write_engine(mine, b"new", _sidecar(b"new"))
    assert mine.read_bytes() == b"the user's engine" and not sidecar_path(mine).exists()
