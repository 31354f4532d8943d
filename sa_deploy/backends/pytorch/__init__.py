"""The PyTorch reference every artifact is compared against (always available)."""
from sa_deploy.backends.pytorch.manager import PyTorchManager
from sa_deploy.backends.registry import register_backend

MANAGER = register_backend(PyTorchManager())


def is_available() -> str | None:
    return MANAGER.is_available()
