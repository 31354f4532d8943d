"""What an ExecuTorch program (.pte) holds, read from the file itself: its methods, the inputs/outputs of ``forward``
(shape, and whether the batch is fixed), the delegated partitions (per backend; an XNNPACK partition's own graph
is decoded: its node types, which of them run quantized, the tensor types), the ops left outside every delegate
(run by ExecuTorch's portable kernels), and the deploy config and build record of its sidecar. Nothing is run.

The .pte is parsed with ExecuTorch's own deserializer; an XNNPACK payload (header + flatbuffer) is turned into JSON
by the ``flatc`` that ExecuTorch ships, with the XNNPACK schema it ships."""
from __future__ import annotations

import json
import subprocess
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sa_deploy.backends.executorch.sidecar import read_sidecar, sidecar_path
from sa_deploy.errors import SADeployError
from sa_deploy.util.optional import require

XNNPACK = "XnnpackBackend"
METHOD = "forward"
QUANTIZED_TYPES = ("qint8", "quint8", "qint32", "qcint8", "qcint32", "qcint4", "qdint8", "qbint4", "qpint8")
PTE_MAGIC_OFFSET = 4  # a .pte starts with 4 bytes, then the flatbuffer identifier "ET" + 2 digits


@dataclass
class Partition:
    """One delegated piece of the graph."""

    backend: str
    nodes: int | None = None  # None: the payload was not decoded (a backend other than XNNPACK)
    op_histogram: dict[str, int] = field(default_factory=dict)
    quantized_ops: dict[str, int] = field(default_factory=dict)  # node types with a quantized output
    tensor_types: dict[str, int] = field(default_factory=dict)


