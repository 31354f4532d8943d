from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random SA parameters and BN statistics, so lowerings are tested away from the init values."""
    from sa_deploy.models.sa_layer import SALayer

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SALayer):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.25)
    return model.eval()


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    from sa_deploy.plan import default_data_dir

    root = default_data_dir()
    if root is None or not (root / "train").is_dir():
        pytest.skip("CIFAR-10 images not found at ../shared/data/cifar10 (set SA_DEPLOY_DATA)")
    return root
