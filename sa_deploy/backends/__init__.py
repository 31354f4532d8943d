"""Runtimes sa-deploy builds for and runs on, one folder each, behind one runner interface (``base.Runner``) and
one manager (``manager.BackendManager``: which files it owns, their precision, size, metadata, checks, inspection,
how its INT8 is judged, how to run them).

``BACKENDS`` is the registry (``registry.py``): each ``backends/<name>/__init__.py`` registers its manager when this
package is imported, and everything that asks about an artifact asks the registry (``backend_for(path)``). Optional
libraries stay optional: a manager imports its runtime only when used. To add a runtime: a folder here whose
``__init__.py`` registers a BackendManager subclass (README, "Add a runtime"; the folders are found by listing this
package); a runtime defined elsewhere (a test, a plugin) calls ``register_backend`` itself."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from sa_deploy.backends.base import Runner
from sa_deploy.backends.manager import BackendManager, Int8Plan
from sa_deploy.backends.ort.runner import OnnxRuntimeRunner
from sa_deploy.backends.pytorch.runner import TorchRunner
from sa_deploy.backends.registry import BACKENDS, get_backend, register_backend, unregister_backend
from sa_deploy.errors import SADeployError

# every runtime folder registers its manager when imported: a new folder needs no edit here
for _folder in pkgutil.iter_modules(__path__):
    if _folder.ispkg:
        importlib.import_module(f"{__name__}.{_folder.name}")


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` is usable on this machine, else the reason (for a 'skipped' line)."""
    return get_backend(name).is_available()


def find_backend(path: str | Path) -> BackendManager | None:
    """The manager that owns ``path`` (None: no registered runtime does)."""
    p = Path(path)
    return next((m for m in BACKENDS.values() if m.owns(p)), None)


def backend_for(path: str | Path) -> BackendManager:
    """The manager that owns ``path``, or one line naming the formats sa-deploy knows."""
    backend = find_backend(path)
    if backend is None:
        known = ", ".join(s for m in BACKENDS.values() for s in m.suffixes)
        raise SADeployError(f"don't know how to run {Path(path).name}: expected one of {known}")
    return backend


def output_backend(path: str | Path) -> BackendManager | None:
    """The manager that writes files named like ``path`` (an artifact or a companion such as an IR's .bin)."""
    p = Path(path)
    return next((m for m in BACKENDS.values() if m.owns_output(p)), None)


def open_runner(path: str | Path, threads: int | None = None, **options) -> Runner:
    """A (not yet activated) runner for an artifact file, chosen by its format; use it as ``with runner:``.
    ``options`` go to the runner (e.g. ``precision_hint="bf16"`` for OpenVINO)."""
    p = Path(path)
    if not p.exists():
        raise SADeployError(f"artifact not found: {p}")
    backend = backend_for(p)
    reason = backend.is_available() if backend.name not in ("onnxruntime", "tensorrt") else None
    if reason:  # the TensorRT runner says itself what is missing (tensorrt or GPU)
        raise SADeployError(f"cannot run {p.name}: {reason}")
    return backend.runner(p, threads=threads, **options)


__all__ = ["BACKENDS", "BackendManager", "Int8Plan", "OnnxRuntimeRunner", "Runner", "TorchRunner",
           "backend_for", "find_backend", "get_backend", "open_runner", "output_backend",
           "register_backend", "unavailable_reason", "unregister_backend"]