@dataclass
class ProgramInfo:
    path: Path
    size_bytes: int  # the .pte and its sidecar
    methods: list[str]
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    batch: int | None = None  # the fixed batch of ``forward`` (None: dynamic)
    partitions: list[Partition] = field(default_factory=list)
    portable_ops: dict[str, int] = field(default_factory=dict)  # kernel calls outside every delegate
    metadata: dict[str, str] = field(default_factory=dict)  # the sidecar's deploy config
    build: dict[str, Any] = field(default_factory=dict)  # the sidecar's program / quantization record

    @property
    def xnnpack_partitions(self) -> int:
        return sum(p.backend == XNNPACK for p in self.partitions)

    @property
    def quantized_ops(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for p in self.partitions:
            total.update(p.quantized_ops)
        return dict(total.most_common())

    @property
    def fully_delegated(self) -> bool:
        """One partition and no op left to the portable kernels."""
        return len(self.partitions) == 1 and not self.portable_ops

    @property
    def op_histogram(self) -> dict[str, int]:
        """What ``sa-deploy inspect`` tabulates: delegated node types (``xnnpack:<node>``), then the ops on portable
        kernels (``portable:<op>``)."""
        hist: Counter[str] = Counter()
        for p in self.partitions:
            hist.update({f"{p.backend.removesuffix('Backend').lower()}:{k}": v for k, v in p.op_histogram.items()})
        ordered = dict(hist.most_common())
        ordered.update({f"portable:{k}": v for k, v in sorted(self.portable_ops.items(), key=lambda kv: -kv[1])})
        return ordered

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d.update(xnnpack_partitions=self.xnnpack_partitions, quantized_ops=self.quantized_ops,
                 fully_delegated=self.fully_delegated)
        return d

    def lines(self) -> list[str]:
        """The headline, the delegation line, then one line per input and output."""
        nodes = sum(p.nodes or 0 for p in self.partitions)
        backends = Counter(p.backend for p in self.partitions)
        pieces = ", ".join(f"{b} x{n}" for b, n in backends.items()) or "none"
        head = (f"{self.path}: ExecuTorch program, {self.size_bytes / 1e6:.2f} MB, method(s) "
                f"{', '.join(self.methods)}, precision {self.metadata.get('precision', '?')}"
                + (f", batch {self.batch} (fixed)" if self.batch else ", dynamic batch"))
        portable = sum(self.portable_ops.values())
        quant = self.quantized_ops
        lines = [head, f"  delegated partitions: {len(self.partitions)} ({pieces}; {nodes} delegated nodes); "
                       f"ops on portable kernels: {portable}"
                       + (f" ({', '.join(f'{k} x{v}' for k, v in self.portable_ops.items())})" if portable else "")
                       + ("; the whole graph is one partition" if self.fully_delegated else "")]
        if quant:
            lines.append("  quantized ops: " + ", ".join(f"{k} x{v}" for k, v in quant.items()))
        q = self.build.get("quantization")
        if q:
            lines.append(f"  quantization: {q.get('quantizer')} ({q.get('scheme')}), calibrated on "
                         f"{q.get('calibration_count')} images")
        return lines + [f"  {kind} {it['name']}: {it['dtype']} {it['shape']}"
                        for kind, items in (("input", self.inputs), ("output", self.outputs)) for it in items]


def _serialize_modules():
    """ExecuTorch's .pte deserializer and XNNPACK header reader (imported on use: executorch is optional)."""
    require("executorch", "executorch", "reading an ExecuTorch program")
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary, XNNHeader


def check_pte_file(path: str | Path) -> Path:
    """A regular file that starts like an ExecuTorch program (flatbuffer identifier ``ET..``); one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise SADeployError(f"ExecuTorch program not found: {p}" + (" (it is a folder)" if p.is_dir() else ""))
    with p.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[PTE_MAGIC_OFFSET:PTE_MAGIC_OFFSET + 2] != b"ET":
        raise SADeployError(f"{p.name} is not an ExecuTorch program (no 'ET' flatbuffer identifier at its start)")
    return p


def read_program(path: str | Path):
    """The deserialized program (executorch.exir.schema.Program) of a .pte; one clear error if it does not parse."""
    deserialize, _ = _serialize_modules()
    p = check_pte_file(path)
    try:
        return deserialize(p.read_bytes()).program
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the file is not a program we can read
        raise SADeployError(f"{p.name} is not a readable ExecuTorch program ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None


def forward_plan(program, name: str = "forward"):
    plan = next((p for p in program.execution_plan if p.name == name), None)
    if plan is None:
        raise SADeployError(f"the program has no method '{name}' (methods: "
                            f"{', '.join(p.name for p in program.execution_plan)})")
    return plan


def _tensor(value, name: str) -> dict:
    val = value.val
    sizes = list(getattr(val, "sizes", []) or [])
    dtype = getattr(getattr(val, "scalar_type", None), "name", type(val).__name__).lower()
    dynamism = getattr(getattr(val, "shape_dynamism", None), "name", "STATIC").lower()
    return {"name": name, "dtype": dtype, "shape": sizes, "dynamism": dynamism}


def io_of(plan) -> tuple[list[dict], list[dict]]:
    inputs = [_tensor(plan.values[i], f"input{n}") for n, i in enumerate(plan.inputs)]
    outputs = [_tensor(plan.values[i], f"output{n}") for n, i in enumerate(plan.outputs)]
    return inputs, outputs


def fixed_batch(inputs: list[dict]) -> int | None:
    """The batch of the first input when its shape is static (None: dynamic)."""
    if inputs and inputs[0]["shape"] and inputs[0]["dynamism"] == "static":
        return int(inputs[0]["shape"][0])
    return None


def decode_xnnpack(payload: bytes, header_cls) -> dict | None:
    """The XNNPACK graph of one delegate payload as JSON (None when it cannot be decoded here)."""
    from importlib import resources

    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    try:
        header = header_cls.from_bytes(payload[:header_cls.EXPECTED_LENGTH])
        if not header.is_valid():
            return None
        flatbuffer = payload[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
        schema = resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs").read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "schema.fbs").write_bytes(schema)
            (Path(tmp) / "graph.bin").write_bytes(flatbuffer)
            subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "-o", tmp,
                            str(Path(tmp) / "schema.fbs"), "--", str(Path(tmp) / "graph.bin")],
                           check=True, capture_output=True, timeout=120)
            return json.loads((Path(tmp) / "graph.json").read_text())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _datatype(value: dict) -> str:
    union = value.get("xvalue_union", {})
    tensor = union.get("tensor_value", union)
    return str(tensor.get("datatype", "?")).removeprefix("xnn_datatype_")


def xnnpack_partition(graph: dict) -> Partition:
    """Node types, the node types whose output is quantized (a Convert node counts as quantize or dequantize), and
    the tensor types of one decoded XNNPACK graph."""
    values = graph.get("xvalues", [])
    nodes = graph.get("xnodes", [])
    hist: Counter[str] = Counter()
    quantized: Counter[str] = Counter()
    for node in nodes:
        kind = str(node.get("xnode_union_type", "?")).removeprefix("XNN")
        hist[kind] += 1
        args = node.get("xnode_union", {})
        out = args.get("output_id")
        out_type = _datatype(values[out]) if isinstance(out, int) and out < len(values) else "?"
        if kind == "Convert":
            inp = args.get("input_id")
            in_type = _datatype(values[inp]) if isinstance(inp, int) and inp < len(values) else "?"
            if out_type in QUANTIZED_TYPES:
                quantized["Convert (quantize)"] += 1
            elif in_type in QUANTIZED_TYPES:
                quantized["Convert (dequantize)"] += 1
        elif out_type in QUANTIZED_TYPES:
            quantized[kind] += 1
    types = Counter(_datatype(v) for v in values)
    return Partition(XNNPACK, len(nodes), dict(hist.most_common()), dict(quantized.most_common()),
                     dict(types.most_common()))


def partitions_of(program, plan) -> list[Partition]:
    """The delegated partitions of one method (an XNNPACK one with its decoded graph)."""
    _, header_cls = _serialize_modules()
    partitions: list[Partition] = []
    for delegate in plan.delegates:
        partition = Partition(delegate.id)
        if delegate.id == XNNPACK:
            data = program.backend_delegate_data[delegate.processed.index].data
            graph = decode_xnnpack(bytes(data), header_cls)
            if graph is not None:
                partition = xnnpack_partition(graph)
        partitions.append(partition)
    return partitions


def portable_ops_of(plan) -> dict[str, int]:
    """The kernel calls outside every delegate (ExecuTorch's portable / optimized kernels), by op."""
    ops: Counter[str] = Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            if type(instruction.instr_args).__name__ == "KernelCall":
                op = plan.operators[instruction.instr_args.op_index]
                ops[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
    return dict(ops.most_common())


def program_summary(program) -> dict[str, Any]:
    """What the build records in the sidecar (and the report): partitions, delegated nodes, portable ops, quantized
    ops of ``forward``."""
    plan = forward_plan(program, METHOD)
    partitions = partitions_of(program, plan)
    portable = portable_ops_of(plan)
    quantized: Counter[str] = Counter()
    for p in partitions:
        quantized.update(p.quantized_ops)
    return {"partitions": len(partitions), "xnnpack_partitions": sum(p.backend == XNNPACK for p in partitions),
            "delegated_nodes": sum(p.nodes or 0 for p in partitions), "portable_ops": portable,
            "quantized_ops": dict(quantized.most_common()),
            "fully_delegated": len(partitions) == 1 and not portable}


def inspect_pte(path: str | Path) -> ProgramInfo:
    """ProgramInfo of a .pte (and its sidecar, when there is one)."""
    p = Path(path)
    program = read_program(p)
    plan = forward_plan(program, METHOD)
    inputs, outputs = io_of(plan)
    sidecar = read_sidecar(p)
    size = p.stat().st_size + (sidecar_path(p).stat().st_size if sidecar is not None else 0)
    build = {"program": sidecar.program, "quantization": sidecar.quantization} if sidecar is not None else {}
    return ProgramInfo(p, size, [e.name for e in program.execution_plan], inputs, outputs, fixed_batch(inputs),
                       partitions_of(program, plan), portable_ops_of(plan),
                       dict(sorted(sidecar.deploy_config.items())) if sidecar is not None else {}, build)
