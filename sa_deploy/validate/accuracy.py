"""Top-1/top-5 of any Runner on a labeled source, the drop vs the reference (PyTorch, or an FP32 ONNX file on
onnxruntime), parity on the same images,
and the accuracy budget gate (BudgetExceededError -> exit code 3)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sa_deploy.backends.base import Runner
from sa_deploy.data.sources import Source
from sa_deploy.errors import BudgetExceededError, SADeployError
from sa_deploy.validate.int8_numerics import Int8Numerics, Int8Plan, diagnose, int8_plan
from sa_deploy.validate.parity import ParityStats, compare, tolerance_class

# default allowed top-1 drop (points) vs the FP32 reference: the one budget table, keyed by tolerance class
# (validate.parity.tolerance_class: w8a8, palettize... are int8); `validate --max-drop` and the run plan override it
DEFAULT_MAX_DROP: dict[str, float] = {"fp32": 0.1, "fp16": 0.1, "bf16": 0.5, "int8": 1.0}


def budget_for(precision: str, budgets: dict[str, float] | None = None) -> float:
    """The drop budget of an artifact precision, from DEFAULT_MAX_DROP overlaid by ``budgets`` (by class)."""
    return {**DEFAULT_MAX_DROP, **(budgets or {})}[tolerance_class(precision)]


LabeledSource = Source  # the name the evaluation functions annotate with: the one source type (data.sources)


@dataclass
class Predictions:
    logits: np.ndarray
    labels: np.ndarray
    seconds: float


@dataclass
class AccuracyResult:
    name: str
    precision: str
    top1: float  # percent
    top5: float
    num_images: int
    seconds: float
    drop: float | None = None  # top-1 points below the reference (negative: better)
    max_drop: float | None = None
    parity: ParityStats | None = None
    passed: bool = True  # within the accuracy budget and, against a reference, inside the parity tolerance
    within_budget: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parity"] = self.parity.to_dict() if self.parity else None
        return d


@dataclass
class ValidationReport:
    reference: AccuracyResult
    results: list[AccuracyResult]
    fallbacks: list[dict[str, Any]] = field(default_factory=list)  # what api.validate(auto_fallback=True) did
    reference_source: dict[str, Any] = field(default_factory=dict)  # what the reference was (api.Reference.to_dict)

    @property
    def gating(self) -> list[AccuracyResult]:
        """Results the budget applies to: an artifact replaced by its auto-fallback fix does not gate."""
        return [r for r in self.results if not r.details.get("replaced_by")]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.gating)

    def to_dict(self) -> dict[str, Any]:
        out = {"reference": self.reference.to_dict(), "results": [r.to_dict() for r in self.results],
               "passed": self.passed}
        if self.reference_source:
            out["reference_source"] = self.reference_source
        if self.fallbacks:
            out["auto_fallback"] = self.fallbacks
        return out

    def raise_if_failed(self) -> None:
        """BudgetExceededError (exit 3) when an artifact is over its accuracy budget or outside its precision's
        parity tolerance against the reference (NaN/Inf outputs included)."""
        bad = [r for r in self.gating if not r.passed]
        if not bad:
            return
        over = [r for r in bad if not r.within_budget]
        off = [r for r in bad if r.parity is not None and not r.parity.passed]
        parts = []
        if over:
            worst = max(over, key=lambda r: r.drop if r.drop is not None and np.isfinite(r.drop) else 0.0)
            cause = worst.details.get("diagnosis")
            parts.append(f"{len(over)} artifact(s) over the accuracy budget, e.g. {worst.name}: top-1 drop "
                         f"{worst.drop:.2f} points > allowed {worst.max_drop:g}" + (f" ({cause})" if cause else ""))
        if off:
            r = off[0]
            parts.append(f"{len(off)} artifact(s) outside the parity tolerance vs the reference, e.g. {r.name} "
                         f"({r.precision}): {r.parity.reason()}")
        raise BudgetExceededError("; ".join(parts))


def predict(runner: Runner, source: LabeledSource, batch_size: int = 64, desc: str = "",
            progress: bool = True) -> Predictions:
    """Logits of ``runner`` on every image of ``source`` (tqdm bar unless ``progress`` is False)."""
    from tqdm import tqdm

    if not source.labeled:
        raise SADeployError("accuracy needs labeled images: a folder with one sub-folder per class "
                            "(or an .npz with 'labels')")
    logits, labels = [], []
    t0 = time.perf_counter()
    with tqdm(total=len(source), desc=desc or runner.name, unit="img", leave=False, disable=not progress) as bar:
        for x, y in source.batches(batch_size):
            logits.append(runner.infer(x))
            labels.append(y)
            bar.update(len(x))
    pred = Predictions(np.concatenate(logits), np.concatenate(labels), time.perf_counter() - t0)
    classes = pred.logits.shape[1]
    if len(pred.labels) and (pred.labels.min() < 0 or pred.labels.max() >= classes):
        bad = int(pred.labels.max() if pred.labels.max() >= classes else pred.labels.min())
        raise SADeployError(f"label {bad} is out of range for a model with {classes} classes (0..{classes - 1}): "
                            "are these the model's classes?")
    return pred


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of samples whose label is among the ``k`` largest logits (k is capped at the class count)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(100.0 * (top == labels[:, None]).any(axis=1).mean())


def score(name: str, precision: str, pred: Predictions, reference: Predictions | None = None,
          top1_ref: float | None = None, max_drop: float | None = None) -> AccuracyResult:
    res = AccuracyResult(name, precision, topk_accuracy(pred.logits, pred.labels, 1),
                         topk_accuracy(pred.logits, pred.labels, 5), len(pred.labels), pred.seconds)
    if reference is not None:
        res.parity = compare(pred.logits, reference.logits, precision)
        res.drop = (top1_ref if top1_ref is not None else topk_accuracy(reference.logits, reference.labels, 1)) \
            - res.top1
        res.max_drop = budget_for(precision) if max_drop is None else max_drop
        # both gate: the accuracy budget, and parity within the precision's tolerance (validate.parity.TOLERANCES:
        # int8 logits differ by design, so its tolerance is on cosine and top-1 agreement, not on values)
        res.within_budget = bool(res.drop <= res.max_drop + 1e-9)
        res.passed = res.within_budget and res.parity.passed
    return res


def subset_budget(max_drop: float, images: int) -> float:
    """The drop budget on a subset the tool sampled (CoreML off macOS): top-1 on ``images`` images moves in steps of
    one image (100 / images points), so a positive budget finer than that is raised to one image; otherwise one
    flipped near-tie image would fail an artifact that the full set, where the budget is measurable, passes."""
    step = 100.0 / images if images else 0.0
    return max(max_drop, step) if max_drop > 0 else max_drop


def artifact_precision(path: str | Path) -> str:
    """Precision recorded in an artifact's deploy metadata (fp32 when absent), as its backend reads it."""
    from sa_deploy.backends import backend_for

    return backend_for(path).precision_of(Path(path))


