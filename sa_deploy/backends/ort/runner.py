"""onnxruntime runner (CPU execution provider unless told otherwise)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sa_deploy.backends.base import Runner


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 optimization: str = "all") -> None:
        super().__init__()
        self.path = Path(path)
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
        self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
