"""Python API mirroring the CLI: ``from sa_deploy.api import export, ...``.

This is the one orchestration surface: the CLI commands and every stage of ``sa-deploy run`` (pipeline.py) call
these functions, so an artifact is named, built, checked and validated the same way whichever door it came in by."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sa_deploy.backends import OnnxRuntimeRunner, TorchRunner
from sa_deploy.backends.coreml.export import CoreMLExport  # noqa: F401  (no coremltools import at module level)
from sa_deploy.backends.lint_report import LintReport  # noqa: F401  (re-exported)
from sa_deploy.backends.trt.build import EngineBuild, build_engine  # noqa: F401  (re-exported; lazy tensorrt)
from sa_deploy.backends.trt.lint import lint_onnx as lint_tensorrt
from sa_deploy.errors import ParityError, SADeployError
from sa_deploy.exporters.checks import check_finite_weights
from sa_deploy.exporters.metadata import is_sa_deploy_onnx
from sa_deploy.exporters.onnx import OnnxExport, export_onnx, random_inputs
from sa_deploy.exporters.preprocess_flags import PreprocessOverrides
from sa_deploy.models import create_model  # noqa: F401  (re-exported)
from sa_deploy.models.deploy_config import deploy_config_of
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.naming import artifact_name, derived_path  # noqa: F401  (re-exported)
from sa_deploy.util.atomic import atomic_path, check_writable
from sa_deploy.validate.parity import ParityStats, check_parity


def lint_onnx(path: str | Path, max_batch: int | None = None, target: str = "tensorrt") -> LintReport:
    """Offline lint of an ONNX file for a deployment target: ``tensorrt`` (will TensorRT parse and build it with our
    INT8/FP16 conventions) or ``cpu`` (can its int8 nodes saturate int16 pair sums on x86 without VNNI)."""
    if target == "cpu":
        from sa_deploy.backends.cpu_lint import lint_cpu_overflow

        return lint_cpu_overflow(path)
    return lint_tensorrt(path, max_batch=max_batch)


@dataclass
class ExportResult:
    export: OnnxExport
    parity: list[ParityStats] = field(default_factory=list)


def onnx_parity(model: nn.Module, path: str | Path, input_size: int, batches: tuple[int, ...] = (1, 3),
                precision: str = "fp32") -> list[ParityStats]:
    """Parity of an ONNX file vs the PyTorch model at several batch sizes through the same file."""
    inputs = [random_inputs(input_size, b, seed=100 + b) for b in batches]
    with OnnxRuntimeRunner(path) as runner, TorchRunner(model) as reference:
        return check_parity(runner, reference, inputs, precision)


def check_output(path: str | Path) -> Path:
    """The rule for every file sa-deploy writes, checked ahead (e.g. for a whole run before it starts): not a
    folder (unless one of our .mlpackages), not under a file, and if it exists, a file sa-deploy wrote, judged by
    the writer of its kind (see util.atomic)."""
    from sa_deploy.backends import output_backend
    from sa_deploy.report.render import owned_report_file

    p = Path(path)
    backend = output_backend(p)  # an artifact (or companion) of a registered runtime: its manager knows its files
    return check_writable(p, backend.owned_output if backend is not None else owned_report_file)


def require_parity(stats: list[ParityStats], path: Path) -> None:
    """ParityError (exit 3) naming the first failing batch, unless every comparison passed."""
    bad = [s for s in stats if not s.passed]
    if bad:
        raise ParityError(f"parity check failed for {path.name} at batch {bad[0].batch}: {bad[0].reason()}; "
                          f"{path.name} was not written", stats)


def export(model: nn.Module, out_dir: str | Path, lowering: str = "fold", input_size: int | None = None,
           simplify: bool = True, parity: bool = True, filename: str | None = None,
           preprocess: PreprocessConfig | None = None, name: str | None = None) -> ExportResult:
    """Export ``model`` to ``out_dir/<name>_<lowering>.onnx`` and check parity. ``model``: from ``create_model``,
    or any nn.Module with SA layers anywhere, given its ``preprocess`` (required when it carries none) and
    optionally a ``name`` (default: its class name). ``result.export.sa_layers`` says what each SA layer became.

    With ``parity`` the file is checked against PyTorch before it is put in place: when it fails, ParityError
    (``.stats``) is raised and no file is left behind."""
    deploy = deploy_config_of(model, preprocess, name)
    path = Path(out_dir) / (filename or artifact_name(deploy.name, lowering, suffix=".onnx"))
    check_writable(path, is_sa_deploy_onnx)  # before the export's work, not after it
    if not parity:
        return ExportResult(export_onnx(model, path, lowering, input_size, simplify, deploy))
    with atomic_path(path, owned=is_sa_deploy_onnx) as tmp:
        exp = export_onnx(model, tmp, lowering, input_size, simplify, deploy)
        stats = onnx_parity(model, tmp, exp.input_size)
        require_parity(stats, path)
    exp.path = path
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
    from sa_deploy.backends.coreml.runner import CoreMLRunner

    inputs = inputs if inputs is not None else [random_inputs(input_size, 4, seed=104)]
    with CoreMLRunner(path, backend) as runner, TorchRunner(model) as reference:
        stats = check_parity(runner, reference, inputs, precision)
        return stats, runner.name


def _batches(calib: Any, preprocess, num: int | None) -> list | None:
    """NCHW float batches from an image folder / .npz path / ``embedded``, a source with ``batches(bs)``, or batches
    as given."""
    from sa_deploy.data.resolve import open_images

    if calib is None:
        return None
    if isinstance(calib, (str, Path)):
        calib = open_images(calib, preprocess, num=num, split="calib")
    if hasattr(calib, "batches"):
        return [x for x, _ in calib.batches(32)]
    return list(calib)


def export_coreml(model: nn.Module, out_dir: str | Path, precision: str = "fp32", lowering: str = "fold",
                  calib: "str | Path | object | None" = None, calib_num: int = 256, image_input: bool = False,
                  classifier: bool = False, deployment_target: str | None = None, input_size: int | None = None,
                  parity: bool = True, parity_inputs: list | None = None, filename: str | None = None,
                  preprocess: PreprocessConfig | None = None, name: str | None = None) -> CoreMLResult:
    """Export ``model`` to ``out_dir/<name>_<lowering>_<precision>.mlpackage`` and check parity. ``model``,
    ``preprocess`` and ``name`` as for ``export`` (any nn.Module given its preprocessing).

    ``calib`` (w8a8): an image folder / .npz path, a source with ``batches(bs)`` (data.sources), or NCHW
    float batches.
    ``parity_inputs``: NCHW float batches (default: one random batch of 4; for image-input models pass inputs made
    from real uint8 images if the check runs on macOS). A parity failure raises ParityError and leaves no package."""
    from sa_deploy.backends.coreml.export import export_coreml as _export
    from sa_deploy.backends.coreml.export import is_sa_deploy_mlpackage

    deploy = deploy_config_of(model, preprocess, name).with_input_size(input_size)
    path = Path(out_dir) / (filename or artifact_name(deploy.name, lowering, precision, suffix=".mlpackage"))
    check_writable(path, is_sa_deploy_mlpackage)
    batches = _batches(calib, deploy.preprocess, calib_num)
    if not parity:
        return CoreMLResult(_export(model, path, lowering, precision, batches, image_input, classifier,
                                    deployment_target, input_size, deploy=deploy))
    with atomic_path(path, owned=is_sa_deploy_mlpackage) as tmp:  # checked before it is put in place
        exp = _export(model, tmp, lowering, precision, batches, image_input, classifier, deployment_target,
                      input_size, deploy=deploy)
        stats, runner = coreml_parity(model, tmp, exp.input_size, precision, parity_inputs)
        require_parity(stats, path)
    exp.path = path
    return CoreMLResult(exp, stats, runner)


@dataclass
class OpenVINOResult:
    export: Any  # backends.openvino.export.OpenVINOExport
    parity: list[ParityStats] = field(default_factory=list)  # vs the source ONNX on onnxruntime
    onnx: ExportResult | None = None  # the ONNX export made first when the source was an nn.Module


def openvino_parity(ir_path: str | Path, source_onnx: str | Path, precision: str, input_size: int,
                    precision_hint: str = "f32", batches: tuple[int, ...] = (1, 3)) -> list[ParityStats]:
    """Parity of an IR (OpenVINO CPU, ``precision_hint``) vs the ONNX file it came from (onnxruntime), at several
    batch sizes through the same dynamic-batch IR; the tolerance class is the IR's precision."""
    from sa_deploy.backends.openvino.runner import OpenVINORunner

    inputs = [random_inputs(input_size, b, seed=200 + b) for b in batches]
    with OpenVINORunner(ir_path, precision_hint=precision_hint) as runner, OnnxRuntimeRunner(source_onnx) as ref:
        return check_parity(runner, ref, inputs, precision)


