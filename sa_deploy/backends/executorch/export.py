"""PyTorch -> ExecuTorch program (.pte) with the XNNPACK delegate, FP32 or INT8, plus its JSON sidecar.

The lowered module (sa_deploy.rewrite, ``fold`` by default) with the SA gate in its XNNPACK form (``explicit-norm``:
the InstanceNorm written as mean / subtract / multiply / rsqrt, rewrite/explicit_norm.py) -> ``torch.export`` ->
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` -> ``to_executorch()`` -> .pte. With the
gate as ``F.instance_norm`` ExecuTorch lowers it to ops XNNPACK does not take and the graph splits into one
partition per gate and more (``gate_form="instance-norm"`` keeps that form, for comparisons).

INT8 is PT2E with the XNNPACK quantizer (int8 weights symmetric per output channel, int8 per-tensor activations
observed by histogram): ``prepare_pt2e`` on the exported module, calibration on the run's calibration images (the
same images, preprocessing and count as the ONNX INT8 path), ``convert_pt2e``, then the same lowering; XNNPACK runs
the quantized convolutions, adds and multiplies in int8. The batch is fixed at 1 (on-device use; the runner loops
over a batch). executorch is optional and imported lazily."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from sa_deploy.backends.executorch.inspect import METHOD, XNNPACK, program_summary
from sa_deploy.backends.executorch.sidecar import make_sidecar, write_program
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import deploy_metadata, weights_sha256
from sa_deploy.models.deploy_config import DeployConfig, deploy_config_of
from sa_deploy.rewrite import SAGate, lower
from sa_deploy.rewrite.explicit_norm import FORM as EXPLICIT_NORM
from sa_deploy.rewrite.explicit_norm import explicit_norm_gates
from sa_deploy.util.optional import require

PRECISIONS = ("fp32", "int8")
GATE_FORMS = (EXPLICIT_NORM, "instance-norm")
QUANTIZER = "XNNPACKQuantizer (PT2E)"
INT8_SCHEME = "int8 weights symmetric per-channel, int8 activations per-tensor (histogram observer)"
CALIB_BATCH = 32


@dataclass
class ExecuTorchExport:
    path: Path
    sidecar: Path
    model_name: str
    lowering: str
    precision: str
    gate_form: str
    input_size: int
    size_bytes: int
    seconds: float
    program: dict[str, Any] = field(default_factory=dict)  # partitions, portable ops, quantized ops
    quantization: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def import_executorch(purpose: str = "ExecuTorch export") -> Any:
    return require("executorch", "executorch", purpose)


def executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch").split("+")[0]


def quantize_pt2e(module: nn.Module, example: torch.Tensor, calib: Iterable[np.ndarray]) -> tuple[nn.Module, int]:
    """The module quantized for XNNPACK by PT2E (prepare, calibrate, convert) -> (quantized module, images seen).
    Calibration runs in batches: the module is captured with a dynamic batch for it (image by image where the
    module's batch cannot be dynamic)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        captured = torch.export.export(module, (torch.cat([example, example]),),
                                       dynamic_shapes=({0: batch},)).module()
        step = CALIB_BATCH
    except Exception:  # noqa: BLE001 - a module that fixes its batch: captured at batch 1, calibrated image by image
        captured, step = torch.export.export(module, (example,)).module(), 1
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(captured, quantizer)
    seen = 0
    with torch.no_grad():
        for x in calib:
            x = np.ascontiguousarray(x, dtype=np.float32)
            for start in range(0, len(x), step):
                prepared(torch.from_numpy(x[start:start + step]))
            seen += len(x)
    if not seen:
        raise SADeployError("ExecuTorch INT8 needs calibration images (none were given)")
    return convert_pt2e(prepared), seen


def lower_to_xnnpack(module: nn.Module, example: torch.Tensor) -> bytes:
    """torch.export -> to_edge_transform_and_lower with the XNNPACK partitioner -> the .pte bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, (example,))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer)


def export_executorch(model: nn.Module, path: str | Path, precision: str = "fp32",
                      calib: Iterable[np.ndarray] | None = None, lowering: str = "fold",
                      gate_form: str = EXPLICIT_NORM, input_size: int | None = None,
                      deploy: DeployConfig | None = None) -> ExecuTorchExport:
    """Export ``model`` to ``path`` (.pte, with ``path``.json beside it; both written atomically, each replacing
    only sa-deploy's own file). ``calib``: NCHW float32 batches preprocessed with the model's config (INT8).
    ``deploy``: the config to record (default: the model's own)."""
    path = Path(path)
    if path.suffix != ".pte":
        raise SADeployError(f"an ExecuTorch program is saved as a file ending in .pte (got {path.name})")
    if precision not in PRECISIONS:
        raise SADeployError(f"unknown ExecuTorch precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if gate_form not in GATE_FORMS:
        raise SADeployError(f"unknown SA gate form '{gate_form}'; choose one of: {', '.join(GATE_FORMS)}")
    if precision == "int8" and calib is None:
        raise SADeployError("ExecuTorch INT8 needs calibration images")
    import_executorch()
    deploy = (deploy or deploy_config_of(model)).with_input_size(input_size)
    size = deploy.preprocess.input_size
    start = time.perf_counter()
    lowered = lower(model, lowering, size)
    module = lowered.module.eval()
    gates = sum(isinstance(m, SAGate) for m in module.modules())
    if gate_form == EXPLICIT_NORM:
        explicit_norm_gates(module)
    form = gate_form if gates else "none (no SA gate)"
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    quantization = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if precision == "int8":
            module, seen = quantize_pt2e(module, example, calib or [])
            quantization = {"quantizer": QUANTIZER, "scheme": INT8_SCHEME, "calibration_count": seen,
                            "source": "the model (not the ONNX Q/DQ file)"}
        pte_bytes = lower_to_xnnpack(module, example)
    from executorch.exir._serialize._program import deserialize_pte_binary

    summary = program_summary(deserialize_pte_binary(pte_bytes).program)
    program = {"backend": XNNPACK, "method": METHOD, "batch": 1, "input_shape": [1, 3, size, size], **summary}
    extra: dict[str, Any] = {"format": "executorch", "input_size": size, "batch": 1, "delegate": "xnnpack",
                             "sa_gate_form": form, "executorch_version": executorch_version(),
                             "weights_sha256": weights_sha256(model)}
    if quantization:
        extra.update(calibration_method="histogram", calibration_count=quantization["calibration_count"],
                     int8_quantizer=QUANTIZER, int8_scheme=INT8_SCHEME)
    meta = deploy_metadata(deploy, lowering, precision, extra)
    seconds = time.perf_counter() - start
    sidecar = make_sidecar(meta, pte_bytes, program, quantization, seconds)
    side = write_program(path, pte_bytes, sidecar)
    config = meta.to_strings()
    return ExecuTorchExport(path, side, config["model"], lowering, precision, form, size,
                            len(pte_bytes) + side.stat().st_size, seconds, program, quantization, config)
