"""The JSON sidecar written next to every TensorRT engine (``model.engine`` -> ``model.engine.json``).

An engine is opaque and only runs on the TensorRT version and GPU generation that built it, so the sidecar
carries what the engine cannot: the deploy config from the ONNX metadata, how it was built, and where. The
runner checks it before deserializing. No TensorRT import here, so all of this is tested without it."""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SADeployError
from .atomic import write_bytes_atomic

SCHEMA = 1


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Profile:
    """The optimization profile of the batch dim (the only dynamic dim the lint allows)."""
    input_name: str
    chw: tuple[int, int, int]
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise SADeployError(f"batch profile must satisfy 1 <= min <= opt <= max, got min {self.min_batch}, "
                                f"opt {self.opt_batch}, max {self.max_batch}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((b, *self.chw) for b in (self.min_batch, self.opt_batch, self.max_batch))  # type: ignore

    def to_dict(self) -> dict:
        mn, opt, mx = self.shapes()
        return {"input": self.input_name, "min": list(mn), "opt": list(opt), "max": list(mx)}


def make_sidecar(*, deploy_config: dict[str, str], trt_version: str, gpu: dict[str, Any], precision: str,
                 typing: str, profile: Profile, onnx_sha256: str, onnx_path: str, engine_sha256: str,
                 build_seconds: float, options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "deploy_config": dict(deploy_config),
        "tensorrt_version": trt_version,
        "gpu": dict(gpu),
        "precision": precision,
        "typing": typing,  # "strongly-typed" (precision from the graph) or "builder-flags" (TensorRT 10)
        "profile": profile.to_dict(),
        "source_onnx": {"path": onnx_path, "sha256": onnx_sha256},
        "engine_sha256": engine_sha256,
        "build_seconds": round(build_seconds, 2),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sa_deploy_version": __version__,
        "options": dict(options or {}),
    }


def write_sidecar(engine: str | Path, sidecar: dict[str, Any]) -> Path:
    return write_bytes_atomic(sidecar_path(engine), (json.dumps(sidecar, indent=2) + "\n").encode())


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise SADeployError(f"{path.name} not found next to {Path(engine).name}: sa-deploy runs only engines it "
                            "built (the sidecar says which TensorRT and GPU an engine is for)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SADeployError(f"{path.name} is not readable JSON ({type(exc).__name__})") from None
    missing = [k for k in ("tensorrt_version", "gpu", "profile", "engine_sha256", "precision") if k not in data]
    if missing:
        raise SADeployError(f"{path.name} lacks {', '.join(missing)}; rebuild the engine with `sa-deploy build`")
    return data


def check_sidecar(sidecar: dict[str, Any], engine_bytes: bytes, trt_version: str, gpu: dict[str, Any]) -> None:
    """Raise a clear SADeployError when the engine cannot be trusted to run here; warn on a different GPU model of
    the same compute capability (it runs, but its kernels were timed on the other card)."""
    if bytes_sha256(engine_bytes) != sidecar["engine_sha256"]:
        raise SADeployError("the engine file does not match its sidecar (engine_sha256 differs): it was replaced "
                            "or is incomplete; rebuild with `sa-deploy build`")
    built = sidecar["tensorrt_version"]
    if built != trt_version:
        raise SADeployError(f"engine built with TensorRT {built}, but TensorRT {trt_version} is installed: "
                            "engines are tied to the exact TensorRT version; rebuild it here")
    want_cc, have_cc = str(sidecar["gpu"].get("compute_capability")), str(gpu.get("compute_capability"))
    if want_cc != have_cc:
        raise SADeployError(f"engine built for {sidecar['gpu'].get('name')} (compute capability {want_cc}), but "
                            f"this GPU is {gpu.get('name')} ({have_cc}); rebuild it on this GPU")
    if sidecar["gpu"].get("name") != gpu.get("name"):
        warnings.warn(f"engine was built and timed on {sidecar['gpu'].get('name')}, running on {gpu.get('name')} "
                      "(same compute capability); rebuild for best speed", stacklevel=2)


def batch_range(sidecar: dict[str, Any]) -> tuple[int, int]:
    return int(sidecar["profile"]["min"][0]), int(sidecar["profile"]["max"][0])