def validate_artifacts(reference: Runner, artifacts: Iterable[str | Path], source: LabeledSource,
                       max_drop: float | None = None, batch_size: int = 64, progress: bool = True,
                       reference_name: str = "pytorch fp32", threads: int | None = None) -> ValidationReport:
    """Accuracy of the reference and of each artifact on the same images; ``max_drop`` overrides the per-precision
    defaults (DEFAULT_MAX_DROP); ``threads`` caps each artifact runner's threads. Does not raise on budget
    failures: call ``report.raise_if_failed()``."""

    with reference:
        ref_pred = predict(reference, source, batch_size, reference_name, progress)
    ref = score(reference_name, "fp32", ref_pred)
    results = [evaluate_artifact(Path(art), source, ref_pred, ref.top1, max_drop, threads, batch_size, progress).result
               for art in artifacts]
    return ValidationReport(ref, results)


@dataclass
class Evaluation:
    result: AccuracyResult
    latency_ms: float | None  # median of the timed calls (None: not timed)
    runner: str  # the runner that judged it, e.g. "onnxruntime (Q/DQ emulated)"


def evaluate_artifact(path: Path, source: LabeledSource, ref: Predictions, top1_ref: float,
                      max_drop: float | None = None, threads: int | None = None, batch_size: int = 64,
                      progress: bool = True, runner_options: dict[str, Any] | None = None, name: str | None = None,
                      precision: str | None = None, latency_input: np.ndarray | None = None,
                      latency_iters: int = 20) -> Evaluation:
    """The one evaluation of an artifact, for `validate`, `run` and the Python API: top-1/top-5, drop and parity
    vs the reference predictions ``ref`` on the same images, the budget (``max_drop``; None: budget_for its
    precision), an INT8 file judged by its target's numerics with its twin (score_twin), and, given
    ``latency_input``, the median latency of the runtime's own kernels."""
    from sa_deploy.backends import open_runner

    base = dict(runner_options or {})
    plan = int8_plan(path)
    options = {**base, **(plan.judged_options if plan else {})}
    latency = None
    with open_runner(path, threads, **options) as runner:
        pred = predict(runner, source, batch_size, name or path.name, progress)
        kernels, judged_by = runner.int8_path(), runner.name
        if latency_input is not None and options == base:
            latency = float(np.median(runner.latency_ms(latency_input, warmup=1, iters=latency_iters)))
    if latency_input is not None and options != base:  # judged by the Q/DQ emulation: time the real kernels
        with open_runner(path, threads, **base) as runner:
            latency = float(np.median(runner.latency_ms(latency_input, warmup=1, iters=latency_iters)))
    if pred.logits.shape[1:] != ref.logits.shape[1:]:
        raise SADeployError(f"{path.name} gives outputs of shape {pred.logits.shape[1:]}, the reference "
                            f"{ref.logits.shape[1:]} (an artifact of another model?)")
    res = score(name or path.name, precision or artifact_precision(path), pred, ref, top1_ref, max_drop)
    res.details["runner"] = judged_by
    if plan is not None:
        score_twin(res, plan, kernels, source, ref, top1_ref, threads, batch_size, progress)
    elif kernels is not None:  # runs int8 without a twin (CoreML W8A8 in the reference executor: float emulation)
        res.details["int8"] = {"judged_by": "kernels", "path": kernels.to_dict()}
    return Evaluation(res, latency, judged_by)


