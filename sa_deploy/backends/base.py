"""One interface for every backend (Polygraphy-style): activate -> infer -> deactivate.

A backend is one folder under ``sa_deploy/backends`` with a Runner subclass; ``backends.open_runner`` picks it
from the artifact. A runner must be activated before ``infer`` (``with runner:`` activates and always closes it)."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sa_deploy.util.int8_kernels import Int8Path


class Runner(ABC):
    """Runs NCHW float32 inputs and returns logits as float32 numpy."""

    name: str = "runner"

    def __init__(self) -> None:
        self.active = False

    def activate(self) -> "Runner":
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self.active:  # Polygraphy's rule: the caller owns the runner's lifetime (``with runner:``)
            raise RuntimeError(f"{type(self).__name__} is not active: use `with runner:` (or activate()) "
                               "before infer()")
        return np.asarray(self._infer(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)

    def latency_ms(self, x: np.ndarray, warmup: int = 3, iters: int = 20) -> list[float]:
        """Wall-clock milliseconds of each of ``iters`` timed calls (after ``warmup`` untimed ones)."""
        for _ in range(warmup):
            self.infer(x)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            self.infer(x)
            times.append((time.perf_counter() - t) * 1e3)
        return times

    def int8_path(self) -> "Int8Path | None":
        """How this runner accumulates int8 products here (util/int8_kernels.py); None where nothing runs in
        int8 or the runtime does not say. Call while active (some runtimes know it only once compiled)."""
        return None

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        ...
