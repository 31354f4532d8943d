"""Test helpers: the ONNX graphs the TensorRT lint and builder are tested on, made the way our pipeline makes
them: ``pipeline_graphs`` uses the project's own converters (``exporters.fp16``, ``calibration.int8``);
``quantize_qdq`` is a plain onnxruntime quantizer kept for deliberately wrong graphs (e.g. int32 biases)."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
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
    from sa_deploy.exporters.fp16 import convert_fp16

    return convert_fp16(src, dst)


def quantize_project(src: Path, dst: Path, flavour: str, input_size: int = 32, batches: int = 4) -> Path:
    """The project's INT8 quantizer (calibration.int8.quantize_int8, minmax) on seeded random batches."""
    from sa_deploy.calibration.int8 import quantize_int8
    from sa_deploy.data.sources import ArraySource

    data = [np.random.default_rng(i).standard_normal((2, 3, input_size, input_size)).astype(np.float32)
            for i in range(batches)]
    return quantize_int8(src, dst, ArraySource(data), method="minmax", flavour=flavour).path


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


@functools.lru_cache(maxsize=1)
def pipeline_graphs() -> dict[str, Path]:
    """Our exporters' graphs of the two 32x32 models, made once per test process and shared by the TensorRT test
    modules (exports dominate their run time): fp32 in each lowering, FP16, Q/DQ tensorrt flavour, and the cpu
    flavour that TensorRT must reject."""
    from helpers import randomize

    from sa_deploy.exporters.onnx import export_onnx
    from sa_deploy.models import create_model

    d = Path(tempfile.mkdtemp(prefix="sa_trt_graphs_"))
    atexit.register(shutil.rmtree, d, True)
    out: dict[str, Path] = {}
    for short, name, lowerings in (("resnet", "sa_resnet_cifar", ("fold", "reshape-transpose", "none")),
                                   ("mbv2", "sa_mobilenetv2_cifar", ("fold",))):
        model = randomize(create_model(name), seed=5)
        for lowering in lowerings:
            out[f"{short}_{lowering}"] = export_onnx(model, d / f"{short}_{lowering}.onnx", lowering).path
        fold = out[f"{short}_fold"]
        out[f"{short}_fp16"] = to_fp16(fold, d / f"{short}_fp16.onnx")
        out[f"{short}_qdq"] = quantize_project(fold, d / f"{short}_qdq.onnx", "tensorrt")
    out["resnet_qdq_cpu"] = quantize_project(out["resnet_fold"], d / "resnet_qdq_cpu.onnx", "cpu")
    return out
