"""Runtimes sa-deploy builds for and runs on, one folder each, behind one runner interface (``base.Runner``).

``BACKENDS`` is the registry: each entry names the artifact suffixes the backend runs, where its runner class
lives (imported only when used, so optional libraries stay optional) and how to tell whether it is usable here
(``unavailable_reason(name)``, like mmdeploy's ``is_available()``). The pipeline asks the registry; it never probes
imports itself. To add a runtime: a folder here with ``runner.py`` (a Runner subclass), its export/build code,
an ``is_available()`` in its ``__init__.py``, and one ``register_backend`` line below."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from sa_deploy.backends.base import Runner
from sa_deploy.backends.ort.runner import OnnxRuntimeRunner
from sa_deploy.backends.pytorch.runner import TorchRunner
from sa_deploy.errors import SADeployError


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # sa_deploy.backends.<folder>: its __init__ has is_available() -> None | reason
    runner: str  # "module:Class" of its Runner
    suffixes: tuple[str, ...] = ()  # artifact files it runs ((): the reference only)

    def unavailable_reason(self) -> str | None:
        """None when this backend can build and run here, else why not (with the install hint)."""
        return importlib.import_module(self.package).is_available()

    def runner_class(self) -> type[Runner]:
        module, cls = self.runner.split(":")
        return getattr(importlib.import_module(module), cls)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("pytorch", "sa_deploy.backends.pytorch", "sa_deploy.backends.pytorch.runner:TorchRunner"))
register_backend(Backend("onnxruntime", "sa_deploy.backends.ort", "sa_deploy.backends.ort.runner:OnnxRuntimeRunner",
                         (".onnx",)))
register_backend(Backend("coreml", "sa_deploy.backends.coreml", "sa_deploy.backends.coreml.runner:CoreMLRunner",
                         (".mlpackage",)))
register_backend(Backend("openvino", "sa_deploy.backends.openvino",
                         "sa_deploy.backends.openvino.runner:OpenVINORunner", (".xml",)))
register_backend(Backend("tensorrt", "sa_deploy.backends.trt", "sa_deploy.backends.trt.runner:TensorRTRunner",
                         (".engine", ".plan")))


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise SADeployError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` is usable on this machine, else the reason (for a 'skipped' line)."""
    return get_backend(name).unavailable_reason()


def backend_for(path: str | Path) -> Backend:
    p = Path(path)
    for backend in BACKENDS.values():
        if p.suffix in backend.suffixes:
            return backend
    known = ", ".join(s for b in BACKENDS.values() for s in b.suffixes)
    raise SADeployError(f"don't know how to run {p.name}: expected one of {known}")


def open_runner(path: str | Path, threads: int | None = None, **options) -> Runner:
    """A (not yet activated) runner for an artifact file, chosen by its format; use it as ``with runner:``.
    ``options`` go to the runner (e.g. ``precision_hint="bf16"`` for OpenVINO)."""
    p = Path(path)
    if not p.exists():
        raise SADeployError(f"artifact not found: {p}")
    backend = backend_for(p)
    reason = backend.unavailable_reason() if backend.name != "onnxruntime" else None
    if reason and backend.name != "tensorrt":  # the TensorRT runner says itself what is missing (tensorrt or GPU)
        raise SADeployError(f"cannot run {p.name}: {reason}")
    return backend.runner_class()(p, threads=threads, **options)


__all__ = ["BACKENDS", "Backend", "OnnxRuntimeRunner", "Runner", "TorchRunner", "backend_for", "get_backend",
           "open_runner", "register_backend", "unavailable_reason"]
