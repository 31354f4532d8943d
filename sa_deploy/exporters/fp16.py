"""FP32 ONNX -> FP16 ONNX (FP32 inputs/outputs) with onnxconverter-common's float16 converter.

Ops in the block list stay FP32 (the converter inserts Casts around them). Default: onnxconverter-common's own
DEFAULT_OP_BLOCK_LIST (ops without fp16 kernels) plus InstanceNormalization: the SA gate normalises over H*W and
its variance in fp16 loses precision on large maps (measured, docs/precision.md); Sigmoid/Mul stay fp16."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import onnx

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import derived_metadata, is_sa_deploy_onnx, read_onnx_metadata, set_onnx_metadata
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.atomic import write_bytes_atomic

SA_FP32_OPS = ("InstanceNormalization",)


def default_block_list() -> list[str]:
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SA_FP32_OPS))


def convert_fp16(fp32_onnx: str | Path, out_path: str | Path, block_list: Iterable[str] | None = None,
                 preprocess: PreprocessConfig | None = None) -> Path:
    """Write an FP16 copy of ``fp32_onnx`` (atomic); ``block_list`` = op types kept in FP32 (None: default). The copy
    carries the source's deploy metadata with ``preprocess`` (when given) and a model name (see derived_metadata)."""
    from onnxconverter_common import float16

    from sa_deploy.exporters.inspect import load_onnx

    src = Path(fp32_onnx)
    model = load_onnx(src)
    meta = read_onnx_metadata(model)
    if meta.get("precision", "fp32") != "fp32":
        raise SADeployError(f"{src.name} is already {meta['precision']}; convert the FP32 export")
    blocked = default_block_list() if block_list is None else sorted(set(block_list))
    _unshare_initializers(model, set(blocked))
    half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    kept_fp32 = ",".join(op for op in blocked if any(n.op_type == op for n in model.graph.node)) or "none"
    set_onnx_metadata(half, {**meta, **derived_metadata(meta, src, preprocess), "precision": "fp16",
                             "fp16_fp32_ops": kept_fp32})
    onnx.checker.check_model(half)
    return write_bytes_atomic(out_path, half.SerializeToString(), owned=is_sa_deploy_onnx)


def _unshare_initializers(model: onnx.ModelProto, blocked: set[str]) -> None:
    """Give FP32-kept nodes their own copy of initializers they share with converted nodes.

    onnxsim deduplicates equal constants (e.g. a zero conv bias and a zero InstanceNorm scale); the converter then
    keeps the shared tensor FP32 for the blocked op and the FP16 Conv gets an FP32 input (invalid graph)."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                consumers.setdefault(name, []).append(node)
    for name, nodes in consumers.items():
        kept = [n for n in nodes if n.op_type in blocked]
        if not kept or len(kept) == len(nodes):
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp32"
        model.graph.initializer.append(copy)
        for node in kept:
            node.input[:] = [copy.name if i == name else i for i in node.input]
