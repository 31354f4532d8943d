"""Offline TensorRT lint for an ONNX file: will TensorRT's ONNX parser and builder accept it, with our INT8/FP16
conventions? Runs with onnx only (no TensorRT, no GPU), so it gates the build and the pipeline anywhere.

Rules (id: what it checks):
  op-support           every op is in the parser's table for our opset (``trt_ops``), default domain only
  op-restriction       Conv/ConvTranspose weights and InstanceNormalization scale/bias are constants
  rank                 no tensor of rank > 8 (TensorRT's Dims limit)
  dynamic-dim          only the batch dim of an input may be dynamic: the build's profile covers only that one
  static-batch         a static batch dim smaller than the requested --max-batch
  reshape-batch        a Reshape with a constant leading dim under a dynamic batch (warning)
  dtype                no float64/string/complex/16-bit or unsigned-wide integer tensors
  initializer-dtype    the same for weights and constants
  int64-compute        no int64 tensor feeding a compute op's data input (int64 is for shapes only)
  qdq-int8             Q/DQ are int8 (uint8, the onnxruntime CPU flavour, is rejected by TensorRT)
  qdq-zero-point       Q/DQ zero points are constant 0 (TensorRT quantization is symmetric)
  qdq-scale            scales are constant, positive and finite
  qdq-weight-per-channel  a weight DequantizeLinear is per channel on axis 0 with one scale per output channel
  qdq-activation-per-tensor  activation Q/DQ use one scale
  qdq-pair             every QuantizeLinear feeds DequantizeLinear(s) with the same scale (warning)
  qdq-residual-add     in a Q/DQ graph, both inputs of a two-activation Add come through DequantizeLinear, so
                       TensorRT can fuse the residual Add into the Conv in INT8 (warning)
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from sa_deploy.backends.lint_report import ERROR, WARNING, Finding, LintReport
from sa_deploy.backends.trt.ops import SUPPORTED, TABLE_MAX_OPSET, TABLE_SOURCE, UNSUPPORTED
from sa_deploy.exporters.inspect import load_onnx
from sa_deploy.exporters.metadata import read_onnx_metadata

MAX_RANK = 8
GRAPH_INPUT = "<graph input>"
BAD_DTYPES = {TensorProto.DOUBLE: "float64", TensorProto.STRING: "string", TensorProto.COMPLEX64: "complex64",
              TensorProto.COMPLEX128: "complex128", TensorProto.UINT16: "uint16", TensorProto.UINT32: "uint32",
              TensorProto.UINT64: "uint64", TensorProto.INT16: "int16"}
# data inputs of compute ops (int64 there is a real activation, not a shape): op -> input indices
COMPUTE_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (0, 1, 2), "ConvTranspose": (0, 1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (0, 1, 2, 3, 4), "InstanceNormalization": (0, 1, 2), "AveragePool": (0,), "MaxPool": (0,),
    "GlobalAveragePool": (0,), "GlobalMaxPool": (0,), "Relu": (0,), "Sigmoid": (0,), "Tanh": (0,), "Softmax": (0,),
    "LogSoftmax": (0,), "LeakyRelu": (0,), "Clip": (0,), "HardSigmoid": (0,), "HardSwish": (0,), "Erf": (0,),
    "Exp": (0,), "Log": (0,), "Sqrt": (0,), "Pow": (0, 1), "ReduceMean": (0,), "ReduceSum": (0,), "ReduceMax": (0,),
    "Resize": (0,), "QuantizeLinear": (0,), "LRN": (0,), "Elu": (0,), "Selu": (0,), "Softplus": (0,),
    "PRelu": (0, 1)}
WEIGHT_SLOT = {"Conv": 1, "Gemm": 1}  # consumers whose input 1 is a weight with output channels on axis 0


def _dtype_name(elem: int) -> str:
    return TensorProto.DataType.Name(elem).lower()


class _Graph:
    """Index of one ONNX graph: producers, consumers, constants and inferred tensor types."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.init = {t.name: t for t in g.initializer}
        for n in self.nodes:  # Constant nodes are constants too
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.init[n.output[0]] = a.t
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for n in self.nodes:
            for i, t in enumerate(n.input):
                if t:
                    self.consumers[t].append((n, i))
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a graph shape inference cannot handle: check what the file itself declares
            inferred = model
        self.types: dict[str, tuple[int, int | None]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = (tt.elem_type, len(tt.shape.dim) if tt.HasField("shape") else None)
        for name, t in self.init.items():
            self.types[name] = (t.data_type, len(t.dims))
        self.inputs = [i for i in g.input if i.name not in self.init]

    def const(self, name: str) -> np.ndarray | None:
        t = self.init.get(name)
        return numpy_helper.to_array(t) if t is not None else None

    def is_constant(self, name: str) -> bool:
        """An initializer, a Constant, or a Q/DQ/Cast/Identity of one (how weights reach Conv in Q/DQ graphs)."""
        seen = 0
        while name not in self.init:
            n = self.producer.get(name)
            if n is None or n.op_type not in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity") or seen > 4:
                return False
            name, seen = n.input[0], seen + 1
        return True

    def where(self, tensor: str) -> tuple[str, str]:
        n = self.producer.get(tensor)
        if n is not None:
            return (n.name, n.op_type)
        if tensor in self.init:
            return (tensor, "initializer")
        return (tensor, GRAPH_INPUT)


def _node(n: onnx.NodeProto) -> tuple[str, str]:
    return (n.name, n.op_type)


def _attr(n: onnx.NodeProto, name: str, default: int) -> int:
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def graph_precision(model: onnx.ModelProto) -> str:
    """What precision the graph itself carries: int8 (has Q/DQ), fp16 (FP16 weights/tensors) or fp32."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    if any(n.op_type == "Cast" and _attr(n, "to", 0) == TensorProto.FLOAT16 for n in model.graph.node):
        return "fp16"
    return "fp32"


def _check_ops(g: _Graph, out: list[Finding]) -> None:
    opset = next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > TABLE_MAX_OPSET:
        out.append(Finding("op-support", WARNING, f"opset {opset} is newer than the table's opset "
                           f"{TABLE_MAX_OPSET} ({TABLE_SOURCE}); ops were checked by name only"))
    by_problem: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for n in g.nodes:
        if n.domain not in ("", "ai.onnx"):
            by_problem[(n.op_type, f"custom-domain op {n.domain}::{n.op_type} needs a TensorRT plugin")].append(
                _node(n))
        elif n.op_type in UNSUPPORTED:
            by_problem[(n.op_type, f"{n.op_type} is not supported by TensorRT's ONNX parser")].append(_node(n))
        elif n.op_type not in SUPPORTED:
            by_problem[(n.op_type, f"{n.op_type} is not in the parser's supported-op table")].append(_node(n))
    for (_, msg), nodes in sorted(by_problem.items()):
        out.append(Finding("op-support", ERROR, f"{msg} ({TABLE_SOURCE})", tuple(nodes)))
    dq_norm = []
    for n in g.nodes:
        slots = {"Conv": (1,), "ConvTranspose": (1,), "InstanceNormalization": (1, 2)}.get(n.op_type, ())
        used = [n.input[i] for i in slots if i < len(n.input) and n.input[i]]
        bad = [t for t in used if not g.is_constant(t)]
        if bad:
            out.append(Finding("op-restriction", ERROR, f"{n.op_type} needs constant weights/scale/bias, got "
                               f"computed tensor(s) {', '.join(bad)}", (_node(n),)))
        elif n.op_type == "InstanceNormalization" and any(t not in g.init for t in used):
            dq_norm.append(_node(n))
    if dq_norm:  # the table asks for initializers; a DequantizeLinear in between is not one
        out.append(Finding("op-restriction", WARNING, "InstanceNormalization scale/bias come through "
                           "DequantizeLinear; the parser table asks for initializers (keep them float: exclude them "
                           "from quantization)", tuple(dq_norm)))


def _check_shapes(g: _Graph, max_batch: int | None, out: list[Finding]) -> None:
    deep = defaultdict(list)
    for name, (_, rank) in g.types.items():
        if rank is not None and rank > MAX_RANK:
            deep[rank].append(g.where(name))
    for rank, nodes in sorted(deep.items()):
        out.append(Finding("rank", ERROR, f"tensor rank {rank} > {MAX_RANK} (TensorRT's maximum)", tuple(nodes)))
    batch_dynamic = False
    for inp in g.inputs:
        dims = inp.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            dynamic = not d.HasField("dim_value")
            label = d.dim_param or "?"
            if axis == 0:
                batch_dynamic |= dynamic
                if not dynamic and max_batch is not None and d.dim_value < max_batch:
                    out.append(Finding("static-batch", ERROR, f"input '{inp.name}' has a static batch of "
                                       f"{d.dim_value}, smaller than --max-batch {max_batch}",
                                       ((inp.name, GRAPH_INPUT),)))
            elif dynamic:
                out.append(Finding("dynamic-dim", ERROR, f"input '{inp.name}' dim {axis} ('{label}') is dynamic; "
                                   "the optimization profile covers only the batch dim (export with a fixed "
                                   "input size)", ((inp.name, GRAPH_INPUT),)))
    if batch_dynamic:
        for n in g.nodes:
            shape = g.const(n.input[1]) if n.op_type == "Reshape" and len(n.input) > 1 else None
            if shape is not None and shape.size and int(shape.reshape(-1)[0]) > 0:
                out.append(Finding("reshape-batch", WARNING, f"Reshape to a constant leading dim "
                                   f"{int(shape.reshape(-1)[0])} under a dynamic batch: other batch sizes fail",
                                   (_node(n),)))


def _check_dtypes(g: _Graph, out: list[Finding]) -> None:
    bad = defaultdict(list)
    for name, (elem, _) in g.types.items():
        if elem in BAD_DTYPES:
            rule = "initializer-dtype" if name in g.init else "dtype"
            bad[(rule, elem)].append(g.where(name))
    for (rule, elem), nodes in sorted(bad.items()):
        what = "weights/constants" if rule == "initializer-dtype" else "tensors"
        out.append(Finding(rule, ERROR, f"{BAD_DTYPES[elem]} {what} are not supported by TensorRT (use float32/"
                           "float16, int32/int64 for shapes, int8 for Q/DQ)", tuple(nodes)))
    int64 = []
    for n in g.nodes:
        for i in COMPUTE_INPUTS.get(n.op_type, ()):
            if i < len(n.input) and g.types.get(n.input[i], (0,))[0] == TensorProto.INT64:
                int64.append(_node(n))
                break
    if int64:
        out.append(Finding("int64-compute", ERROR, "int64 tensor feeds a compute op (TensorRT uses int64 for "
                           "shapes only; cast to float32 before compute)", tuple(int64)))


def _check_qdq(g: _Graph, checked: dict[str, int], out: list[Finding]) -> None:
    per_rule: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)

    def flag(rule: str, msg: str, n: onnx.NodeProto, severity: str = ERROR) -> None:
        per_rule[(rule, severity, msg)].append(_node(n))

    for key in ("qdq_nodes", "weight_dq", "weight_dq_per_channel", "activation_q", "activation_dq"):
        checked[key] = 0
    for n in g.nodes:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        checked["qdq_nodes"] += 1
        is_q = n.op_type == "QuantizeLinear"
        scale = g.const(n.input[1]) if len(n.input) > 1 else None
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        # zero point: its dtype is the quantized type (Q without one produces uint8 by the ONNX spec)
        if zp_name is None:
            qtype = TensorProto.UINT8 if is_q else g.types.get(n.input[0], (0,))[0]
        elif zp_name in g.init:
            qtype = g.init[zp_name].data_type
            if np.any(g.const(zp_name) != 0):
                flag("qdq-zero-point", "non-zero zero point: TensorRT quantization is symmetric "
                     "(ActivationSymmetric/WeightSymmetric)", n)
        else:
            qtype = g.types.get(zp_name, (0,))[0]
            flag("qdq-zero-point", "zero point is not a constant", n)
        if qtype == TensorProto.INT32:
            flag("qdq-int8", "int32 DequantizeLinear (a quantized bias): TensorRT's DequantizeLinear takes int8 "
                 "only and quantizes biases itself (quantize with extra_options QuantizeBias=False)", n)
        elif qtype == TensorProto.UINT8:
            flag("qdq-int8", "uint8 Q/DQ: TensorRT needs int8 (the uint8 'cpu' flavour is for onnxruntime only; "
                 "quantize with the 'tensorrt' flavour)", n)
        elif qtype and qtype != TensorProto.INT8:
            flag("qdq-int8", f"{_dtype_name(qtype)} Q/DQ: TensorRT needs int8", n)
        if scale is None:
            flag("qdq-scale", "scale is not a constant", n)
            continue
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            flag("qdq-scale", "scale has zero, negative or non-finite values", n)
        per_channel = scale.size > 1
        if not is_q and g.is_constant(n.input[0]) and n.input[0] in g.init:
            checked["weight_dq"] += 1
            weight = g.init[n.input[0]]
            slots = [(c, i) for c, i in g.consumers.get(n.output[0], []) if WEIGHT_SLOT.get(c.op_type) == i]
            if not slots:
                continue  # a quantized bias or other constant: only the generic rules apply
            consumer = slots[0][0]
            axis = _attr(n, "axis", 1)
            axis = axis + len(weight.dims) if axis < 0 else axis
            transposed_gemm = consumer.op_type == "Gemm" and not _attr(consumer, "transB", 0)
            out_axis = 1 if transposed_gemm else 0
            if not per_channel:
                flag("qdq-weight-per-channel", f"per-tensor weight scale for {consumer.op_type} "
                     f"'{consumer.name}' (expected one scale per output channel)", n, WARNING)
            elif axis != out_axis or scale.size != weight.dims[out_axis]:
                flag("qdq-weight-per-channel", f"weight scale of length {scale.size} on axis {axis}, expected "
                     f"length {weight.dims[out_axis]} on axis {out_axis} for {consumer.op_type} "
                     f"'{consumer.name}'", n)
            else:
                checked["weight_dq_per_channel"] += 1
        else:
            checked["activation_q" if is_q else "activation_dq"] += 1
            if per_channel:
                flag("qdq-activation-per-tensor", f"activation {n.op_type} has {scale.size} scales; TensorRT "
                     "activations are quantized per tensor", n)
            if is_q:
                users = g.consumers.get(n.output[0], [])
                if not users or any(c.op_type != "DequantizeLinear" for c, _ in users):
                    flag("qdq-pair", "QuantizeLinear output is not consumed by DequantizeLinear only", n, WARNING)
                elif any(g.const(c.input[1]) is None or not np.array_equal(g.const(c.input[1]), scale)
                         for c, _ in users):
                    flag("qdq-pair", "QuantizeLinear and its DequantizeLinear use different scales", n, WARNING)
    if checked["qdq_nodes"]:
        checked["adds_with_qdq_inputs"] = 0
        # nodes the quantizer deliberately kept float (e.g. the SA gate) are not missed fusions
        kept_float = _float_nodes(g.model)
        for n in g.nodes:
            if n.op_type != "Add" or n.name in kept_float or any(g.is_constant(t) for t in n.input):
                continue
            if all(g.producer.get(t) is not None and g.producer[t].op_type == "DequantizeLinear" for t in n.input):
                checked["adds_with_qdq_inputs"] += 1
            else:
                flag("qdq-residual-add", "Add of two activations without DequantizeLinear on every input: it "
                     "stays outside the INT8 Conv fusion", n, WARNING)
    for (rule, severity, msg), nodes in per_rule.items():
        out.append(Finding(rule, severity, msg, tuple(nodes)))


def _float_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes the quantizer kept float on purpose (metadata ``float_nodes``); damaged metadata counts as none."""
    try:
        names = json.loads(read_onnx_metadata(model).get("float_nodes", "[]"))
    except ValueError:
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def lint_model(model: onnx.ModelProto, path: str = "<model>", max_batch: int | None = None) -> LintReport:
    g = _Graph(model)
    report = LintReport(str(path), "tensorrt")
    report.checked["nodes"] = len(g.nodes)
    report.checked["op_types"] = len({n.op_type for n in g.nodes})
    report.checked["initializers"] = len(g.model.graph.initializer)
    _check_ops(g, report.findings)
    _check_shapes(g, max_batch, report.findings)
    _check_dtypes(g, report.findings)
    _check_qdq(g, report.checked, report.findings)
    report.findings.sort(key=lambda f: (f.severity != ERROR, f.rule))
    return report


def lint_onnx(path: str | Path, max_batch: int | None = None) -> LintReport:
    """Check an ONNX file against TensorRT's rules and ours (see module doc); ``report.passed`` is False on errors.
    A file that is not a valid ONNX model (``exporters.inspect.load_onnx``) is an error, never a pass."""
    return lint_model(load_onnx(path), str(path), max_batch)
