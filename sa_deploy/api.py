"""Python API mirroring the CLI: ``from sa_deploy.api import export, ...``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

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