def export_openvino(source: str | Path | nn.Module, out: str | Path | None = None, fp16_weights: bool = False,
                    parity: bool = True, preprocess: "PreprocessConfig | PreprocessOverrides | dict | None" = None,
                    name: str | None = None, lowering: str = "fold", input_size: int | None = None) -> OpenVINOResult:
    """OpenVINO IR (.xml + .bin) from an sa-deploy ONNX file: FP32, FP32 with ``fp16_weights`` (compressed), or
    INT8 from a Q/DQ ONNX. Default output beside the ONNX: ``<stem>_fp32.xml`` / ``<stem>_fp16.xml``, and
    ``<stem>.xml`` for a Q/DQ file (its name already says int8). Parity is checked against the source ONNX.

    For an ONNX file sa-deploy did not write, ``preprocess`` (overrides, as for ``quantize``) is recorded in the IR;
    none is needed (parity uses the graph's fixed H/W, or ``preprocess``'s input size).

    ``source`` may also be a model (``create_model``, or any nn.Module with a PreprocessConfig ``preprocess`` and a
    ``name`` as for ``export``): it is exported to ``<out>/<name>_<lowering>.onnx`` first (``out`` is then a folder,
    default ``out``; parity vs PyTorch) and the IR is made from that file (``result.onnx``)."""
    from sa_deploy.backends.openvino.export import convert_onnx

    if isinstance(source, nn.Module):
        onnx_result = export(source, out if out is not None else "out", lowering, input_size, preprocess=preprocess,
                             name=name, parity=parity)
        result = export_openvino(onnx_result.export.path, None, fp16_weights, parity)
        result.onnx = onnx_result
        return result
    from sa_deploy.exporters.inspect import image_input, load_onnx
    from sa_deploy.exporters.metadata import read_onnx_metadata
    from sa_deploy.exporters.preprocess_flags import resolve_preprocess

    onnx_path = Path(source)
    model = load_onnx(onnx_path)  # read once: preprocessing, input size and precision all come from it
    cfg = resolve_preprocess(model, onnx_path.name, preprocess, required=False).config
    size = cfg.input_size if cfg is not None else image_input(model, onnx_path.name)[1]
    if size is None:
        raise SADeployError(f"{onnx_path.name} has a dynamic H/W and no sa-deploy preprocessing: pass --input-size S "
                            "(and --mean/--std to record the preprocessing in the IR)")
    if out is None:
        int8 = read_onnx_metadata(model).get("precision") == "int8"
        out = derived_path(onnx_path, "" if int8 else ("fp16" if fp16_weights else "fp32"), suffix=".xml")
    exp = convert_onnx(onnx_path, out, fp16_weights, cfg)
    stats = openvino_parity(exp.path, onnx_path, exp.precision, size) if parity else []
    return OpenVINOResult(exp, stats)


