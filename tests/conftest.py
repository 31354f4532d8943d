from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def labeled_data():
    """Real labeled CIFAR-10 images, from the data resolver: $SA_DEPLOY_DATA (development runs set it to
    ../shared/data/cifar10), else the sample embedded in the package -- so every test runs on a clean clone
    (SA_DEPLOY_DATA=embedded runs the suite as a clean clone would). ``.val`` / ``.calib`` open with
    ``.open(cfg, num, seed)``; ``.val.cli_value`` is what to pass to ``--data``."""
    from sa_deploy.data.resolve import resolve_labeled_data

    return resolve_labeled_data()


@pytest.fixture(scope="session")
def sample():
    """The sample embedded in the package (the same images on every machine)."""
    from sa_deploy.data.resolve import resolve_labeled_data

    return resolve_labeled_data("embedded")
