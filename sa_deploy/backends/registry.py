"""The registry of backend managers (one per runtime; see manager.py)."""
from __future__ import annotations

from sa_deploy.backends.manager import BackendManager
from sa_deploy.errors import SADeployError

BACKENDS: dict[str, BackendManager] = {}


def register_backend(manager: BackendManager) -> BackendManager:
    """Adds (or replaces) the runtime ``manager.name``; returns it."""
    if not manager.name:
        raise ValueError(f"{type(manager).__name__} has no name")
    BACKENDS[manager.name] = manager
    return manager


def unregister_backend(name: str) -> None:
    BACKENDS.pop(name, None)


def get_backend(name: str) -> BackendManager:
    if name not in BACKENDS:
        raise SADeployError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]
