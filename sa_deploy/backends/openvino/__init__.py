"""OpenVINO (CPU): ONNX -> IR (.xml + .bin) for FP32, FP16-compressed weights and INT8 from the Q/DQ ONNX; the runner
with an explicit precision hint (f32, or bf16 where the CPU has it); IR inspection."""
from sa_deploy.backends.openvino.manager import OpenVINOManager
from sa_deploy.backends.registry import register_backend

MANAGER = register_backend(OpenVINOManager())


def is_available() -> str | None:
    return MANAGER.is_available()
