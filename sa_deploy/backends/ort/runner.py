"""onnxruntime runner (CPU execution provider unless told otherwise)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sa_deploy.backends.base import Runner
from sa_deploy.errors import SADeployError
from sa_deploy.util.int8_kernels import Int8Path, cpu_int8_path, emulated_path


def _from_onnxruntime(exc: BaseException) -> bool:
    """onnxruntime's own errors (Fail, InvalidGraph, InvalidArgument...): the file or the input, not our code."""
    return type(exc).__module__.startswith("onnxruntime")


def _line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:200]


class OnnxRuntimeRunner(Runner):
    """``qdq_emulation``: run a Q/DQ file's quantized nodes in float (``session.disable_quant_qdq``): the int32-
    accumulation numerics that TensorRT and VNNI CPUs compute, on any CPU, instead of this CPU's int8 kernels."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 optimization: str = "all", qdq_emulation: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.qdq_emulation = qdq_emulation
        if qdq_emulation:
            self.name = "onnxruntime (Q/DQ emulated)"
        self.threads = threads or os.cpu_count() or 1
        self.providers = providers or ["CPUExecutionProvider"]
        self.optimization = optimization
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[self.optimization]
        if self.qdq_emulation:
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        except Exception as exc:
            if not _from_onnxruntime(exc):
                raise
            raise SADeployError(f"onnxruntime cannot load {self.path.name}: {_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise SADeployError(f"{self.path.name} has {len(inputs)} inputs; sa-deploy feeds one image input")
        self.input_name = inputs[0].name

    def _deactivate(self) -> None:
        self.session = None

    def int8_path(self) -> Int8Path | None:
        if self.providers[0] != "CPUExecutionProvider":
            return None
        return emulated_path() if self.qdq_emulation else cpu_int8_path("onnxruntime")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except Exception as exc:
            if not _from_onnxruntime(exc):
                raise
            raise SADeployError(f"onnxruntime failed running {self.path.name} on inputs of shape {x.shape}: "
                                f"{_line(exc)}") from None
