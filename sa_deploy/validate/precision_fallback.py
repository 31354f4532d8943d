"""FP16 and INT8 (Q/DQ) ONNX variants for the benchmark: the real converters when they are installed
(``sa_deploy.exporters.fp16``, ``sa_deploy.calibration.int8``), else a small stand-in with the same recipe.

This is the one place to switch to the real functions: ``to_fp16`` and ``to_int8`` return a note saying which
implementation produced the file, and the benchmark prints it next to the results."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

INT8_FLAVOURS = ("cpu", "tensorrt")


def _real(module: str, func: str) -> Callable | None:
    try:
        return getattr(importlib.import_module(module), func, None)
    except ImportError:
        return None


def to_fp16(src: str | Path, dst: str | Path) -> str:
    real = _real("sa_deploy.exporters.fp16", "convert_fp16")
    if real is not None:
        real(src, dst)
        return "sa_deploy.exporters.fp16.convert_fp16"
    from onnxconverter_common import float16

    # keep_io_types: the file still takes and returns float32, like every other variant
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return "fallback: onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)"


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of batches (it wants a stateful get_next)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{input_name: np.ascontiguousarray(b, np.float32)} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)


def to_int8(src: str | Path, dst: str | Path, flavour: str, calib: list[np.ndarray]) -> str:
    """Static Q/DQ INT8. ``cpu``: u8 activations + s8 per-channel weights (the fast flavour on onnxruntime CPU);
    ``tensorrt``: s8 symmetric activations and weights (what TensorRT consumes)."""
    if flavour not in INT8_FLAVOURS:
        raise ValueError(f"unknown INT8 flavour {flavour!r}; choose one of {INT8_FLAVOURS}")
    real = _real("sa_deploy.calibration.int8", "quantize_onnx")
    if real is not None:
        real(src, dst, calib, flavour=flavour)
        return f"sa_deploy.calibration.int8.quantize_onnx(flavour={flavour})"
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    symmetric = flavour == "tensorrt"
    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    quantize_static(str(src), str(dst), _Reader(name, calib), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return (f"fallback: onnxruntime.quantization.quantize_static(QDQ, MinMax, per-channel, "
            f"{'s8 symmetric activations' if symmetric else 'u8 activations'} + s8 weights)")
