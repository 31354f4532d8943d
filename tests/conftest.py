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


class _Lazy(dict):
    """A read-only-by-convention dict whose values are made on first access, once per session (a module that
    asks only for ``["fold"]`` pays for that export alone)."""

    def __init__(self, make) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key):
        value = self[key] = self._make(key)
        return value


@pytest.fixture(scope="session")
def exported_cifar(tmp_path_factory):
    """sa_resnet_cifar with its embedded weights, the file ``sa-deploy export --model sa_resnet_cifar --pretrained``
    writes (onnxsim; parity is not re-checked here, the export tests do that): ``exported_cifar["fold"]`` /
    ``["reshape-transpose"]`` is the FP32 ONNX path, made on first use once per session in one session folder.
    Shared: a test that writes next to, overwrites, corrupts or deletes a file copies it into its own folder first
    (``shutil.copy(exported_cifar["fold"], tmp_path)``)."""
    from sa_deploy import api
    from sa_deploy.models import create_model

    folder = tmp_path_factory.mktemp("exported_cifar")
    model = create_model("sa_resnet_cifar", pretrained=True)
    return _Lazy(lambda lowering: api.export(model, folder, lowering=lowering, parity=False).export.path)
