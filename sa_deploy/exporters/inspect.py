"""Facts about an ONNX file: op histogram, parameters, tensor ranks, dynamic dims, SA layers found."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import read_onnx_metadata

# node names from our exports carry the module path, e.g. "/layer1/layer1.0/sa/..." or "/features.3/sa/..."


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


class OnnxFileError(SADeployError):
    """A file that is not a valid ONNX model, or not one sa-deploy can feed images to."""


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file where it enters: a regular, non-empty file that parses, whose external data (if
    any) lies in regular files beside it, whose opsets this onnx knows, that passes ``onnx.checker`` (topological
    order, tensor data, types...) and has at least one input and one output. Any failure is one OnnxFileError."""
    p = Path(path)
    if p.is_dir():
        raise OnnxFileError(f"{p} is a folder, not an ONNX file")
    if not p.exists():
        raise OnnxFileError(f"ONNX file not found: {p}")
    if not p.is_file():
        raise OnnxFileError(f"{p} is not a regular file (a FIFO, socket or device?)")
    if p.stat().st_size == 0:
        raise OnnxFileError(f"{p.name} is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf parses untrusted bytes: DecodeError and friends
        raise OnnxFileError(f"{p.name} is not a readable ONNX model ({type(exc).__name__}: {_first_line(exc)})") \
            from None
    _load_external_data(model, p)
    check_model(model, p.name)
    return model


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message folded into one line (onnx.checker spreads one sentence over several)."""
    return " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())[:limit] or type(exc).__name__


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Tensors stored outside the .onnx file: each location must be a regular file inside the model's folder,
    large enough for its offset/length (no absolute paths, no '..', no FIFOs or devices)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    external = [t for t in _all_tensors(model.graph) if uses_external_data(t)]
    if not external:
        return
    base = path.parent.resolve()
    for t in external:
        info = ExternalDataInfo(t)
        loc = Path(info.location or "")
        where = f"{path.name}: external data of tensor '{t.name}'"
        if not info.location or loc.is_absolute() or ".." in loc.parts:
            raise OnnxFileError(f"{where} has location {info.location!r}; it must be a file name beside the model")
        file = (base / loc).resolve()
        if base not in file.parents or not file.is_file():
            raise OnnxFileError(f"{where}: {info.location} is missing or not a regular file beside the model")
        end = (info.offset or 0) + (info.length or 0)
        if end > file.stat().st_size:
            raise OnnxFileError(f"{where} needs bytes up to {end} of {info.location}, which has "
                                f"{file.stat().st_size} (truncated?)")
    try:
        onnx.load_external_data_for_model(model, str(base))
    except Exception as exc:  # noqa: BLE001 - any failure reading it is the file's
        raise OnnxFileError(f"{path.name}: cannot read its external data ({_first_line(exc)})") from None


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and constant attributes of a graph and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def check_model(model: onnx.ModelProto, name: str) -> None:
    """onnx.checker plus what it lets through: opsets newer than this onnx knows, graphs without inputs/outputs."""
    newest = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > newest:
            raise OnnxFileError(f"{name} uses ONNX opset {o.version}; this onnx {onnx.__version__} knows up to "
                                f"{newest} (re-export with opset 17)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, and protobuf errors on damaged fields
        raise OnnxFileError(f"{name} is not a valid ONNX model: {_first_line(exc)}") from None
    inits = {t.name for t in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in inits]:
        raise OnnxFileError(f"{name} has no graph input; an image model takes one")
    if not model.graph.output:
        raise OnnxFileError(f"{name} has no graph output")


def image_input(model: onnx.ModelProto, name: str, input_size: int | None = None) -> tuple[str, int | None]:
    """The model's one image input (name, fixed square size or None when H/W are dynamic), checked: one
    non-initializer float32 input of shape (N, 3, H, W); ``input_size`` given: fixed H/W must equal it."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxFileError(f"{name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs[:4])}); sa-deploy "
                            "feeds one NCHW image input")
    inp = inputs[0]
    tt = inp.type.tensor_type
    if inp.type.WhichOneof("value") != "tensor_type" or tt.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxFileError(f"{name}: input '{inp.name}' is {_type_name(inp)}, expected a float32 tensor")
    dims = _dims(inp)
    if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 3):
        raise OnnxFileError(f"{name}: input '{inp.name}' has shape {dims}, expected (N, 3, H, W)")
    hw = [d for d in dims[2:] if isinstance(d, int)]
    if any(d < 1 for d in hw) or (len(hw) == 2 and hw[0] != hw[1]):
        raise OnnxFileError(f"{name}: input '{inp.name}' has shape {dims}, expected a square image (N, 3, S, S)")
    size = hw[0] if len(hw) == 2 else None
    if input_size is not None and hw and any(d != input_size for d in hw):
        raise OnnxFileError(f"{name} takes {dims[2]}x{dims[3]} inputs, but the data is preprocessed to "
                            f"{input_size}x{input_size} (wrong model for this file?)")
    return inp.name, size


