"""FP32 ONNX -> INT8 Q/DQ ONNX with onnxruntime.quantization (static, QDQ format), in two flavours.

- ``tensorrt``: s8 activations and weights, symmetric (zero point 0), per-channel weights on axis 0, per-tensor
  activations, float bias (TensorRT fuses DQ->Conv itself; int32 bias Q/DQ is not what its explicit-precision
  parser wants). Add (incl. the residual Add) is quantized, so both Add inputs carry Q/DQ and Conv+Add can fuse.
- ``cpu``: u8 activations + s8 per-channel weights (the fast onnxruntime CPU combination; s8 activations give no
  speedup there).

Pipeline: quant_pre_process (shape inference + ORT basic optimisations) -> tensor ranges (from the cache or one
calibration pass over every float tensor) -> quantize_static with those ranges -> deploy metadata -> atomic write.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import create_calibrator
from onnxruntime.quantization.shape_inference import quant_pre_process

from sa_deploy.calibration.cache import RangeCache, RangeKey
from sa_deploy.calibration.reader import BatchSource, FeedReader
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import sa_gates
from sa_deploy.exporters.metadata import derive, is_sa_deploy_onnx, read_deploy_metadata, write_onnx_metadata
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.atomic import atomic_path
from sa_deploy.util.hashing import file_sha256

METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# calibrator options fixed here so that they are part of the cache key
CALIB_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 128, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}
# onnxruntime's entropy search is quadratic in the bins, in pure Python; histograms that grew past this are coarsened
MAX_ENTROPY_BINS = 2048


@dataclass(frozen=True)
class Flavour:
    name: str
    activation_type: QuantType
    weight_type: QuantType
    extra_options: dict[str, Any]
    # the SA gate's default: float for TensorRT (it fuses the gate's pointwise chain and runs it in fp16/fp32),
    # quantized for onnxruntime CPU (QLinear kernels; a float gate moves full-size float tensors through
    # DequantizeLinear / Transpose / QuantizeLinear around every block)
    quantize_sa_gate: bool = False
    # weight bits by default: 7 keeps every u8 x s8 pair sum inside int16 (255 * (64 + 64) = 32,640 <= 32,767), so
    # the file holds its accuracy on x86 CPUs without VNNI (pairwise int16 kernels); 8 where the target accumulates
    # in int32 (TensorRT). backends/cpu_lint.py checks any Q/DQ file against that bound.
    weight_bits: int = 8


FLAVOURS: dict[str, Flavour] = {
    "tensorrt": Flavour("tensorrt", QuantType.QInt8, QuantType.QInt8, {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
        # TensorRT drops Q/DQ around Relu itself; keep the graph explicit so its fusions see every activation
        "QDQKeepRemovableActivations": True,
    }),
    "cpu": Flavour("cpu", QuantType.QUInt8, QuantType.QInt8, {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
    }, quantize_sa_gate=True, weight_bits=7),
}
WEIGHT_BITS = (7, 8)

# The SA gate: statistics (GlobalAveragePool/ReduceMean, InstanceNormalization), the affine combination, Sigmoid and
# the gating Mul. Whether it is quantized is per flavour (Flavour.quantize_sa_gate), measured (docs/precision.md):
# on both embedded models top-1 moves by at most 0.18 points with the gate's precision, while on onnxruntime CPU the
# quantized gate makes INT8 SA-ResNet-50 0.52x of FP32 instead of 0.73x (benchmarks/RESULTS.md).
SA_GATE_OPS = ("ReduceMean", "GlobalAveragePool", "InstanceNormalization", "Sigmoid", "Mul", "Add")


@dataclass
class QuantizeResult:
    path: Path
    method: str
    flavour: str
    num_calibration: int
    cache_hit: bool
    excluded_nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data_fingerprint: str = ""
    ranges_path: Path | None = None
    sa_gate_float: bool = False  # the resolved gate precision (excluded_nodes may also hold user / fallback nodes)
    weight_bits: int = 8
    has_sa_gate: bool = True  # False for a model without SA layers (e.g. SE-ResNet): the flag then means nothing

    @property
    def sa_gate(self) -> str:
        return "none" if not self.has_sa_gate else "float" if self.sa_gate_float else "int8"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ranges_path"] = str(self.ranges_path) if self.ranges_path else None
        return d


def sa_gate_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the SA-gate nodes: found by structure (``exporters.inspect.sa_gates``: any names, e.g. SA layers in
    a user's model), plus the nodes the exporters scope under ``.../sa/...`` (the naive form's channel branch)."""
    structural = {n.name for gate in sa_gates(model) for n in gate if n.op_type in SA_GATE_OPS}
    scoped = {n.name for n in model.graph.node if "/sa/" in n.name and n.op_type in SA_GATE_OPS}
    return sorted(structural | scoped)


