"""Helpers shared by the test modules (imported as ``from helpers import ...``; pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sa_deploy.backends import TorchRunner
from sa_deploy.models.random_weights import randomize

__all__ = ["ROOT", "randomize", "torch_logits"]

ROOT = Path(__file__).resolve().parents[1]  # the repository (scripts/ live here)


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The PyTorch reference logits of ``model`` on NCHW float inputs ``x``."""
    with TorchRunner(model) as runner:
        return runner.infer(x)
