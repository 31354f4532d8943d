"""PyTorch reference runner (FP32, eval mode, no grad)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sa_deploy.backends.base import Runner


class TorchRunner(Runner):
    name = "pytorch"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.threads = threads

    def _activate(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()
