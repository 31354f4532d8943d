"""TensorRT: the offline lint (no TensorRT needed), engine build from the FP16 / Q/DQ ONNX, the build->run sidecar
and the engine runner."""
from sa_deploy.backends.registry import register_backend
from sa_deploy.backends.trt.manager import TensorRTManager

MANAGER = register_backend(TensorRTManager())


def is_available() -> str | None:
    return MANAGER.is_available()
