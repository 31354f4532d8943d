"""The PyTorch reference every artifact is compared against (it runs modules, not files)."""
from __future__ import annotations

from pathlib import Path

from sa_deploy.backends.base import Runner
from sa_deploy.backends.manager import BackendManager


class PyTorchManager(BackendManager):
    name = "pytorch"
    runner_path = "sa_deploy.backends.pytorch.runner:TorchRunner"

    def runner(self, path: str | Path, threads: int | None = None, **options) -> Runner:  # a module, not a file
        return self.runner_class()(path, threads, **options)
