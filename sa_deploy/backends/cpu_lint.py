"""Static int16-saturation check of a Q/DQ ONNX file for the CPU runtimes, onnxruntime and OpenVINO (``sa-deploy
lint --target cpu``): which int8 convolutions and matmuls can saturate on an x86 CPU without VNNI, from the file
alone, so it answers the same on every machine.

Such CPUs add u8 x s8 products in pairs into int16 (``vpmaddubsw``) before widening (util/int8_kernels.py). The
kernels see raw quantized values: activations in 0..255 (u8; s8 activations are shifted into that range) and the
stored int8 weights. Which two weights share a pair depends on the kernel's packing, so the bound takes the worst
pair of each output channel: the two largest positive weights, or the two most negative, times 255. A channel
whose bound exceeds 32,767 *can* saturate; one under it cannot on any packing. 8-bit per-channel weights reach
+-127 in every channel, so practically every such node is flagged; 7-bit weights (|w| <= 64) never are.
Unsigned (u8) weights go through widening u8 x u8 kernels and cannot saturate."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sa_deploy.backends.lint_report import ERROR, Finding, LintReport
from sa_deploy.exporters.inspect import load_onnx
from sa_deploy.util.int8_kernels import INT16_MAX, U8_MAX

INT8_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class NodeBound:
    """The worst pairwise int16 sum one int8 node can produce, over its output channels."""

    name: str
    op_type: str
    worst_pair_sum: int
    channels: int
    channels_at_risk: int

    @property
    def can_saturate(self) -> bool:
        return self.worst_pair_sum > INT16_MAX


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _output_channel_rows(weight: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    """Weights as (output channels, reduction) so that each row is what one output channel sums over."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if node.op_type == "ConvTranspose":  # (C_in, C_out/group, kh, kw): the reduction runs over C_in
        return np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)
    if node.op_type == "Gemm" and _attr(node, "transB"):
        return weight.reshape(weight.shape[0], -1)
    return weight.reshape(-1, weight.shape[-1]).T  # MatMul / Gemm: (K, N)


def worst_pair_sums(rows: np.ndarray) -> np.ndarray:
    """Per row: the largest |sum| two same-signed weights reach with activations at 255 (raw int values)."""
    w = rows.astype(np.int64)
    if w.shape[1] < 2:
        return np.abs(w[:, 0]) * U8_MAX
    pos = -np.sort(-np.clip(w, 0, None), axis=1)[:, :2].sum(axis=1)
    neg = np.sort(np.clip(w, None, 0), axis=1)[:, :2].sum(axis=1)
    return np.maximum(pos, -neg) * U8_MAX


def int8_node_bounds(model: onnx.ModelProto) -> list[NodeBound]:
    """The bound of every node that a CPU runtime fuses into an int8 kernel: both its data input and its weight
    come through DequantizeLinear of 8-bit integers, the weight a constant."""
    consts = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    bounds = []
    for node in model.graph.node:
        if node.op_type not in INT8_COMPUTE or len(node.input) < 2:
            continue
        act, wdq = producer.get(node.input[0]), producer.get(node.input[1])
        if act is None or wdq is None or act.op_type != "DequantizeLinear" or wdq.op_type != "DequantizeLinear":
            continue
        weight = consts.get(wdq.input[0])
        if weight is None or weight.dtype != np.int8:  # float or u8 weights: no u8 x s8 pair kernel
            continue
        if act.input[0] in consts:  # a constant "activation": folded, not an int8 kernel input
            continue
        sums = worst_pair_sums(_output_channel_rows(weight, node))
        bounds.append(NodeBound(node.name or node.output[0], node.op_type, int(sums.max()), len(sums),
                                int((sums > INT16_MAX).sum())))
    return bounds


def lint_cpu_overflow(path: str | Path) -> LintReport:
    """Lint report for target ``cpu``: one error finding naming every int8 node that can saturate int16 pair sums
    on x86 without VNNI (exit 1 from ``sa-deploy lint``), nothing when the file is overflow-safe."""
    model = load_onnx(path)
    bounds = int8_node_bounds(model)
    report = LintReport(str(path), "cpu")
    risky = [b for b in bounds if b.can_saturate]
    report.checked = {"int8 nodes": len(bounds), "overflow-safe": len(bounds) - len(risky)}
    if risky:
        worst = max(risky, key=lambda b: b.worst_pair_sum)
        channels = sum(b.channels_at_risk for b in risky)
        report.findings.append(Finding(
            "int16-saturation", ERROR,
            f"{len(risky)} of {len(bounds)} int8 nodes ({channels} output channels) can saturate the pairwise int16 "
            f"sums of x86 CPUs without VNNI (worst pair {worst.worst_pair_sum} > {INT16_MAX} at {worst.name}); "
            "re-quantize with `--weight-bits 7` (overflow-safe on every CPU) or deploy only on VNNI/AMX/Arm CPUs",
            tuple((b.name, b.op_type) for b in risky)))
    return report
