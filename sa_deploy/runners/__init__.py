"""Backends behind one interface. To add one: a module with a Runner subclass, and a branch in open_runner."""
from __future__ import annotations

from pathlib import Path

from ..errors import SADeployError
from .base import Runner
from .onnxruntime_runner import OnnxRuntimeRunner
from .torch_runner import TorchRunner


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    """A runner for an artifact file, chosen by its format."""
    p = Path(path)
    if not p.exists():
        raise SADeployError(f"artifact not found: {p}")
    if p.suffix == ".onnx":
        return OnnxRuntimeRunner(p, threads)
    if p.suffix == ".mlpackage":
        from .coreml import CoreMLRunner  # optional backend

        return CoreMLRunner(p)
    if p.suffix in (".engine", ".plan"):
        from .tensorrt_runner import TensorRTRunner  # optional backend

        return TensorRTRunner(p)
    raise SADeployError(f"don't know how to run {p.name}: expected .onnx, .mlpackage or .engine")


__all__ = ["Runner", "TorchRunner", "OnnxRuntimeRunner", "open_runner"]
