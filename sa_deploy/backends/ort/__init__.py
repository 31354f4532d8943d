"""onnxruntime: runs every ONNX artifact (FP32, FP16, both INT8 flavours); a core dependency."""
from sa_deploy.backends.ort.manager import OnnxRuntimeManager
from sa_deploy.backends.registry import register_backend

MANAGER = register_backend(OnnxRuntimeManager())


def is_available() -> str | None:
    return MANAGER.is_available()