def _type_name(vi: onnx.ValueInfoProto) -> str:
    kind = vi.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"a {kind or 'typeless value'}"
    return f"a {_dtype(vi.type.tensor_type.elem_type)} tensor"


def _dtype(elem: int) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem).name
    except Exception:  # noqa: BLE001 - undefined / string / types numpy lacks: their ONNX name
        return onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() \
            else f"type {elem}"


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim]


def max_tensor_rank(model: onnx.ModelProto) -> int:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes inference cannot follow: the ranks the file declares
        inferred = model
    ranks = [len(vi.type.tensor_type.shape.dim) for vi in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
             if vi.type.tensor_type.HasField("shape")]
    ranks += [len(t.dims) for t in model.graph.initializer]
    return max(ranks) if ranks else 0


def module_scopes(model: onnx.ModelProto, attribute: str) -> dict[str, int]:
    """Nodes per module held under ``attribute`` (e.g. ``sa``, ``se``, ``gc``), keyed by the module's path (from
    node names)."""
    scope = re.compile(rf"^(.*?/{re.escape(attribute)})(?:/|$)")
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        m = scope.match(node.name)
        if m:
            counts[m.group(1)] += 1
    return dict(counts)


@dataclass
class ModuleGraphFacts:
    """What the modules held under one attribute name (e.g. every ``se``) became in an ONNX graph."""
    attribute: str
    modules: int
    nodes_min: int  # nodes per module
    nodes_max: int
    max_rank: int  # the highest rank of a tensor computed inside them
    shape_ops: int  # Shape and Gather nodes inside them, all modules together
    ops: dict[str, int] = field(default_factory=dict)  # op histogram of one module (the first)

    def to_dict(self) -> dict:
        return asdict(self)


def module_graph_facts(model: onnx.ModelProto, attribute: str) -> ModuleGraphFacts:
    """Nodes per module, tensor ranks and Shape/Gather nodes of the modules under ``attribute`` (node names)."""
    scope = re.compile(rf"^(.*?/{re.escape(attribute)})(?:/|$)")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference cannot follow: the ranks the file declares
        inferred = model
    rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
            list(inferred.graph.value_info) + list(inferred.graph.output) if vi.type.tensor_type.HasField("shape")}
    per: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        m = scope.match(node.name)
        if m:
            per.setdefault(m.group(1), []).append(node)
    nodes = [n for group in per.values() for n in group]
    counts = [len(group) for group in per.values()] or [0]
    first = next(iter(per.values()), [])
    return ModuleGraphFacts(attribute, len(per), min(counts), max(counts),
                            max((rank.get(o, 0) for n in nodes for o in n.output), default=0),
                            sum(n.op_type in ("Shape", "Gather") for n in nodes),
                            dict(Counter(n.op_type for n in first)))