# --- precision: INT8 / FP16 artifacts and their accuracy -----------------------------------------------------------

def deploy_preprocess(onnx_path: str | Path, overrides: PreprocessOverrides | dict | None = None,
                      required: bool = True):
    """The PreprocessConfig for an ONNX file, the file checked where it enters (a valid ONNX model whose one input is
    a float (N, 3, S, S) image): its sa-deploy metadata with each field given in ``overrides`` (a
    PreprocessOverrides or a dict of PreprocessConfig fields) replacing that field; for a file sa-deploy did not
    write, the overrides alone (``mean`` and ``std`` required; ``input_size`` defaults to the graph's fixed H/W).
    ``required`` False: None when the file has no metadata and nothing is given. One-line errors otherwise."""
    return preprocess_of(onnx_path, overrides, required).config


def preprocess_of(onnx_path: str | Path, overrides: PreprocessOverrides | dict | None = None,
                  required: bool = True, derived: tuple[str | Path, ...] = ()):
    """deploy_preprocess with where the result came from (ResolvedPreprocess: ``config``, ``origin``). ``derived``:
    files made from this one (INT8/FP16 artifacts): when this file carries no preprocessing, the one they carry
    (when they agree) stands in for its metadata."""
    from sa_deploy.exporters.inspect import load_onnx
    from sa_deploy.exporters.preprocess_flags import resolve_preprocess

    p = Path(onnx_path)
    return resolve_preprocess(load_onnx(p), p.name, overrides, required, _carried_preprocess(derived))


