"""Real TensorRT builds of SA-ResNet-50 (FP16 and INT8 Q/DQ) with parity against onnxruntime.

Needs the ``tensorrt`` package (>= 10) and a CUDA GPU; skipped otherwise (with the reason). Not executed in the
workplace where this was written: TensorRT cannot be installed there and no GPU is attached."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'sa-deploy[tensorrt]')"
    import tensorrt

    if not hasattr(tensorrt, "Builder"):
        return "the installed tensorrt package is PyPI's placeholder, not TensorRT"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


REASON = _skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

BATCHES = (1, 5)  # inside the profile below, one of them not the opt batch


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """SA-ResNet-50 (fold lowering, random weights and BN statistics) exported once, as FP16 and INT8 Q/DQ
    graphs, each built into an engine with profile 1/4/8."""
    from helpers import randomize
    from tensorrt_graphs import quantize_project, to_fp16

    from sa_deploy.api import build_engine
    from sa_deploy.exporters.onnx import export_onnx
    from sa_deploy.models import create_model

    d = tmp_path_factory.mktemp("trt_engines")
    fp32 = export_onnx(randomize(create_model("sa_resnet50"), seed=7), d / "r50.onnx", "fold").path
    graphs = {"fp16": to_fp16(fp32, d / "r50_fp16.onnx"),
              "int8": quantize_project(fp32, d / "r50_int8.onnx", "tensorrt", input_size=224, batches=8)}
    cache = d / "timing.cache"
    built = {p: build_engine(graphs[p], d / f"r50_{p}.engine", p, 1, 4, 8, workspace_mb=2048, timing_cache=cache,
                             opt_level=3) for p in ("fp16", "int8")}
    return {"fp32": fp32, "graphs": graphs, "built": built, "cache": cache}


def _inputs():
    return [np.random.default_rng(50 + b).standard_normal((b, 3, 224, 224)).astype(np.float32) for b in BATCHES]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_parity_vs_onnxruntime(engines, precision):
    """FP16 engine vs onnxruntime on the fp32 graph; INT8 engine vs onnxruntime on the same Q/DQ graph (what
    TensorRT was asked to compute); tolerances from validate.parity."""
    from sa_deploy.backends import OnnxRuntimeRunner, open_runner
    from sa_deploy.validate.parity import check_parity

    reference = engines["fp32"] if precision == "fp16" else engines["graphs"]["int8"]
    with open_runner(engines["built"][precision].path) as trt_runner, OnnxRuntimeRunner(reference) as ort_runner:
        stats = check_parity(trt_runner, ort_runner, _inputs(), precision)
    for s in stats:
        assert s.passed, s


def test_sidecar_and_timing_cache(engines):
    build = engines["built"]["int8"]
    side = json.loads(build.sidecar_path.read_text())
    import tensorrt

    assert side["tensorrt_version"] == tensorrt.__version__ and side["precision"] == "int8"
    assert side["profile"] == {"input": "input", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                               "max": [8, 3, 224, 224]}
    assert side["deploy_config"]["model"] == "sa_resnet50" and side["gpu"]["compute_capability"]
    assert engines["cache"].stat().st_size > 0
    assert build.lint is not None and build.lint.passed


def test_runner_refuses_batch_outside_profile_and_stale_sidecar(engines, tmp_path):
    import shutil

    from sa_deploy.backends.trt.runner import TensorRTRunner
    from sa_deploy.backends.trt.sidecar import sidecar_path
    from sa_deploy.errors import SADeployError

    src = engines["built"]["fp16"].path
    with TensorRTRunner(src) as runner:
        with pytest.raises(SADeployError, match="outside the engine's profile"):
            runner.infer(np.zeros((9, 3, 224, 224), np.float32))
        assert len(runner.latency_ms(np.zeros((1, 3, 224, 224), np.float32), warmup=1, iters=3)) == 3
    copy = tmp_path / "copy.engine"
    shutil.copy(src, copy)
    side = json.loads(sidecar_path(src).read_text())
    side["tensorrt_version"] = "0.0.0"
    sidecar_path(copy).write_text(json.dumps(side))
    with pytest.raises(SADeployError, match="TensorRT 0.0.0"):
        TensorRTRunner(copy).activate()
