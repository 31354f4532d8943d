"""PyTorch -> CoreML ML program (.mlpackage), from the SA-lowered model.

Float paths go torch.export(...).run_decompositions({}) -> ct.convert: tracing the SA layer with torch.jit.trace
fails in coremltools (shape-derived ints; measured with coremltools 9 + torch 2.13). Precision is data:
  fp32 / fp16            compute precision of the program
  int8-weights           fp16 program, weights int8 per-channel symmetric (linear_quantize_weights)
  palettize              fp16 program, weights as a 2**nbits lookup table (palettize_weights, uniform mode;
                         kmeans would need scikit-learn)
  w8a8                   int8 weights + activations, calibrated in PyTorch (coreml_w8a8), via torch.jit.trace
The batch is fixed at 1 (on-device use); the deploy config goes into user_defined_metadata ("sa_deploy.*", the same
keys as the ONNX metadata). coremltools is optional and imported lazily."""
from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.metadata import deploy_metadata, weights_sha256
from sa_deploy.models.deploy_config import DeployConfig, deploy_config_of
from sa_deploy.models.deploy_metadata import PREFIX, DeployMetadata
from sa_deploy.rewrite import lower_model
from sa_deploy.util.atomic import atomic_path
from sa_deploy.util.optional import require

PRECISIONS = ("fp32", "fp16", "int8-weights", "palettize", "w8a8")
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
DEFAULT_TARGET = "iOS16"
W8A8_MIN_TARGET = "iOS17"  # activation quantize/dequantize ops need iOS17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
WEIGHT_THRESHOLD = 512  # weights with fewer elements stay fp16 in the compressed variants


@dataclass
class CoreMLExport:
    path: Path
    model_name: str
    lowering: str
    precision: str
    input_size: int
    deployment_target: str
    image_input: bool
    classifier: bool
    size_bytes: int
    seconds: float
    op_histogram: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def import_coremltools(purpose: str = "CoreML export") -> Any:
    return require("coremltools", "coreml", purpose)


def _target(ct: Any, name: str, precision: str) -> Any:
    if name not in TARGETS:
        raise SADeployError(f"unknown deployment target '{name}'; choose one of: {', '.join(TARGETS)}")
    if precision == "w8a8" and name in ("iOS15", "iOS16", "macOS12", "macOS13"):
        raise SADeployError(f"w8a8 needs deployment target {W8A8_MIN_TARGET} or newer (got {name})")
    return getattr(ct.target, name)


def _compress(ct: Any, mlmodel: Any, precision: str, palettize_bits: int) -> Any:
    import coremltools.optimize.coreml as cto

    if precision == "int8-weights":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if precision == "palettize":
        op = cto.OpPalettizerConfig(mode="uniform", nbits=palettize_bits, weight_threshold=WEIGHT_THRESHOLD)
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    return mlmodel


