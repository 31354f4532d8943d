from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    from sa_deploy.data.resolve import default_data_dir

    root = default_data_dir()
    if root is None or not (root / "train").is_dir():
        pytest.skip("CIFAR-10 images not found at ../shared/data/cifar10 (set SA_DEPLOY_DATA)")
    return root
