"""The one guard for optional dependencies (coremltools, tensorrt, openvino): import it or say how to install it."""
from __future__ import annotations

import importlib
from types import ModuleType

from sa_deploy.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """``module`` imported, or MissingDependencyError naming ``pip install 'sa-deploy[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package or module.split(".")[0], extra, purpose) from None


def missing(module: str, extra: str) -> str | None:
    """None when ``module`` imports, else the reason (with the install command) a stage is skipped."""
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{module.split('.')[0]} not installed: pip install 'sa-deploy[{extra}]'"
    return None