def _convert(ct: Any, module: nn.Module, precision: str, example: torch.Tensor, inputs: list, outputs: list | None,
             classifier_config: Any, target: Any, calib_batches: Iterable[np.ndarray] | None) -> Any:
    kwargs = dict(inputs=inputs, outputs=outputs, classifier_config=classifier_config, convert_to="mlprogram",
                  minimum_deployment_target=target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if precision == "w8a8":
            from sa_deploy.backends.coreml.w8a8 import calibrate_w8a8, trace_for_coreml

            traced = trace_for_coreml(calibrate_w8a8(module, calib_batches or [], example), example)
            return ct.convert(traced, compute_precision=ct.precision.FLOAT16, **kwargs)
        program = torch.export.export(module, (example,)).run_decompositions({})
        fp = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
        return ct.convert(program, compute_precision=fp, **kwargs)


def op_histogram(mlmodel_spec: Any) -> dict[str, int]:
    fn = mlmodel_spec.mlProgram.functions["main"]
    return dict(Counter(op.type for op in fn.block_specializations[fn.opset].operations))


def export_coreml(model: nn.Module, path: str | Path, lowering: str = "fold", precision: str = "fp32",
                  calib: Iterable[np.ndarray] | None = None, image_input: bool = False, classifier: bool = False,
                  deployment_target: str | None = None, input_size: int | None = None,
                  palettize_bits: int = 4, deploy: DeployConfig | None = None) -> CoreMLExport:
    """Export a model to ``path`` (.mlpackage, written atomically). ``deploy``: the config to record (default:
    the model's own, from ``create_model``; required for a module that carries none).

    ``calib``: NCHW float32 batches, normalized with the model's preprocessing (required for w8a8)."""
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise SADeployError(f"a CoreML ML program is saved as a folder ending in .mlpackage (got {path.name})")
    if precision not in PRECISIONS:
        raise SADeployError(f"unknown CoreML precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if precision == "w8a8":
        from sa_deploy.backends.coreml.w8a8 import W8A8_LOWERINGS

        if lowering not in W8A8_LOWERINGS:
            raise SADeployError(f"w8a8 supports lowering {', '.join(W8A8_LOWERINGS)} only (torch.jit.trace of "
                                f"'{lowering}' keeps shape arithmetic coremltools cannot convert)")
        if calib is None:
            raise SADeployError("w8a8 needs calibration images (--calib DIR)")
    if palettize_bits not in (1, 2, 3, 4, 6, 8):
        raise SADeployError(f"palettize bits must be one of 1, 2, 3, 4, 6, 8 (got {palettize_bits})")
    ct = import_coremltools()
    target_name = deployment_target or (W8A8_MIN_TARGET if precision == "w8a8" else DEFAULT_TARGET)
    target = _target(ct, target_name, precision)
    deploy = (deploy or deploy_config_of(model)).with_input_size(input_size)
    preprocess = deploy.preprocess
    size = preprocess.input_size
    if classifier and not preprocess.class_names:
        raise SADeployError("a classifier output needs class names, and this model has none")

    start = time.perf_counter()
    module = lower_model(model, lowering, size)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    if image_input:
        from sa_deploy.backends.coreml.image import fold_input_std, image_input_type

        module = fold_input_std(module, preprocess)
        inputs = [image_input_type(ct, preprocess, INPUT_NAME)]
        # calibration batches are normalized; the folded model takes x*std
        std = np.asarray(preprocess.std, np.float32).reshape(1, 3, 1, 1)
        calib = None if calib is None else (b * std for b in calib)
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=(1, 3, size, size), dtype=np.float32)]
    classifier_config = ct.ClassifierConfig(list(preprocess.class_names)) if classifier else None
    outputs = None if classifier else [ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)]
    mlmodel = _convert(ct, module, precision, example, inputs, outputs, classifier_config, target, calib)
    mlmodel = _compress(ct, mlmodel, precision, palettize_bits)

    extra = {"format": "coreml", "input_size": size, "deployment_target": target_name, "batch": 1,
             "image_input": image_input, "classifier": classifier, "coremltools_version": ct.__version__,
             "weights_sha256": weights_sha256(model)}
    if precision == "palettize":
        extra["palettize_bits"] = palettize_bits
    meta = deploy_metadata(deploy, lowering, precision, extra)
    write_coreml_metadata(mlmodel, meta)
    config = meta.to_strings()
    mlmodel.short_description = f"{config['model']} ({lowering} lowering, {precision}) by sa-deploy"
    with atomic_path(path, owned=is_sa_deploy_mlpackage) as tmp:
        mlmodel.save(str(tmp))
    seconds = time.perf_counter() - start
    size_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return CoreMLExport(path, config["model"], lowering, precision, size, target_name, image_input, classifier,
                        size_bytes, seconds, op_histogram(mlmodel.get_spec()), config)


def write_coreml_metadata(mlmodel: Any, meta: DeployMetadata) -> None:
    """The CoreML writer: ``meta`` as the model's user metadata ``sa_deploy.<key>`` (sorted by key); the reader is
    mil_reader.read_mlpackage_metadata (no coremltools model load)."""
    mlmodel.user_defined_metadata.update({PREFIX + k: v for k, v in sorted(meta.to_strings().items())})


def is_sa_deploy_mlpackage(path: Path) -> bool:
    """Whether an existing .mlpackage folder is one sa-deploy wrote (and may replace): its model spec carries the
    ``sa_deploy.*`` deploy config in its user metadata."""
    if path.suffix != ".mlpackage" or not path.is_dir():
        return False
    try:
        return bool(read_coreml_metadata(path))
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def read_coreml_metadata(path: str | Path) -> dict[str, str]:
    """The ``sa_deploy.*`` deploy config of a saved .mlpackage in its stored string form (read from its spec; no
    coremltools model load). Typed: mil_reader.read_mlpackage_metadata."""
    from sa_deploy.backends.coreml.mil_reader import read_mlpackage

    return read_mlpackage(path).sa_deploy_strings