def _carried_preprocess(paths: tuple[str | Path, ...]):
    """(config, origin) of the preprocessing the ONNX files among ``paths`` carry, when they carry one and agree;
    else None (models.preprocess_resolver.agreeing)."""
    from sa_deploy.backends import find_backend
    from sa_deploy.exporters.inspect import load_onnx
    from sa_deploy.exporters.metadata import onnx_metadata
    from sa_deploy.models.preprocess_resolver import agreeing

    carried = []
    for a in map(Path, paths):
        if a.is_file() and getattr(find_backend(a), "name", None) == "onnxruntime":
            try:
                model = load_onnx(a)
            except SADeployError:  # an unreadable artifact gets its own error where it is checked
                continue
            carried.append((onnx_metadata(model, a.name).preprocess, a.name))
    return agreeing(carried)


def _output_for(source: Path, out: str | Path | None, *parts: str) -> Path:
    """Where a file converted from ``source`` goes, checked before any work: not the source itself, not a folder,
    not a file sa-deploy did not write."""
    path = Path(out) if out else derived_path(source, *parts)
    if path.exists() and path.resolve() == source.resolve():
        raise SADeployError(f"--out {path} is the input file itself; pass another path")
    check_writable(path, is_sa_deploy_onnx)
    return path


def _source(data: Any, preprocess, num: int | None, split: str = "val", labels: str | Path | None = None):
    """The source (data.sources.Source) of ``data``: a path (class folders, a flat folder + ``labels`` file, .npz,
    or ``embedded``: the embedded sample's ``split``), arrays in memory (uint8 images N,H,W,3 or float inputs
    N,3,H,W; with labels as an ``(x, labels)`` pair or an .npz-style dict), or a source; data.resolve decides."""
    from sa_deploy.data.resolve import open_images

    return open_images(data, preprocess, num=num, split=split, labels=labels)


def quantize(fp32_onnx: str | Path, calib: Any, out: str | Path | None = None, method: str = "entropy",
             flavour: str = "tensorrt", num: int | None = 500, exclude_nodes: tuple[str, ...] = (),
             cache_dir: str | Path | None = None, keep_sa_gate_float: bool | None = None,
             preprocess: PreprocessOverrides | dict | None = None, weight_bits: int | None = None):
    """INT8 Q/DQ ONNX from an FP32 ONNX file, calibrated on ``calib`` (image folder, .npz, or a source object)
    -> QuantizeResult. ``keep_sa_gate_float`` None: the flavour's default (float gate for tensorrt, quantized
    for cpu). ``preprocess``: fields replacing the file's preprocessing metadata, or the whole preprocessing of a
    file sa-deploy did not write (see deploy_preprocess); the INT8 file carries the result. Default output:
    ``<fp32 stem>_int8_<flavour>_<method>.onnx`` beside the input."""
    from sa_deploy.calibration.int8 import FLAVOURS, METHODS, check_choice, quantize_int8

    check_choice(method, METHODS, "calibration method")
    check_choice(flavour, FLAVOURS, "INT8 flavour")
    fp32_onnx = Path(fp32_onnx)
    check_finite_weights(fp32_onnx)  # NaN/Inf weights: one line naming the tensor, not a calibration failure
    cfg = deploy_preprocess(fp32_onnx, preprocess)
    out = _output_for(fp32_onnx, out, "int8", flavour, method)
    source = _source(calib, cfg, num, "calib")
    return quantize_int8(fp32_onnx, out, source, method, flavour, exclude_nodes, cache_dir, keep_sa_gate_float,
                         preprocess=cfg, weight_bits=weight_bits)


