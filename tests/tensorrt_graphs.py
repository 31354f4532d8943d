"""Test helpers: the ONNX graphs the TensorRT lint and builder are tested on, made the way our pipeline makes
them. Stand-ins for ``calibration.int8`` (tensorrt / cpu flavours) and ``exporters.fp16`` until those merge."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


class _RandomReader:
    """onnxruntime CalibrationDataReader over a few seeded random batches."""

    def __init__(self, input_size: int, batches: int = 4, batch: int = 2) -> None:
        self._it = iter([{"input": np.random.default_rng(i).standard_normal(
            (batch, 3, input_size, input_size)).astype(np.float32)} for i in range(batches)])

    def get_next(self) -> dict | None:
        return next(self._it, None)


def quantize_qdq(src: Path, dst: Path, flavour: str = "tensorrt", input_size: int = 32,
                 quantize_bias: bool = False, batches: int = 4) -> Path:
    """tensorrt: s8 activations + s8 per-channel weights, symmetric, biases left float (TensorRT quantizes them
    itself) and InstanceNormalization left float (the parser wants its scale/bias as initializers).
    cpu: u8 asymmetric activations, what onnxruntime CPU wants and TensorRT rejects (everything quantized)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs pre-processing advice at WARNING
    reader = type("Reader", (_RandomReader, CalibrationDataReader), {})(input_size, batches)
    trt = flavour == "tensorrt"
    norms = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "InstanceNormalization"] if trt else []
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, nodes_to_exclude=norms,
                    activation_type=QuantType.QInt8 if trt else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True,
                                                     "QuantizeBias": quantize_bias})
    return dst


def to_fp16(src: Path, dst: Path) -> Path:
    import warnings

    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "float32 number ... will be truncated" for tiny weights
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


def tiny_model(nodes: list, inputs: list, outputs: list, initializers: list | None = None,
               opset: int = 17, domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers or [])
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=ops)


def image_input(name: str = "input", dims: tuple = ("batch", 3, 8, 8)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def conv_weight(name: str = "w", out_ch: int = 4, in_ch: int = 3) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((out_ch, in_ch, 3, 3)).astype(
        np.float32), name)
