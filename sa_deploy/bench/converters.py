"""FP16 and INT8 (Q/DQ) ONNX variants for the benchmark, made by the project's own converters
(``exporters.fp16.convert_fp16``, ``calibration.int8.quantize_int8``); the returned note names what made each file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

INT8_FLAVOURS = ("cpu", "tensorrt")


def to_fp16(src: str | Path, dst: str | Path) -> str:
    from sa_deploy.exporters.fp16 import convert_fp16

    convert_fp16(src, dst)
    return "sa_deploy.exporters.fp16.convert_fp16 (FP32 I/O)"


def to_int8(src: str | Path, dst: str | Path, flavour: str, calib: list[np.ndarray],
            keep_sa_gate_float: bool | None = None) -> str:
    """Static Q/DQ INT8, MinMax calibration. ``cpu``: u8 activations + s8 per-channel weights (the fast flavour on
    onnxruntime CPU); ``tensorrt``: s8 symmetric activations and weights (what TensorRT consumes).
    ``keep_sa_gate_float`` None: the flavour's default."""
    from sa_deploy.calibration.int8 import quantize_int8
    from sa_deploy.data.sources import ArraySource

    if flavour not in INT8_FLAVOURS:
        raise ValueError(f"unknown INT8 flavour {flavour!r}; choose one of {INT8_FLAVOURS}")
    r = quantize_int8(src, dst, ArraySource(calib), method="minmax", flavour=flavour,
                      keep_sa_gate_float=keep_sa_gate_float)
    return f"sa_deploy.calibration.int8.quantize_int8(minmax, flavour={flavour}, SA gate {r.sa_gate})"
