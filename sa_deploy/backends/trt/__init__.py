"""TensorRT: the offline lint (no TensorRT needed), engine build from the FP16 / Q/DQ ONNX, the build->run sidecar
and the engine runner."""
from sa_deploy.errors import SADeployError


def is_available() -> str | None:
    from sa_deploy.backends.trt.env import cuda_gpu, import_tensorrt

    try:
        import_tensorrt()
        cuda_gpu()
    except SADeployError as exc:
        return str(exc)
    return None
