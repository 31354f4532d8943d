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
# --- precision: INT8 / FP16 artifacts and their accuracy -----------------------------------------------------------

def deploy_preprocess(onnx_path: str | Path):
    """The PreprocessConfig an artifact carries in its metadata (one-line error if it has none)."""
    import onnx

    from .errors import SADeployError
    from .exporters.metadata import preprocess_from_metadata, read_onnx_metadata

    p = Path(onnx_path)
    if not p.is_file():
        raise SADeployError(f"ONNX model not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        raise SADeployError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from None
    cfg = preprocess_from_metadata(read_onnx_metadata(model))
    if cfg is None:
        raise SADeployError(f"{p.name} has no sa-deploy preprocessing metadata; export it with `sa-deploy export`")
    return cfg


def quantize(fp32_onnx: str | Path, calib: str | Path, out: str | Path | None = None, method: str = "entropy",
             flavour: str = "tensorrt", num: int | None = 500, exclude_nodes: tuple[str, ...] = (),
             cache_dir: str | Path | None = None, keep_sa_gate_float: bool | None = None):
    """INT8 Q/DQ ONNX from an FP32 export, calibrated on ``calib`` (image folder or .npz) -> QuantizeResult.
    ``keep_sa_gate_float`` None: the flavour's default (float gate for tensorrt, quantized for cpu)."""
    from .calibration.int8 import quantize_int8
    from .calibration.sources import open_source

    fp32_onnx = Path(fp32_onnx)
    source = open_source(calib, deploy_preprocess(fp32_onnx), num=num)
    out = Path(out) if out else fp32_onnx.with_name(f"{fp32_onnx.stem}_int8_{flavour}_{method}.onnx")
    return quantize_int8(fp32_onnx, out, source, method, flavour, exclude_nodes, cache_dir, keep_sa_gate_float)


def fp16(fp32_onnx: str | Path, out: str | Path | None = None, block_list: list[str] | None = None) -> Path:
    """FP16 ONNX (FP32 inputs/outputs) from an FP32 export -> its path."""
    from .exporters.fp16 import convert_fp16

    fp32_onnx = Path(fp32_onnx)
    deploy_preprocess(fp32_onnx)  # same one-line errors as quantize for a missing / foreign file
    return convert_fp16(fp32_onnx, out or fp32_onnx.with_name(f"{fp32_onnx.stem}_fp16.onnx"), block_list)


def validate(model: nn.Module, data: str | Path, artifacts: list[str | Path], max_drop: float | None = None,
             num: int | None = None, batch_size: int = 64, progress: bool = True, threads: int | None = None):
    """Top-1/top-5 of PyTorch FP32 and each artifact on labeled images, drop vs PyTorch, parity ->
    ValidationReport (call ``report.raise_if_failed()`` for the budget gate)."""
    from .calibration.sources import open_source
    from .validate.accuracy import validate_artifacts

    source = open_source(data, model.preprocess, num=num)
    return validate_artifacts(TorchRunner(model, threads), artifacts, source, max_drop, batch_size, progress,
                              threads=threads)


def int8_fallback(model: nn.Module, fp32_onnx: str | Path, int8_onnx: str | Path, data: str | Path,
                  calib: str | Path, max_drop: float = 1.0, num: int | None = None, calib_num: int | None = 500,
                  out: str | Path | None = None, cache_dir: str | Path | None = None, max_rounds: int = 5):
    """Re-quantize ``int8_onnx`` (same method/flavour) keeping its worst-SQNR nodes in float until its top-1 drop
    on ``data`` is within ``max_drop`` -> FallbackResult."""
    import json

    import onnx

    from .calibration.sensitivity import auto_fallback
    from .calibration.sources import open_source
    from .exporters.metadata import read_onnx_metadata
    from .validate.accuracy import predict, topk_accuracy

    meta = read_onnx_metadata(onnx.load(str(int8_onnx), load_external_data=False))
    eval_src = open_source(data, model.preprocess, num=num)
    ref = predict(TorchRunner(model), eval_src, desc="pytorch fp32")
    top1_ref = topk_accuracy(ref.logits, ref.labels, 1)

    def drop_of(path: Path) -> float:
        with OnnxRuntimeRunner(path) as runner:
            pred = predict(runner, eval_src, desc=path.name)
        return top1_ref - topk_accuracy(pred.logits, pred.labels, 1)

    int8_onnx = Path(int8_onnx)
    out = Path(out) if out else int8_onnx.with_name(f"{int8_onnx.stem}_fallback.onnx")
    cfg = deploy_preprocess(fp32_onnx)
    calib_src = open_source(calib, cfg, num=calib_num)
    if meta.get("calibration_fingerprint") and meta["calibration_fingerprint"] != calib_src.fingerprint():
        import warnings

        warnings.warn(f"--calib differs from the data {int8_onnx.name} was calibrated on; the fallback "
                      "re-calibrates on --calib", stacklevel=2)
    sens_src = open_source(calib, cfg, num=64)  # SQNR needs few images; it runs both graphs on each
    return auto_fallback(fp32_onnx, out, calib_src, drop_of, max_drop, meta.get("calibration_method", "entropy"),
                         meta.get("int8_flavour", "tensorrt"), json.loads(meta.get("float_nodes", "[]")),
                         cache_dir, max_rounds=max_rounds, sensitivity_source=sens_src)