def preprocess_for_quant(fp32_onnx: Path, out: Path) -> Path:
    """onnxruntime's quantization pre-processing (shape inference + basic graph optimisation)."""
    quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
    return out


def calibrate_ranges(prep_onnx: Path, source: BatchSource, method: str, workdir: Path, batch_size: int = 16) -> Any:
    """One calibration pass over every float tensor (superset of any quantize call) -> TensorsData."""
    calibrator = create_calibrator(prep_onnx, None, augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=METHODS[method], extra_options=CALIB_OPTIONS[method])
    from tqdm import tqdm

    name = _input_name(prep_onnx)
    # one collect_data call per batch: onnxruntime keeps every intermediate output of a call in memory and its
    # histogram collectors need equal batch shapes within a call; ranges/histograms merge across calls
    # the bar shows on a terminal only (disable=None), on stderr: logs and JSON output stay clean
    total = len(source) if hasattr(source, "__len__") else None
    with tqdm(total=total, desc=f"calibration ({method})", unit="img", leave=False, disable=None) as bar, \
            contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress chatter
        for x, _ in source.batches(batch_size):
            calibrator.collect_data(FeedReader([{name: x}]))
            if method == "entropy":  # after every batch: growth then starts from at most MAX_ENTROPY_BINS bins
                coarsen_histograms(calibrator.collector.histogram_dict, MAX_ENTROPY_BINS)
            bar.update(len(x))
        bar.set_description(f"calibration ({method}): computing ranges")
        return calibrator.compute_data()


