"""PyTorch -> ONNX (opset 17, input ``input``, output ``logits``, dynamic batch), simplified, checked, atomic.

We use the TorchScript exporter (``dynamo=False``): on torch 2.13 the dynamo exporter emits opset 18 and its
down-conversion to 17 fails on ReduceMean; our lowered graphs have no b*groups arithmetic, so the TorchScript
exporter gives a graph without Shape/Gather chains after onnxsim. Opset 17, not 18+: GroupNormalization-18 has a
spec bug and onnxruntime lacks GroupNormalization-21."""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import deploy_config, is_sa_deploy_onnx, set_onnx_metadata, weights_sha256
from sa_deploy.exporters.simplify import simplify as simplify_model
from sa_deploy.models.deploy_config import DeployConfig, deploy_config_of
from sa_deploy.rewrite import LayerLowering, Lowered, ModuleLowering, lower
from sa_deploy.util.atomic import write_bytes_atomic

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class OnnxExport:
    path: Path
    model_name: str
    lowering: str
    input_size: int
    nodes: int
    size_bytes: int
    simplify_note: str
    metadata: dict[str, str] = field(default_factory=dict)
    sa_layers: list[LayerLowering] = field(default_factory=list)  # what each SA layer became
    lowering_summary: str = ""
    attention_modules: list[ModuleLowering] = field(default_factory=list)  # SE/CBAM/ECA/GC -> their deploy forms


def example_input(input_size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    # batch >= 2 so that the batch dimension is not specialised to 1 during tracing
    return torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))


def to_onnx_model(module: nn.Module, input_size: int, opset: int = OPSET) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example_input(input_size),), buf, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except torch.onnx.errors.OnnxExporterError as exc:  # e.g. an op with no ONNX form (aten::channel_shuffle)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise SADeployError(f"torch.onnx cannot export {type(module).__name__}: {first}") from None
    return onnx.load_from_string(buf.getvalue())


def onnx_graph(model: nn.Module, lowering: str, input_size: int,
               simplify: bool = True) -> tuple[onnx.ModelProto, Lowered, str]:
    """The lowered model's ONNX graph in memory (no metadata, not written): (graph, what the lowering did, the
    simplifier's note)."""
    lowered = lower(model, lowering, input_size)
    onnx_model = to_onnx_model(lowered.module, input_size)
    note = "not simplified (--no-simplify)"
    if simplify:
        onnx_model, note = simplify_model(onnx_model, example_input(input_size, seed=1).numpy())
    return onnx_model, lowered, note


def export_onnx(model: nn.Module, path: str | Path, lowering: str = "fold", input_size: int | None = None,
                simplify: bool = True, deploy: DeployConfig | None = None) -> OnnxExport:
    """Export a model with the chosen SA lowering; the file is written atomically. ``deploy``: the config to
    record (default: the model's own, from ``create_model``; required for a module that carries none)."""
    deploy = (deploy or deploy_config_of(model)).with_input_size(input_size)
    preprocess = deploy.preprocess
    size = preprocess.input_size
    onnx_model, lowered, note = onnx_graph(model, lowering, size, simplify)
    extra = {"opset": OPSET, "input_size": size, "weights_sha256": weights_sha256(model),
             "sa_layers": json.dumps([layer.to_dict() for layer in lowered.layers], separators=(",", ":"))}
    if lowered.modules:  # only models with SE/CBAM/ECA/GC modules carry the key
        extra["attention_modules"] = json.dumps([m.to_dict() for m in lowered.modules], separators=(",", ":"))
    config = deploy_config(deploy, lowering, "fp32", extra)
    set_onnx_metadata(onnx_model, config)
    onnx_model.producer_name = "sa-deploy"
    onnx_model.producer_version = config["sa_deploy_version"]
    onnx.checker.check_model(onnx_model, full_check=True)
    data = onnx_model.SerializeToString()
    write_bytes_atomic(path, data, owned=is_sa_deploy_onnx)
    return OnnxExport(Path(path), config["model"], lowering, size, len(onnx_model.graph.node), len(data), note,
                      config, lowered.layers, lowered.summary(), lowered.modules)


def file_input_size(model: onnx.ModelProto) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].dim_value else 0


def random_inputs(input_size: int, batch: int, seed: int = 0) -> np.ndarray:
    return example_input(input_size, batch, seed).numpy()
