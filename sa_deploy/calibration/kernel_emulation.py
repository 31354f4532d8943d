"""Numpy emulation of x86 int8 convolution kernels, both paths, on small Q/DQ graphs: ``int32`` (VNNI/AMX, TensorRT:
exact sums) and ``int16-pairs`` (AVX2 / AVX-512BW without VNNI: ``vpmaddubsw`` adds u8 x s8 products in pairs into
int16 with saturation, then widens). It lets any host show what the other kind of CPU computes (tests, docs).

Supported: QuantizeLinear, DequantizeLinear, Conv (group 1) and Gemm/MatMul whose data input and constant weight
come through DequantizeLinear (computed in integers), Relu, Add, Mul, Sigmoid, GlobalAveragePool, Flatten, Reshape,
Identity; a graph with anything else is refused (UnsupportedGraphError) rather than emulated approximately. Pairs
are adjacent input channels at one kernel tap (the NHWC packing of the CPU kernels); for a conclusion that holds for
any packing, give every output channel's weights one magnitude."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from sa_deploy.util.int8_kernels import INT16_PAIRS, INT32

ACCUMULATIONS = (INT32, INT16_PAIRS)
ELEMENTWISE = ("Relu", "Add", "Mul", "Sigmoid", "GlobalAveragePool", "Flatten", "Reshape", "Identity")


class UnsupportedGraphError(ValueError):
    """The graph holds a node outside the op set this emulator computes exactly (the module docstring)."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _per_axis(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    info = np.iinfo(zero_point.dtype)
    s, z = _per_axis(scale, axis, x.ndim), _per_axis(zero_point.astype(np.int64), axis, x.ndim)
    return np.clip(np.rint(x / s) + z, info.min, info.max).astype(zero_point.dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    s, z = _per_axis(scale, axis, q.ndim), _per_axis(zero_point.astype(np.int64), axis, q.ndim)
    return ((q.astype(np.int64) - z) * s).astype(np.float32)


def pair_sums(a: np.ndarray, w: np.ndarray, accumulation: str) -> np.ndarray:
    """sum_k a[..., k] * w[k, o] over the last axis of ``a`` (raw u8 / s8 values) -> int64 (..., O): exact for
    ``int32``; for ``int16-pairs`` each product pair (2j, 2j+1) is saturated to int16 before the sum."""
    a, w = a.astype(np.int64), w.astype(np.int64)
    if accumulation == INT32:
        return a @ w
    if accumulation != INT16_PAIRS:
        raise ValueError(f"unknown accumulation {accumulation!r}; one of {ACCUMULATIONS}")
    k = a.shape[-1]
    if k % 2:  # an odd tail pairs with a zero
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (1,), np.int64)], axis=-1)
        w = np.concatenate([w, np.zeros((1,) + w.shape[1:], np.int64)], axis=0)
    even = a[..., 0::2, None] * w[0::2] + a[..., 1::2, None] * w[1::2]  # (..., K/2, O)
    return np.clip(even, -32768, 32767).sum(axis=-2)


def _unsigned(q: np.ndarray, zero_point: np.ndarray) -> tuple[np.ndarray, int]:
    """Activations as the kernels see them: u8; s8 activations are shifted by 128 (and so is their zero point)."""
    if q.dtype == np.int8:
        return (q.astype(np.int16) + 128).astype(np.uint8), int(zero_point) + 128
    return q, int(zero_point)


