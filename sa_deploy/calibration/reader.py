"""Sources (data.sources.Source, any layout) -> onnxruntime's CalibrationDataReader.

onnxruntime's reader is a one-shot iterator (``get_next`` until None); our sources are re-iterable. So a reader is
a cheap view over a source: build a fresh one for every pass (calibration, activation collection...)."""
from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from sa_deploy.data.sources import Source

BatchSource = Source  # the name calibration.int8 and calibration.sensitivity annotate with: the one source type


class SourceReader(CalibrationDataReader):
    """One pass over ``source`` as ``{input_name: batch}`` feeds."""

    def __init__(self, source: Source, input_name: str, batch_size: int = 16) -> None:
        self.source = source
        self.input_name = input_name
        self.batch_size = batch_size
        self._it = source.batches(batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        try:
            x, _ = next(self._it)
        except StopIteration:
            return None
        return {self.input_name: x}

    def __len__(self) -> int:
        return -(-len(self.source) // self.batch_size)

    def rewind(self) -> None:
        self._it = self.source.batches(self.batch_size)


def make_reader(source: Source, input_name: str, batch_size: int = 16) -> SourceReader:
    """A fresh reader (start of the data) for one onnxruntime pass."""
    return SourceReader(source, input_name, batch_size)


class FeedReader(CalibrationDataReader):
    """A reader over ready feeds (e.g. one batch): lets callers hand data to onnxruntime chunk by chunk."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
