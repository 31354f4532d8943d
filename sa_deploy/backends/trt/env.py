"""Where TensorRT code starts: a lazy ``import tensorrt`` with the install hint, and the CUDA GPU it will use.

Kept apart so that the builder, the runner and the calibrator fail the same way, and so that nothing imports
tensorrt at module import time (sa-deploy must work without it)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from sa_deploy.errors import MissingDependencyError, SADeployError
from sa_deploy.util.optional import require

MIN_MAJOR = 10  # the builder uses the TensorRT 10 API (named I/O tensors, execute_async_v3)


def import_tensorrt(purpose: str = "building a TensorRT engine") -> ModuleType:
    trt = require("tensorrt", "tensorrt", purpose)
    if not hasattr(trt, "Builder"):  # PyPI's placeholder package imports but has no API
        raise MissingDependencyError("tensorrt", "tensorrt", purpose)
    if trt_major(trt.__version__) < MIN_MAJOR:
        raise SADeployError(f"TensorRT {trt.__version__} is too old: sa-deploy needs TensorRT >= {MIN_MAJOR}")
    return trt


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "9.0"

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "compute_capability": self.compute_capability}


def cuda_gpu(index: int = 0) -> GpuInfo:
    """The CUDA GPU TensorRT will run on (through torch, which also gives us device buffers and streams)."""
    import torch

    if not torch.cuda.is_available():
        raise SADeployError("TensorRT needs a CUDA GPU, and none is visible to torch on this machine "
                            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
    major, minor = torch.cuda.get_device_capability(index)
    return GpuInfo(index, torch.cuda.get_device_name(index), f"{major}.{minor}")
