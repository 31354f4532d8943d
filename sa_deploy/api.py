"""Python API mirroring the CLI: ``from sa_deploy.api import export, ...``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .exporters.coreml import CoreMLExport  # noqa: F401  (no coremltools import at module level)
from .exporters.onnx import OnnxExport, export_onnx, random_inputs
from .exporters.tensorrt import EngineBuild, build_engine  # noqa: F401  (re-exported; imports tensorrt lazily)
from .lint import LintReport, lint_onnx  # noqa: F401  (re-exported)
from .models import create_model  # noqa: F401  (re-exported)
from .runners import OnnxRuntimeRunner, TorchRunner
from .validate.parity import ParityStats, check_parity


@dataclass
class ExportResult:
    export: OnnxExport
    parity: list[ParityStats] = field(default_factory=list)


def onnx_parity(model: nn.Module, path: str | Path, input_size: int, batches: tuple[int, ...] = (1, 3),
                precision: str = "fp32") -> list[ParityStats]:
    """Parity of an ONNX file vs the PyTorch model at several batch sizes through the same file."""
    inputs = [random_inputs(input_size, b, seed=100 + b) for b in batches]
    with OnnxRuntimeRunner(path) as runner:
        return check_parity(runner, TorchRunner(model), inputs, precision)


def export(model: nn.Module, out_dir: str | Path, lowering: str = "fold", input_size: int | None = None,
           simplify: bool = True, parity: bool = True, filename: str | None = None) -> ExportResult:
    """Export ``model`` (from ``create_model``) to ``out_dir/<model>_<lowering>.onnx`` and check parity."""
    name = getattr(model, "sa_name", type(model).__name__)
    path = Path(out_dir) / (filename or f"{name}_{lowering}.onnx")
    exp = export_onnx(model, path, lowering, input_size, simplify)
    stats = onnx_parity(model, path, exp.input_size) if parity else []
    return ExportResult(exp, stats)


@dataclass
class CoreMLResult:
    export: CoreMLExport
    parity: list[ParityStats] = field(default_factory=list)
    runner: str = ""  # "coreml" (MLModel.predict, macOS) or "coreml-reference" (numpy MIL executor)


def coreml_parity(model: nn.Module, path: str | Path, input_size: int, precision: str = "fp32",
                  inputs: list | None = None, backend: str = "auto") -> tuple[list[ParityStats], str]:
    """Parity of an .mlpackage vs the PyTorch model through the common runner interface (tolerance class from
    the CoreML precision: fp32, fp16, or int8 for the compressed variants)."""
    from .exporters.coreml import PARITY_CLASS
    from .runners.coreml import CoreMLRunner

    inputs = inputs if inputs is not None else [random_inputs(input_size, 4, seed=104)]
    with CoreMLRunner(path, backend) as runner:
        stats = check_parity(runner, TorchRunner(model), inputs, PARITY_CLASS[precision])
        return stats, runner.name


def export_coreml(model: nn.Module, out_dir: str | Path, precision: str = "fp32", lowering: str = "fold",
                  calib: "str | Path | object | None" = None, calib_num: int = 256, image_input: bool = False,
                  classifier: bool = False, deployment_target: str | None = None, input_size: int | None = None,
                  parity: bool = True, parity_inputs: list | None = None,
                  filename: str | None = None) -> CoreMLResult:
    """Export ``model`` to ``out_dir/<model>_<lowering>_<precision>.mlpackage`` and check parity.

    ``calib`` (w8a8): an image folder / .npz path, a source with ``batches(bs)`` (calibration.sources), or NCHW
    float batches.
    ``parity_inputs``: NCHW float batches (default: one random batch of 4; for image-input models pass inputs made
    from real uint8 images if the check runs on macOS)."""
    from .calibration.sources import open_source
    from .exporters.coreml import export_coreml as _export

    preprocess = model.preprocess if input_size is None else model.preprocess.with_input_size(input_size)
    batches = None
    if isinstance(calib, (str, Path)):
        calib = open_source(calib, preprocess, num=calib_num)
    if hasattr(calib, "batches"):
        batches = [x for x, _ in calib.batches(32)]
    elif calib is not None:  # already NCHW float batches
        batches = list(calib)
    name = getattr(model, "sa_name", type(model).__name__)
    path = Path(out_dir) / (filename or f"{name}_{lowering}_{precision}.mlpackage")
    exp = _export(model, path, lowering, precision, batches, image_input, classifier, deployment_target, input_size)
    if not parity:
        return CoreMLResult(exp)
    stats, runner = coreml_parity(model, path, exp.input_size, precision, parity_inputs)
    return CoreMLResult(exp, stats, runner)
