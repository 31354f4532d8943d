"""Numerical parity of an artifact against the PyTorch reference, with per-precision tolerances."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sa_deploy.backends.base import Runner


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None  # None: not checked (quantized outputs differ by design; cosine/top-1 decide)
    min_cosine: float
    min_top1_agreement: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_cosine=0.99999, min_top1_agreement=1.0),
    "fp16": Tolerance(max_abs=None, min_cosine=0.999, min_top1_agreement=0.95),
    # bf16 keeps 8 mantissa bits (fp16: 11): OpenVINO's bf16 hint runs convolutions in it
    "bf16": Tolerance(max_abs=None, min_cosine=0.995, min_top1_agreement=0.9),
    "int8": Tolerance(max_abs=None, min_cosine=0.98, min_top1_agreement=0.8),
}


# the tolerance class of each artifact precision (ONNX, CoreML, OpenVINO, TensorRT spell them differently)
TOLERANCE_CLASS: dict[str, str] = {
    "fp32": "fp32", "fp16": "fp16", "bf16": "bf16",
    "int8": "int8", "int8-weights": "int8", "palettize": "int8", "w8a8": "int8",
}


def tolerance_class(precision: str) -> str:
    """The TOLERANCES key for an artifact precision (unknown ones are treated as quantized: int8)."""
    return TOLERANCE_CLASS.get(precision, "int8")


@dataclass
class ParityStats:
    batch: int
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float
    passed: bool
    precision: str

    def to_dict(self) -> dict:
        return asdict(self)

    def reason(self) -> str:
        """Why this comparison failed against its precision's default tolerance ("" when it passed)."""
        if self.passed:
            return ""
        if math.isnan(self.cosine):
            return "outputs are NaN/Inf"
        tol = TOLERANCES[tolerance_class(self.precision)]
        parts = []
        if self.cosine < tol.min_cosine:
            parts.append(f"cosine {self.cosine:.5f} < {tol.min_cosine:g}")
        if self.top1_agreement < tol.min_top1_agreement:
            parts.append(f"top-1 agreement {self.top1_agreement:.2%} < {tol.min_top1_agreement:.0%}")
        if tol.max_abs is not None and self.max_abs > tol.max_abs:
            parts.append(f"max abs diff {self.max_abs:.2e} > {tol.max_abs:g}")
        return ", ".join(parts) or "outside the tolerance"


def compare(candidate: np.ndarray, reference: np.ndarray, precision: str = "fp32",
            tolerance: Tolerance | None = None) -> ParityStats:
    """Stats of ``candidate`` vs ``reference`` logits (N, classes).

    max_rel is elementwise |a-b| / max(|b|, 1e-3) so that near-zero logits do not dominate; cosine is the mean
    over samples of the per-sample cosine similarity. Non-finite logits on either side make every statistic NaN
    and the comparison fail (NaN is never read as "equal")."""
    tol = tolerance or TOLERANCES[tolerance_class(precision)]
    a = np.asarray(candidate, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs reference {b.shape}")
    if a.size == 0:
        raise ValueError("no outputs to compare")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        nan = float("nan")
        return ParityStats(len(a), nan, nan, nan, nan, False, precision)
    diff = np.abs(a - b)
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(b), 1e-3)).max())
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    na, nb = np.linalg.norm(a2, axis=1), np.linalg.norm(b2, axis=1)
    # a zero vector matches only a zero vector
    cos = np.where((na > 0) & (nb > 0), (a2 * b2).sum(1) / np.maximum(na * nb, 1e-300),
                   np.where((na == 0) & (nb == 0), 1.0, 0.0))
    cosine = float(cos.mean())
    agree = float((a2.argmax(1) == b2.argmax(1)).mean())
    passed = bool(cosine >= tol.min_cosine and agree >= tol.min_top1_agreement
                  and (tol.max_abs is None or max_abs <= tol.max_abs))
    return ParityStats(len(a), max_abs, max_rel, cosine, agree, passed, precision)


def check_parity(runner: Runner, reference: Runner, inputs: list[np.ndarray], precision: str = "fp32",
                 tolerance: Tolerance | None = None) -> list[ParityStats]:
    """One ParityStats per input batch (e.g. batch 1 and batch 3 through the same file)."""
    return [compare(runner.infer(x), reference.infer(x), precision, tolerance) for x in inputs]