def coarsen_histograms(histograms: dict[str, tuple], max_bins: int) -> list[str]:
    """Merge adjacent bins (in place) of every symmetric histogram with more than ``max_bins`` -> their names.

    onnxruntime grows an entropy histogram in steps of its first batch's bin width: a tensor near zero in the first
    batch (e.g. a hidden unit of CBAM's MLP that is dead on those images) ends with 10^5 bins, and the entropy
    search over it then runs for hours. The coarsened histogram covers the same data over the same symmetric range
    (padded by at most a group on each side), with bins no finer than max_bins allow."""
    coarsened = []
    for name, (hist, edges, low, high, *_rest) in list(histograms.items()):
        bins = len(hist)
        if bins <= max_bins:
            continue
        group = -(-bins // max_bins)
        group += 1 - group % 2  # odd groups, and as many as bins have parity: the padding splits evenly on both
        groups = -(-bins // group)  # sides and zero stays where it was (the middle edge, or the middle of a bin)
        groups += (groups - bins) % 2
        pad = (groups * group - bins) // 2
        stride = (float(edges[-1]) - float(edges[0])) / bins
        threshold = float(edges[-1]) + pad * stride
        merged = np.pad(hist, pad).reshape(groups, group).sum(axis=1)
        new_edges = np.linspace(-threshold, threshold, groups + 1).astype(edges.dtype)
        histograms[name] = (merged, new_edges, low, high, np.array(threshold, dtype=edges.dtype))
        coarsened.append(name)
    return coarsened


def _input_name(path: Path) -> str:
    # the pre-processed graph quantize_int8 / sensitivity wrote in this same operation: a raw load, not an entry
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def check_choice(value: str, choices: Iterable[str], what: str) -> None:
    if value not in choices:
        raise SADeployError(f"unknown {what} '{value}'; choose one of: {', '.join(choices)}")


def quantize_int8(fp32_onnx: str | Path, out_path: str | Path, source: BatchSource, method: str = "entropy",
                  flavour: str = "tensorrt", exclude_nodes: Iterable[str] = (), cache_dir: str | Path | None = None,
                  keep_sa_gate_float: bool | None = None, batch_size: int = 16,
                  preprocess: PreprocessConfig | None = None, weight_bits: int | None = None) -> QuantizeResult:
    """Static INT8 Q/DQ quantization of an FP32 ONNX file; ``source`` is a calibration source (ImageSource/NpzSource).
    The INT8 file carries the source file's deploy metadata, with ``preprocess`` (the config ``source`` was
    preprocessed with; None: the source file's) and a model name (the source's, else its file stem).

    ``exclude_nodes`` (node names of the FP32 graph) stay in float, as does the SA gate when
    ``keep_sa_gate_float`` (None: the flavour's default, float for tensorrt and quantized for cpu). Tensor ranges
    are cached in ``cache_dir`` (reused only for the same model file, data fingerprint and method).
    ``weight_bits`` (7 or 8; None: the flavour's default, 7 for cpu, 8 for tensorrt): 7-bit weights cannot saturate
    the pairwise int16 sums of x86 int8 kernels without VNNI (backends/cpu_lint.py)."""
    check_choice(method, METHODS, "calibration method")
    check_choice(flavour, FLAVOURS, "INT8 flavour")
    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    if not fp32_onnx.is_file():
        raise SADeployError(f"ONNX model not found: {fp32_onnx}")
    t0 = time.perf_counter()
    meta = read_deploy_metadata(fp32_onnx)  # the file enters here: checked (exporters.inspect.load_onnx)
    if (meta.precision or "fp32") != "fp32":
        raise SADeployError(f"{fp32_onnx.name} is already {meta.precision}; quantize the FP32 export")
    fingerprint = source.fingerprint()
    key = RangeKey(file_sha256(fp32_onnx), fingerprint, method,
                   json.dumps({**CALIB_OPTIONS[method], "ort": onnxruntime.__version__,
                               **({"max_bins": MAX_ENTROPY_BINS} if method == "entropy" else {})}, sort_keys=True))
    fl = FLAVOURS[flavour]
    weight_bits = fl.weight_bits if weight_bits is None else weight_bits
    if weight_bits not in WEIGHT_BITS:
        raise SADeployError(f"weight bits must be 7 or 8, got {weight_bits}")
    if keep_sa_gate_float is None:
        keep_sa_gate_float = not fl.quantize_sa_gate
    with tempfile.TemporaryDirectory(prefix="sa-deploy-int8-") as tmp:
        work = Path(tmp)
        prep = preprocess_for_quant(fp32_onnx, work / "prep.onnx")
        prep_model = onnx.load(str(prep))  # written just above from the checked file: a raw load
        known = {n.name for n in prep_model.graph.node}
        unknown = sorted(set(exclude_nodes) - known)
        if unknown:
            raise SADeployError(f"--exclude-nodes: no node named {unknown[0]!r} in {fp32_onnx.name} "
                                f"({len(unknown)} unknown; see `sa-deploy inspect` or the sensitivity report)")
        gate_nodes = sa_gate_nodes(prep_model)
        excluded = sorted(set(exclude_nodes) | (set(gate_nodes) if keep_sa_gate_float else set()))
        cache = RangeCache(cache_dir if cache_dir is not None else work / "cache")
        ranges = cache.lookup(key)
        cache_hit = ranges is not None
        if ranges is None:
            ranges = cache.store(key, calibrate_ranges(prep, source, method, work, batch_size))
        with atomic_path(out_path, owned=is_sa_deploy_onnx) as tmp_out, _quiet_ort_logging():
            quantize_static(str(prep), str(tmp_out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=weight_bits == 7,  # weights only: [-64, 64]
                            activation_type=fl.activation_type, weight_type=fl.weight_type,
                            nodes_to_exclude=excluded, calibrate_method=METHODS[method],
                            extra_options=dict(fl.extra_options), calibration_cache_path=str(ranges))
            q = onnx.load(str(tmp_out))  # quantize_static wrote it just above: a raw load
            write_onnx_metadata(q, derive(meta, fp32_onnx, preprocess, key.model_sha256).with_strings({
                "precision": "int8", "int8_flavour": flavour, "int8_weight_bits": str(weight_bits),
                "int16_overflow_safe": str(weight_bits == 7).lower(), "calibration_method": method,
                "calibration_count": str(len(source)), "calibration_fingerprint": fingerprint,
                "float_nodes": json.dumps(excluded),
                "sa_gate": "none (no SA layer)" if not gate_nodes else "float" if keep_sa_gate_float else "int8"}))
            onnx.save(q, str(tmp_out))
    return QuantizeResult(out_path, method, flavour, len(source), cache_hit, excluded,
                          time.perf_counter() - t0, fingerprint, ranges if cache_dir is not None else None,
                          keep_sa_gate_float, weight_bits, bool(gate_nodes))


class _quiet_ort_logging:
    """quantize_static logs a pre-processing hint through the root logger even after pre-processing."""

    def __enter__(self) -> None:
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().setLevel(self._level)
