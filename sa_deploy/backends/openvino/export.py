"""ONNX -> OpenVINO IR with OpenVINO's own converter and writer (``convert_model``, ``save_model``).

The ONNX file is the contract: FP32 from the FP32 export, ``fp16`` = the same graph with FP16-compressed weights
(decompressed to f32 at load; compute precision is the runner's hint), ``int8`` = the Q/DQ ONNX from
``sa-deploy quantize`` as is (OpenVINO's low-precision transformations turn Q/DQ into int8 kernels; no second
calibration). The deploy config of the ONNX metadata travels in the IR's rt_info under ``sa_deploy``. The .bin and
.xml are written to a temp folder beside the target and renamed into place (.bin first, .xml last)."""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sa_deploy.backends.openvino.device import import_openvino, ov_error
from sa_deploy.backends.openvino.inspect import RT_INFO_KEY
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import load_onnx
from sa_deploy.exporters.metadata import onnx_metadata
from sa_deploy.models.deploy_metadata import DeployMetadata
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.atomic import atomic_path, check_writable
from sa_deploy.util.hashing import file_sha256


@dataclass
class OpenVINOExport:
    path: Path  # the .xml; its weights are path.with_suffix(".bin")
    precision: str  # fp32 | fp16 (compressed weights) | int8 (from Q/DQ)
    source_onnx: Path
    size_bytes: int
    seconds: float
    op_histogram: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def ir_precision(onnx_precision: str, fp16_weights: bool) -> str:
    if onnx_precision == "int8":
        if fp16_weights:
            raise SADeployError("an INT8 (Q/DQ) ONNX keeps its int8 weights; drop --fp16-weights")
        return "int8"
    if onnx_precision == "fp16":
        raise SADeployError("convert the FP32 ONNX with --fp16-weights instead of an FP16 ONNX: OpenVINO keeps "
                            "FP16 weights compressed and computes at the runner's precision hint")
    return "fp16" if fp16_weights else "fp32"


def convert_onnx(onnx_path: str | Path, out: str | Path, fp16_weights: bool = False,
                 preprocess: PreprocessConfig | None = None) -> OpenVINOExport:
    """Write ``out`` (.xml) + its .bin from an ONNX file; returns what was written. The IR's rt_info carries the
    file's sa-deploy metadata, with ``preprocess`` (the resolved one, e.g. from flags) in place of its own."""
    ov = import_openvino("OpenVINO export")
    onnx_path, out = Path(onnx_path), Path(out)
    if out.suffix != ".xml":
        raise SADeployError(f"an OpenVINO IR is written as NAME.xml (+ NAME.bin), got {out.name}")
    meta = onnx_metadata(load_onnx(onnx_path), onnx_path.name)
    precision = ir_precision(meta.precision or "fp32", fp16_weights)
    check_ir_output(out)  # before the conversion, not after it
    start = time.perf_counter()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpenVINO raises its own exception types for unsupported graphs
        raise SADeployError(f"OpenVINO cannot convert {onnx_path.name}: {ov_error(exc)}") from None
    if preprocess is not None:
        meta = meta.replace(preprocess=preprocess, model=meta.model if meta.model is not None else onnx_path.stem)
    meta = meta.with_strings({"format": "openvino", "precision": precision,
                              "source_onnx_sha256": file_sha256(onnx_path),
                              "openvino_version": ov.__version__.split("-")[0]})
    write_ir_metadata(model, meta)
    config = meta.to_strings()
    _save_atomic(ov, model, out, compress_to_fp16=precision == "fp16")
    ops = Counter(op.get_type_name() for op in model.get_ordered_ops())
    size = out.stat().st_size + out.with_suffix(".bin").stat().st_size
    return OpenVINOExport(out, precision, onnx_path, size, time.perf_counter() - start, dict(ops.most_common()),
                          config)


def write_ir_metadata(model, meta: DeployMetadata) -> None:
    """The OpenVINO writer: ``meta`` into an ov.Model's rt_info under ``sa_deploy`` (one entry per key, sorted)."""
    for key, value in sorted(meta.to_strings().items()):
        model.set_rt_info(str(value), [RT_INFO_KEY, key])


def owned_ir_file(path: Path) -> bool:
    """An .xml / .bin that sa-deploy wrote: the IR (the .xml beside a .bin) carries sa_deploy rt_info."""
    xml = path.with_suffix(".xml")
    try:
        return xml.is_file() and f"<{RT_INFO_KEY}>".encode() in xml.read_bytes()[-65536:]
    except OSError:
        return False


def check_ir_output(out: Path) -> None:
    """Both files of the IR may be written (neither is a folder or a file sa-deploy did not write)."""
    for path in (out, out.with_suffix(".bin")):
        check_writable(path, owned_ir_file)


def _save_atomic(ov, model, out: Path, compress_to_fp16: bool) -> None:
    """Both files of the IR through util.atomic (the .bin put in place first, then the .xml that names the pair):
    a failure leaves no half IR and removes the folders it created."""
    with atomic_path(out, owned_ir_file) as tmp_xml, atomic_path(out.with_suffix(".bin"), owned_ir_file) as tmp_bin:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        os.replace(tmp_xml.with_suffix(".bin"), tmp_bin)
