"""TensorRT 10's legacy implicit-INT8 calibrators (entropy / minmax), fed by our calibration sources.

Only used when asked (``--legacy-calibrator``): explicit Q/DQ from ``sa-deploy quantize`` is the supported INT8
path, and TensorRT 11 removed these classes. Device buffers come from torch (no pycuda)."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sa_deploy.util.atomic import any_regular_file, write_bytes_atomic

LEGACY_CALIBRATORS = ("entropy", "minmax")


def make_calibrator(trt: ModuleType, kind: str, source: Any, batch_size: int, cache: Path, device: int = 0) -> Any:
    """An IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator over ``source.batches(batch_size)`` (full batches only:
    TensorRT calibrates with a fixed batch size). ``cache`` is read if present and written after calibration."""
    import torch

    base = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}[kind]

    class SourceCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # the pybind base must be initialised explicitly
            self._batches = iter(source.batches(batch_size))
            self._current: torch.Tensor | None = None  # kept alive while TensorRT reads it
            self.batches_used = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            for x, _ in self._batches:
                if len(x) == batch_size:
                    self._current = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(f"cuda:{device}")
                    self.batches_used += 1
                    return [int(self._current.data_ptr())]
            return None

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            # named <engine>.<calibrator>.<data fingerprint>.calib: read above, then updated
            write_bytes_atomic(cache, bytes(memoryview(data)), owned=any_regular_file)

    return SourceCalibrator()