def sa_scopes(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per SA layer, keyed by the layer's module path (from node names)."""
    return module_scopes(model, "sa")


_TRANSPARENT = ("QuantizeLinear", "DequantizeLinear", "Cast")
_CHANNEL_STATS = ("GlobalAveragePool", "ReduceMean")


def sa_gates(model: onnx.ModelProto, max_hops: int = 8) -> list[list[onnx.NodeProto]]:
    """The SA layers' gates recognised by structure, whatever the names, lowering or precision: each SA layer has
    one InstanceNormalization (its spatial branch; the naive export's GroupNorm becomes one too) whose output reaches
    a Sigmoid within a few nodes (Q/DQ pairs and casts between them do not count). Per layer: the nodes on that way,
    the Sigmoid, the gating Mul after it, and the channel statistics (GlobalAveragePool / ReduceMean, and the Mul
    scaling it) that join the way — the whole gate of the fold and reshape-transpose forms."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n

    def way_to_sigmoid(start: onnx.NodeProto) -> list[onnx.NodeProto]:
        parent: dict[int, onnx.NodeProto | None] = {id(start): None}
        frontier = [(start, 0)]
        while frontier:
            node, hops = frontier.pop(0)
            for c in (c for t in node.output for c in consumers.get(t, [])):
                if id(c) in parent:
                    continue
                parent[id(c)] = node
                if c.op_type == "Sigmoid":
                    way, at = [c], node
                    while at is not None:
                        way.append(at)
                        at = parent[id(at)]
                    return way
                cost = 0 if c.op_type in _TRANSPARENT else 1
                if hops + cost <= max_hops:
                    frontier.append((c, hops + cost))
        return []

    def channel_stats(node: onnx.NodeProto, depth: int = 2) -> list[onnx.NodeProto]:
        found = []
        for t in node.input:
            p = producer.get(t)
            if p is not None and depth and (p.op_type in _CHANNEL_STATS or p.op_type in _TRANSPARENT + ("Mul",)):
                inner = channel_stats(p, depth - (p.op_type not in _TRANSPARENT))
                if p.op_type in _CHANNEL_STATS or inner:
                    found += [p] + inner
        return found

    gates = []
    for n in model.graph.node:
        way = way_to_sigmoid(n) if n.op_type == "InstanceNormalization" else []
        if way:
            sigmoid = way[0]
            gating = [c for t in sigmoid.output for c in consumers.get(t, []) if c.op_type == "Mul"]
            stats = [s for node in way[1:-1] for s in channel_stats(node)]
            gates.append(list({id(x): x for x in way + gating + stats}.values()))
    return gates


def count_sa_gates(model: onnx.ModelProto) -> int:
    """How many SA layers ``model`` has, recognised by structure (``sa_gates``)."""
    return len(sa_gates(model))


def inspect_onnx(path: str | Path) -> OnnxInfo:
    model = load_onnx(path)
    hist = Counter(n.op_type for n in model.graph.node)
    params = int(sum(np.prod(t.dims) if t.dims else 1 for t in model.graph.initializer))
    gates = count_sa_gates(model)
    scopes = sa_scopes(model)
    if len(scopes) != gates:  # scope names say nodes per layer only when they name every SA layer (ours do)
        scopes = {}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxInfo(
        path=str(path), nodes=len(model.graph.node), op_histogram=dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        parameters=params, max_rank=max_tensor_rank(model),
        inputs=[{"name": i.name, "shape": _dims(i), "dtype": _dtype(i.type.tensor_type.elem_type)}
                for i in model.graph.input],
        outputs=[{"name": o.name, "shape": _dims(o), "dtype": _dtype(o.type.tensor_type.elem_type)}
                 for o in model.graph.output],
        sa_layers=gates, sa_nodes_per_layer=scopes, opset=opset,
        metadata=read_onnx_metadata(model), size_bytes=Path(path).stat().st_size)


def initializer_array(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None
