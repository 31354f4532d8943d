"""Which layers suffer from INT8: per-tensor SQNR of the Q/DQ graph vs FP32 (onnxruntime's qdq_loss_debug), and
``auto_fallback``, which re-quantizes with the worst nodes kept in float until an accuracy budget holds."""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import onnx

from sa_deploy.calibration.int8 import QuantizeResult, preprocess_for_quant, quantize_int8
from sa_deploy.calibration.reader import BatchSource, make_reader
from sa_deploy.models.preprocessing import PreprocessConfig


@dataclass
class TensorSensitivity:
    tensor: str
    node: str  # node of the float graph that produces the tensor ("" for graph inputs)
    op_type: str
    sqnr_db: float  # FP32 model vs INT8 model activation (accumulated error up to here)
    qdq_sqnr_db: float | None  # this tensor's own Q/DQ rounding (pre vs post QDQ in the INT8 model)
    sqnr_loss_db: float  # how much SQNR this node loses vs its worst activation input (local damage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else (1e9 if math.isinf(x) else float(x))


def tensor_sensitivity(float_onnx: str | Path, int8_onnx: str | Path, source: BatchSource,
                       batch_size: int = 16) -> list[TensorSensitivity]:
    """Per-tensor SQNR of ``int8_onnx`` vs ``float_onnx`` on ``source``, worst local damage first.

    ``float_onnx`` must be the graph that was quantized (node and tensor names must match); quantize_int8
    quantizes onnxruntime's pre-processed graph, so pass the original FP32 export: it is pre-processed here too."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="sa-deploy-sqnr-") as tmp:
        work = Path(tmp)
        prep = preprocess_for_quant(Path(float_onnx), work / "prep.onnx")
        float_aug, qdq_aug = work / "float_aug.onnx", work / "qdq_aug.onnx"
        modify_model_output_intermediate_tensors(str(prep), str(float_aug))
        modify_model_output_intermediate_tensors(str(int8_onnx), str(qdq_aug))
        # prep.onnx: written above in this operation from the caller's file, so a raw load (not an entry point)
        name = onnx.load(str(prep), load_external_data=False).graph.input[0].name
        float_acts = collect_activations(str(float_aug), make_reader(source, name, batch_size))
        qdq_acts = collect_activations(str(qdq_aug), make_reader(source, name, batch_size))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
        graph = onnx.load(str(prep), load_external_data=False).graph  # the same prep.onnx
    producer = {out: n for n in graph.node for out in n.output}
    sqnr = {t: e["xmodel_err"] for t, e in errors.items() if "xmodel_err" in e}
    rows = []
    for tensor, err in errors.items():
        if "xmodel_err" not in err:
            continue
        node = producer.get(tensor)
        inputs = [sqnr[i] for i in (node.input if node is not None else []) if i in sqnr]
        loss = (min(inputs) - err["xmodel_err"]) if inputs else 0.0
        rows.append(TensorSensitivity(tensor, node.name if node is not None else "",
                                      node.op_type if node is not None else "input",
                                      _finite(err["xmodel_err"]), _finite(err.get("qdq_err")), _finite(loss)))
    rows.sort(key=lambda r: -r.sqnr_loss_db)
    return rows


@dataclass
class FallbackRound:
    excluded_nodes: list[str]
    drop: float
    passed: bool


@dataclass
class FallbackResult:
    quantize: QuantizeResult
    rounds: list[FallbackRound] = field(default_factory=list)
    sensitivity: list[TensorSensitivity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rounds and self.rounds[-1].passed)

    @property
    def fallback_nodes(self) -> list[str]:
        """Nodes kept in float by the fallback on top of the initial exclusion."""
        return self.rounds[-1].excluded_nodes if self.rounds else []

    def to_dict(self) -> dict[str, Any]:
        return {"quantize": self.quantize.to_dict(), "rounds": [asdict(r) for r in self.rounds],
                "passed": self.passed, "sensitivity": [s.to_dict() for s in self.sensitivity[:20]]}


def auto_fallback(fp32_onnx: str | Path, out_path: str | Path, calib: BatchSource,
                  drop_of: Callable[[Path], float], max_drop: float, method: str = "entropy",
                  flavour: str = "tensorrt", exclude_nodes: Iterable[str] = (), cache_dir: str | Path | None = None,
                  per_round: int = 2, max_rounds: int = 5, sensitivity_source: BatchSource | None = None,
                  preprocess: PreprocessConfig | None = None) -> FallbackResult:
    """Quantize, measure the top-1 drop with ``drop_of(path)``; while it exceeds ``max_drop`` keep the
    ``per_round`` nodes with the worst SQNR loss (not yet excluded) in float and re-quantize.

    Tensor ranges come from the calibration cache after the first round (a temp folder if ``cache_dir`` is None),
    so each round costs one quantize_static + one evaluation + one SQNR pass."""
    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    excluded: list[str] = list(dict.fromkeys(exclude_nodes))
    rounds: list[FallbackRound] = []
    with tempfile.TemporaryDirectory(prefix="sa-deploy-fallback-") as tmp:
        cache = cache_dir if cache_dir is not None else tmp
        sens: list[TensorSensitivity] = []
        for _ in range(max_rounds + 1):
            result = quantize_int8(fp32_onnx, out_path, calib, method, flavour, excluded, cache,
                                   preprocess=preprocess)
            drop = drop_of(out_path)
            rounds.append(FallbackRound(list(excluded), drop, drop <= max_drop))
            if rounds[-1].passed or len(rounds) > max_rounds:
                break
            sens = tensor_sensitivity(fp32_onnx, out_path, sensitivity_source or calib)
            already = set(result.excluded_nodes)
            new = [s.node for s in sens if s.node and s.node not in already and s.sqnr_loss_db > 0]
            new = list(dict.fromkeys(new))[:per_round]
            if not new:
                break
            excluded += new
    return FallbackResult(result, rounds, sens)