def fp16(fp32_onnx: str | Path, out: str | Path | None = None, block_list: list[str] | None = None,
         preprocess: PreprocessOverrides | dict | None = None) -> Path:
    """FP16 ONNX (FP32 inputs/outputs) from an FP32 ONNX file -> its path (default ``<fp32 stem>_fp16.onnx``).
    Needs no preprocessing; ``preprocess`` given (see deploy_preprocess), the FP16 file carries the result."""
    from sa_deploy.exporters.fp16 import convert_fp16

    fp32_onnx = Path(fp32_onnx)
    check_finite_weights(fp32_onnx)
    cfg = deploy_preprocess(fp32_onnx, preprocess, required=False)  # same one-line errors as quantize
    return convert_fp16(fp32_onnx, _output_for(fp32_onnx, out, "fp16"), block_list, preprocess=cfg)


def sensitivity(fp32_onnx: str | Path, int8_onnx: str | Path, calib: Any, num: int = 64,
                preprocess: PreprocessOverrides | dict | None = None) -> list:
    """Per-tensor SQNR of an INT8 file vs the FP32 file it came from, worst local damage first (images preprocessed
    as the FP32 file says, else as the INT8 file says)."""
    from sa_deploy.calibration.sensitivity import tensor_sensitivity

    cfg = preprocess_of(fp32_onnx, preprocess, derived=(int8_onnx,)).config
    return tensor_sensitivity(fp32_onnx, int8_onnx, _source(calib, cfg, num, "calib"))


def check_artifact(path: str | Path, input_size: int | None = None, num_classes: int | None = None) -> None:
    """Open an artifact far enough to know it can run, before any data is read: a known format; an ONNX file
    passes ``load_onnx`` and takes one (N, 3, S, S) image input of the data's size (and gives ``num_classes``
    logits when its output size is fixed); an .mlpackage is structurally sound (``check_mlpackage``); an .xml is an
    IR OpenVINO reads, with one float (N, 3, S, S) image input."""
    from sa_deploy.backends import backend_for

    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        raise SADeployError(f"artifact not found: {p}")
    backend_for(p).check(p, input_size, num_classes)


@dataclass
class Reference:
    """What artifacts are compared with: a PyTorch model (TorchRunner) or an FP32 ONNX file (onnxruntime), with
    the preprocessing its images get and its class count (None when unknown)."""

    model: nn.Module | None
    path: Path | None
    preprocess: Any  # PreprocessConfig
    classes: int | None
    preprocess_origin: str = "model"

    @property
    def name(self) -> str:
        return "pytorch fp32" if self.path is None else f"reference {self.path.name} (onnxruntime fp32)"

    def runner(self, threads: int | None = None):
        return TorchRunner(self.model, threads) if self.path is None else OnnxRuntimeRunner(self.path, threads)

    def to_dict(self) -> dict[str, Any]:
        if self.path is None:
            return {"kind": "pytorch", "model": deploy_config_of(self.model).name, "runtime": "pytorch",
                    "precision": "fp32", "preprocess": self.preprocess.to_dict(),
                    "preprocess_from": self.preprocess_origin}
        from sa_deploy.util.hashing import file_sha256

        return {"kind": "onnx", "path": str(self.path), "sha256": file_sha256(self.path), "runtime": "onnxruntime",
                "precision": "fp32", "preprocess": self.preprocess.to_dict(), "preprocess_from": self.preprocess_origin}


def reference_for(reference: nn.Module | str | Path | Reference, preprocess: PreprocessOverrides | dict | None = None,
                  artifacts: tuple[str | Path, ...] = ()) -> Reference:
    """The Reference for an nn.Module (its deploy config's preprocessing) or an FP32 ONNX file (its metadata, else
    the preprocessing its ``artifacts`` carry when they agree), with the ``preprocess`` fields replacing them."""
    from sa_deploy.exporters.preprocess_flags import output_classes
    from sa_deploy.models.preprocess_resolver import resolve_model

    if isinstance(reference, Reference):
        return reference
    if isinstance(reference, nn.Module):
        resolved = resolve_model(deploy_config_of(reference).preprocess, overrides=preprocess)
        classes = next((m.out_features for m in reversed(list(reference.modules())) if isinstance(m, nn.Linear)),
                       None)
        return Reference(reference, None, resolved.config, classes, resolved.origin)
    if not isinstance(reference, (str, Path)):
        raise SADeployError(f"the reference must be a PyTorch model or an FP32 ONNX path, got "
                            f"{type(reference).__name__}")
    from sa_deploy.backends import find_backend
    from sa_deploy.exporters.inspect import load_onnx
    from sa_deploy.exporters.metadata import onnx_metadata

    path = Path(reference)
    if getattr(find_backend(path), "name", None) != "onnxruntime":
        raise SADeployError(f"--reference {path.name}: pass an FP32 .onnx file")
    model = load_onnx(path)
    precision = onnx_metadata(model, path.name).precision or "fp32"
    if precision != "fp32" or any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise SADeployError(f"--reference {path.name} is {precision if precision != 'fp32' else 'quantized (Q/DQ)'}; "
                            "pass the FP32 ONNX the artifacts were made from")
    from sa_deploy.exporters.preprocess_flags import resolve_preprocess

    resolved = resolve_preprocess(model, path.name, preprocess, fallback=_carried_preprocess(tuple(artifacts)))
    return Reference(None, path, resolved.config, output_classes(model), resolved.origin)


