"""onnxruntime: runs every ONNX artifact (FP32, FP16, both INT8 flavours); a core dependency."""
from sa_deploy.util.optional import missing


def is_available() -> str | None:
    return missing("onnxruntime", "dev")