def int8_conv(xq: np.ndarray, x_zp: np.ndarray, wq: np.ndarray, attrs: dict, accumulation: str) -> np.ndarray:
    """Integer Conv (NCHW u8/s8 input, OIHW int8 weights, group 1) -> int64 accumulators (N, O, OH, OW) with the
    activation zero point already taken out (sum((a - za) * w) = sum(a * w) - za * sum(w))."""
    if attrs.get("group", 1) != 1:
        raise UnsupportedGraphError("grouped int8 Conv: the emulator computes group 1 only")
    a, za = _unsigned(xq, x_zp)
    kh, kw = wq.shape[2:]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    a = np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=za)  # padding is real 0
    n, c, h, w = a.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    taps = [a[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    cols = np.stack(taps, axis=1).transpose(0, 3, 4, 1, 2).reshape(n, oh, ow, kh * kw * c)  # (tap, channel)
    wmat = wq.transpose(2, 3, 1, 0).reshape(kh * kw * c, -1)  # same (tap, channel) order: pairs share a tap
    acc = pair_sums(cols, wmat, accumulation) - za * wmat.astype(np.int64).sum(axis=0)
    return acc.transpose(0, 3, 1, 2)


class QdqEmulator:
    """Runs a small Q/DQ ONNX graph in numpy with the integer accumulation of one CPU kernel path."""

    def __init__(self, model: onnx.ModelProto, accumulation: str) -> None:
        if accumulation not in ACCUMULATIONS:
            raise ValueError(f"unknown accumulation {accumulation!r}; one of {ACCUMULATIONS}")
        self.model, self.accumulation = model, accumulation
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}

    def run(self, x: np.ndarray) -> np.ndarray:
        env: dict[str, np.ndarray] = dict(self.consts)
        env[self.model.graph.input[0].name] = x.astype(np.float32)
        self._env = env
        ops: dict[str, Callable] = {"QuantizeLinear": self._q, "DequantizeLinear": self._dq, "Conv": self._conv,
                                    "Gemm": self._gemm, "MatMul": self._gemm}
        for node in self.model.graph.node:
            ins = [env[i] if i else None for i in node.input]
            out = ops[node.op_type](node, ins) if node.op_type in ops else _elementwise(node, ins)
            env[node.output[0]] = out
        return env[self.model.graph.output[0].name]

    def _q(self, node, ins):
        return quantize(ins[0], ins[1], ins[2], _attrs(node).get("axis", 1))

    def _dq(self, node, ins):
        return dequantize(ins[0], ins[1], ins[2], _attrs(node).get("axis", 1))

    def _int8_inputs(self, node) -> tuple | None:
        """(xq, x scale, x zp, wq, w scale) when both inputs come through DequantizeLinear with int8 weights."""
        act, wdq = self.producer.get(node.input[0]), self.producer.get(node.input[1])
        if not (act and wdq and act.op_type == wdq.op_type == "DequantizeLinear"):
            return None
        wq = self.consts.get(wdq.input[0])
        if wq is None or wq.dtype != np.int8 or act.input[0] in self.consts:
            return None
        return act, wdq, wq

    def _conv(self, node, ins):
        found = self._int8_inputs(node)
        if found is None:
            raise UnsupportedGraphError(f"{node.name}: a Conv without int8 Q/DQ inputs (float Conv is not emulated)")
        act, wdq, wq = found
        xq = self._env_q(act)
        x_scale, x_zp = self.consts[act.input[1]], self.consts[act.input[2]]
        w_scale = self.consts[wdq.input[1]]
        acc = int8_conv(xq, x_zp, wq, _attrs(node), self.accumulation)
        y = acc * _per_axis(w_scale * x_scale, 1, 4)
        if len(ins) > 2 and ins[2] is not None:
            y = y + ins[2].reshape(1, -1, 1, 1)
        return y.astype(np.float32)

    def _gemm(self, node, ins):
        found = self._int8_inputs(node)
        if found is None:
            a, b = ins[0], ins[1]
            return (a @ (b.T if _attrs(node).get("transB") else b) + (ins[2] if len(ins) > 2 else 0)).astype(
                np.float32)
        act, wdq, wq = found
        xq = self._env_q(act)
        a, za = _unsigned(xq, self.consts[act.input[2]])
        w = wq.T if _attrs(node).get("transB") else wq  # (K, N)
        acc = pair_sums(a, w, self.accumulation) - za * w.astype(np.int64).sum(axis=0)
        y = acc * (self.consts[wdq.input[1]] * self.consts[act.input[1]])
        return (y + (ins[2] if len(ins) > 2 and ins[2] is not None else 0)).astype(np.float32)

    def _env_q(self, dq_node: onnx.NodeProto) -> np.ndarray:
        """The quantized tensor a DequantizeLinear reads (computed earlier in this run)."""
        return self._env[dq_node.input[0]]


def _elementwise(node: onnx.NodeProto, ins: list) -> np.ndarray:
    op = node.op_type
    if op == "Relu":
        return np.maximum(ins[0], 0)
    if op == "Add":
        return ins[0] + ins[1]
    if op == "Mul":
        return ins[0] * ins[1]
    if op == "Sigmoid":
        return 1 / (1 + np.exp(-ins[0]))
    if op == "GlobalAveragePool":
        return ins[0].mean(axis=(2, 3), keepdims=True)
    if op == "Flatten":
        return ins[0].reshape(ins[0].shape[0], -1)
    if op == "Reshape":
        return ins[0].reshape([d if d else ins[0].shape[i] for i, d in enumerate(ins[1].tolist())])
    if op == "Identity":
        return ins[0]
    raise UnsupportedGraphError(f"op {op}: not one of the emulated ops ({', '.join(ELEMENTWISE)}, Q/DQ, int8 Conv, "
                                "Gemm, MatMul)")