def score_twin(res: AccuracyResult, plan: Int8Plan, judged_path, source: LabeledSource, ref: Predictions,
               top1_ref: float, threads: int | None = None, batch_size: int = 64,
               progress: bool = True) -> Int8Numerics:
    """Scores the twin of an INT8 artifact (validate.int8_numerics) on the same images and records both numbers
    and the diagnosis in ``res.details`` (``int8``, ``diagnosis``); ``judged_path``: the judged runner's
    Int8Path."""
    from sa_deploy.backends import open_runner

    twin_res, twin_path = None, None
    if plan.twin is not None:
        twin_file, options = plan.twin
        with open_runner(twin_file, threads, **options) as runner:
            twin_pred = predict(runner, source, batch_size, f"{twin_file.name} ({runner.name})", progress)
            twin_path = runner.int8_path()
        twin_res = score(twin_file.name, "int8", twin_pred, ref, top1_ref)
    kernel, emulated = (res, twin_res) if plan.judged_by == "kernels" else (twin_res, res)
    numerics = Int8Numerics(
        plan.judged_by, judged_path.to_dict() if judged_path else None, twin_path.to_dict() if twin_path else None,
        *_three(kernel), *_three(emulated), plan.weight_bits, plan.flavour)
    numerics.diagnosis = diagnose(numerics, res.num_images, res.max_drop)
    res.details["int8"] = numerics.to_dict()
    if numerics.diagnosis:
        res.details["diagnosis"] = numerics.diagnosis
    return numerics


def _three(res: AccuracyResult | None) -> tuple[float | None, float | None, float | None]:
    if res is None:
        return None, None, None
    return res.top1, res.drop, res.parity.cosine if res.parity else None
