"""Entropy calibration stays fast when onnxruntime's histograms grow: a tensor near zero in the first calibration
batch (a dead unit of CBAM's MLP on those images) made onnxruntime grow its histogram to 10^5+ bins, and the entropy
search over it (quadratic, pure Python) ran for hours. Histograms past MAX_ENTROPY_BINS are coarsened first."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from sa_deploy.calibration.int8 import MAX_ENTROPY_BINS, calibrate_ranges, coarsen_histograms


class _Batches:
    """A calibration source over fixed batches (the first one tiny, the later ones large)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches

    def batches(self, batch_size: int):
        for x in self._batches:
            yield x, None


def _tanh_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tanh", ["r"], ["y"])],
                              "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_histogram_that_grows_a_million_fold_is_calibrated_in_seconds(tmp_path):
    rng = np.random.default_rng(0)
    first = (rng.standard_normal((16, 64)) * 1e-4).astype(np.float32)  # ~0 on the first batch
    later = [(rng.standard_normal((16, 64)) * 3).astype(np.float32) for _ in range(3)]
    t = time.perf_counter()
    ranges = calibrate_ranges(_tanh_model(tmp_path / "m.onnx"), _Batches([first, *later]), "entropy", tmp_path)
    assert time.perf_counter() - t < 60  # unbounded (hours) before the coarsening
    low, high = (float(v) for v in ranges.data["r"].range_value)
    data_max = float(max(b.max() for b in later))
    assert low <= 0 and 0 < high <= data_max * 1.01, (low, high, data_max)  # a real threshold within the data


def test_coarsening_keeps_the_counts_the_range_and_zero_in_the_middle():
    rng = np.random.default_rng(1)
    bins, threshold = 100_002, np.float32(7.5)
    edges = np.linspace(-threshold, threshold, bins + 1).astype(np.float32)
    hist = rng.integers(0, 5, bins)
    grown = {"t": (hist, edges, np.float32(-7), np.float32(7), threshold), "small": (hist[:100], edges[:101], 0, 1, 1)}
    assert coarsen_histograms(grown, MAX_ENTROPY_BINS) == ["t"]
    merged, new_edges, low, high, new_threshold = grown["t"]
    assert len(merged) <= MAX_ENTROPY_BINS + 1 and len(new_edges) == len(merged) + 1
    assert merged.sum() == hist.sum()
    middle = len(merged) // 2
    assert len(merged) % 2 == 0 and abs(float(new_edges[middle])) < 1e-6  # zero stays an edge, as in the original
    assert merged[:middle].sum() == hist[:bins // 2].sum() and merged[middle:].sum() == hist[bins // 2:].sum()
    assert threshold <= float(new_threshold) < threshold * 1.01 and new_edges[-1] == -new_edges[0]
    assert (low, high) == (np.float32(-7), np.float32(7))
    assert len(grown["small"][0]) == 100  # histograms within the bound are left as they are


def test_an_odd_histogram_keeps_zero_in_its_middle_bin():
    bins = 9_999
    edges = np.linspace(-1, 1, bins + 1).astype(np.float32)
    hist = np.zeros(bins, np.int64)
    hist[bins // 2] = 5  # the bin around zero
    grown = {"t": (hist, edges, 0, 0, np.float32(1))}
    coarsen_histograms(grown, 1000)
    merged, new_edges = grown["t"][:2]
    assert len(merged) % 2 == 1 and merged[len(merged) // 2] == 5 and merged.sum() == 5
    assert float(new_edges[len(merged) // 2]) < 0 < float(new_edges[len(merged) // 2 + 1])