def validate(reference: nn.Module | str | Path, data: Any, artifacts: list[str | Path], max_drop: float | None = None,
             num: int | None = None, batch_size: int = 64, progress: bool = True, threads: int | None = None,
             auto_fallback: bool = False, calib: Any = None, cache_dir: str | Path | None = None,
             labels: str | Path | None = None, preprocess: PreprocessOverrides | dict | None = None):
    """Top-1/top-5 of the reference and each artifact on labeled images, drop vs the reference, parity ->
    ValidationReport (call ``report.raise_if_failed()`` for the budget gate). ``reference``: the PyTorch model
    (FP32 on PyTorch) or the path of an FP32 ONNX file (onnxruntime), e.g. one sa-deploy did not write; its images
    are preprocessed as its deploy config / metadata says (an ONNX file without metadata: as the artifacts made
    from it say), with the ``preprocess`` fields replacing those (see deploy_preprocess). ``data``: class folders,
    a flat folder with a ``labels`` file (data.labels), an .npz, ``embedded`` (the sample in the package), or a
    source.

    ``auto_fallback``: each INT8 artifact over budget is re-quantized (``int8_fallback``, calibrated on ``calib``)
    from the FP32 ONNX (the reference or one among ``artifacts``) it was made from; the fixed file's row is added
    and the original row says ``replaced_by`` (it no longer gates). ``report.fallbacks`` lists what each fallback
    did."""
    from sa_deploy.validate.accuracy import validate_artifacts

    if auto_fallback and calib is None:
        raise SADeployError("auto-fallback needs calibration images (--calib DIR|FILE.npz) to re-calibrate on")
    ref = reference_for(reference, preprocess, tuple(artifacts))
    cfg, classes = ref.preprocess, ref.classes
    for a in artifacts:  # every file checked before any image is read
        check_artifact(a, cfg.input_size, classes)
    source = _source(data, cfg, num, labels=labels)
    if not source.labeled:
        raise SADeployError("accuracy needs labeled images: a folder with one sub-folder per class (or an .npz with "
                            "'labels')")
    names = getattr(source, "class_names", ())
    if classes is not None and len(names) > classes:
        raise SADeployError(f"the data has {len(names)} classes ({', '.join(names[:3])}, ...), the model "
                            f"{classes}: labels would not match its outputs")
    report = validate_artifacts(ref.runner(threads), artifacts, source, max_drop, batch_size, progress,
                                reference_name=ref.name, threads=threads)
    report.reference_source = ref.to_dict()
    if auto_fallback:
        _fallback_over_budget(ref, report, [Path(a) for a in artifacts], source, calib, cache_dir, batch_size,
                              progress, threads, preprocess)
    return report


