"""Facts about an ONNX file: op histogram, parameters, tensor ranks, dynamic dims, SA layers found."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import read_onnx_metadata

# node names from our exports carry the module path, e.g. "/layer1/layer1.0/sa/..." or "/features.3/sa/..."
_SA_SCOPE = re.compile(r"^(.*?/sa)(?:/|$)")


@dataclass
class OnnxInfo:
    path: str
    nodes: int
    op_histogram: dict[str, int]
    parameters: int
    max_rank: int
    inputs: list[dict]
    outputs: list[dict]
    sa_layers: int
    sa_nodes_per_layer: dict[str, int]
    opset: int
    metadata: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise SADeployError(f"ONNX file not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # protobuf DecodeError and friends
        raise SADeployError(f"{p.name} is not a readable ONNX model ({type(exc).__name__})") from None


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim]


def max_tensor_rank(model: onnx.ModelProto) -> int:
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = [len(vi.type.tensor_type.shape.dim) for vi in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
             if vi.type.tensor_type.HasField("shape")]
    ranks += [len(t.dims) for t in model.graph.initializer]
    return max(ranks) if ranks else 0


def sa_scopes(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per SA layer, keyed by the layer's module path (from node names)."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        m = _SA_SCOPE.match(node.name)
        if m:
            counts[m.group(1)] += 1
    return dict(counts)


def count_sa_gates(model: onnx.ModelProto) -> int:
    """SA layers recognised by structure when names are gone: InstanceNormalization feeding a Sigmoid path."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = 0
    for n in model.graph.node:
        if n.op_type != "InstanceNormalization":
            continue
        frontier, seen = list(n.output), 0
        while frontier and seen < 4:
            nxt = []
            for t in frontier:
                for c in consumers.get(t, []):
                    if c.op_type == "Sigmoid":
                        found += 1
                        frontier = []
                        break
                    nxt += list(c.output)
            frontier = nxt if frontier else []
            seen += 1
    return found


def inspect_onnx(path: str | Path) -> OnnxInfo:
    model = load_onnx(path)
    hist = Counter(n.op_type for n in model.graph.node)
    params = int(sum(np.prod(t.dims) if t.dims else 1 for t in model.graph.initializer))
    scopes = sa_scopes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxInfo(
        path=str(path), nodes=len(model.graph.node), op_histogram=dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        parameters=params, max_rank=max_tensor_rank(model),
        inputs=[{"name": i.name, "shape": _dims(i), "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            i.type.tensor_type.elem_type).name} for i in model.graph.input],
        outputs=[{"name": o.name, "shape": _dims(o), "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            o.type.tensor_type.elem_type).name} for o in model.graph.output],
        sa_layers=len(scopes) if scopes else count_sa_gates(model), sa_nodes_per_layer=scopes, opset=opset,
        metadata=read_onnx_metadata(model), size_bytes=Path(path).stat().st_size)


def initializer_array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None
