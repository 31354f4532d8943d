"""OpenVINO CPU runner for an IR (.xml) or an ONNX file (OpenVINO reads ONNX directly: the benchmark times the same
files on onnxruntime and OpenVINO). The precision hint is always explicit; threads are pinned; batch is dynamic."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sa_deploy.backends.base import Runner
from sa_deploy.backends.openvino.device import check_hint, import_openvino, ov_error
from sa_deploy.backends.openvino.inspect import read_ir
from sa_deploy.errors import SADeployError
from sa_deploy.util.int8_kernels import Int8Path, onednn_int8_path

INT8_LAYERS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")


def _read_onnx(core, path: Path):
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        raise SADeployError(f"OpenVINO cannot read {path.name}: {ov_error(exc)}") from None


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, precision_hint: str = "f32") -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads or os.cpu_count() or 1
        self.precision_hint = precision_hint
        self.name = "openvino" if precision_hint == "f32" else f"openvino-{precision_hint}"
        self.compiled = None

    def _activate(self) -> None:
        ov = import_openvino("running an OpenVINO model")
        check_hint(self.precision_hint)
        core = ov.Core()
        model = read_ir(self.path) if self.path.suffix == ".xml" else _read_onnx(core, self.path)
        config = {"INFERENCE_PRECISION_HINT": self.precision_hint, "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self.request = None
        self.compiled = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()

    def int8_path(self) -> Int8Path | None:
        """From the compiled graph: the oneDNN kernels its int8 convolutions / matmuls run (``jit_avx2_I8``,
        ``brgconv_avx512_amx_I8``...); None when nothing runs in int8."""
        kinds = []
        for op in self.runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" not in info or info["layerType"].astype(str) not in INT8_LAYERS:
                continue
            primitive = info["primitiveType"].astype(str) if "primitiveType" in info else ""
            runtime_precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
            if "I8" in primitive or runtime_precision in ("u8", "i8"):
                kinds.append(primitive)
        return onednn_int8_path(self.name, kinds)

    def runtime_model(self):
        """The compiled graph as the plugin runs it (fused nodes, reorders, runtime precisions)."""
        if not self.active:
            raise RuntimeError("OpenVINORunner is not active: use `with runner:` first")
        return self.compiled.get_runtime_model()