def _fallback_over_budget(ref: Reference, report, artifacts: list[Path], source, calib: Any,
                          cache_dir: str | Path | None, batch_size: int, progress: bool, threads: int | None,
                          preprocess: PreprocessOverrides | dict | None = None) -> None:
    """Re-quantize each INT8 artifact of ``report`` over budget; add the fixed artifact's row."""
    from sa_deploy.exporters.metadata import read_deploy_metadata
    from sa_deploy.util.hashing import file_sha256
    from sa_deploy.validate.accuracy import artifact_precision, predict, score

    candidates = artifacts + ([ref.path] if ref.path is not None else [])
    from sa_deploy.backends import find_backend

    onnx_files = [a for a in candidates if getattr(find_backend(a), "name", None) == "onnxruntime"]
    fp32_by_sha = {file_sha256(a): a for a in onnx_files if artifact_precision(a) == "fp32"}
    ref_pred = None
    for row in list(report.results):
        path = next(a for a in artifacts if a.name == row.name)
        if row.passed or row.precision != "int8":
            continue
        src_sha = read_deploy_metadata(path).source_onnx_sha256
        fp32 = fp32_by_sha.get(src_sha or "")
        if fp32 is None:
            raise SADeployError(f"auto-fallback: pass the FP32 ONNX that {path.name} was quantized from among "
                                "the artifacts (or as --reference)")
        res = int8_fallback(ref, fp32, path, source, calib, row.max_drop, cache_dir=cache_dir, preprocess=preprocess)
        fixed = res.quantize.path
        with OnnxRuntimeRunner(fixed, threads) as runner:
            pred = predict(runner, source, batch_size, fixed.name, progress)
        if ref_pred is None:
            with ref.runner(threads) as reference:
                ref_pred = predict(reference, source, batch_size, ref.name, progress)
        report.results.append(score(fixed.name, "int8", pred, ref_pred, report.reference.top1, row.max_drop))
        row.details["replaced_by"] = str(fixed)
        report.fallbacks.append({"artifact": str(path), **res.to_dict()})


def int8_fallback(reference: nn.Module | str | Path | Reference, fp32_onnx: str | Path, int8_onnx: str | Path,
                  data: Any, calib: Any, max_drop: float = 1.0, num: int | None = None, calib_num: int | None = 500,
                  out: str | Path | None = None, cache_dir: str | Path | None = None, max_rounds: int = 5,
                  preprocess: PreprocessOverrides | dict | None = None):
    """Re-quantize ``int8_onnx`` (same method/flavour) keeping its worst-SQNR nodes in float until its top-1 drop
    on ``data`` vs ``reference`` (the PyTorch model or an FP32 ONNX path, as in ``validate``) is within
    ``max_drop`` -> FallbackResult. Calibration images are preprocessed as ``fp32_onnx`` says (else as
    ``int8_onnx`` says), with the ``preprocess`` fields replacing those. Default output:
    ``<int8 stem>_fallback.onnx``."""
    import json
    import warnings

    from sa_deploy.calibration.sensitivity import auto_fallback
    from sa_deploy.exporters.metadata import read_deploy_metadata
    from sa_deploy.validate.accuracy import predict, topk_accuracy

    int8_onnx = Path(int8_onnx)
    ref = reference_for(reference, preprocess, (int8_onnx,))
    meta = read_deploy_metadata(int8_onnx).to_strings()  # the checked loader, the one metadata reader
    eval_src = _source(data, ref.preprocess, num)
    with ref.runner() as reference_runner:
        ref_pred = predict(reference_runner, eval_src, desc=ref.name)
    top1_ref = topk_accuracy(ref_pred.logits, ref_pred.labels, 1)

    def drop_of(path: Path) -> float:
        with OnnxRuntimeRunner(path) as runner:
            pred = predict(runner, eval_src, desc=path.name)
        return top1_ref - topk_accuracy(pred.logits, pred.labels, 1)

    out = Path(out) if out else derived_path(int8_onnx, "fallback")
    cfg = preprocess_of(fp32_onnx, preprocess, derived=(int8_onnx,)).config
    calib_src = _source(calib, cfg, calib_num, "calib")
    if meta.get("calibration_fingerprint") and meta["calibration_fingerprint"] != calib_src.fingerprint():
        warnings.warn(f"the calibration data differs from the data {int8_onnx.name} was calibrated on; the "
                      "fallback re-calibrates on it", stacklevel=2)
    sens_src = _source(calib, cfg, 64, "calib")  # SQNR needs few images; it runs both graphs on each
    return auto_fallback(fp32_onnx, out, calib_src, drop_of, max_drop, meta.get("calibration_method", "entropy"),
                         meta.get("int8_flavour", "tensorrt"), json.loads(meta.get("float_nodes", "[]")),
                         cache_dir, max_rounds=max_rounds, sensitivity_source=sens_src, preprocess=cfg)
