"""The JSON sidecar written next to every TensorRT engine (``model.engine`` -> ``model.engine.json``).

An engine is opaque and only runs on the TensorRT version and GPU generation that built it, so the sidecar
carries what the engine cannot: the deploy config from the ONNX metadata, how it was built, and where. The
runner checks it before deserializing. No TensorRT import here, so all of this is tested without it."""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sa_deploy import __version__
from sa_deploy.errors import SADeployError
from sa_deploy.models.deploy_metadata import DeployMetadata
from sa_deploy.util.atomic import atomic_path
from sa_deploy.util.hashing import bytes_sha256

SCHEMA = 1


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")



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


@dataclass(frozen=True)
class Sidecar:
    """The build->run contract of one engine: what it was built from, with what, for which GPU and batch range."""
    deploy_config: dict[str, str]
    tensorrt_version: str
    gpu: dict[str, Any]
    precision: str
    typing: str  # "strongly-typed" (precision from the graph) or "builder-flags" (TensorRT 10)
    profile: dict[str, Any]  # Profile.to_dict()
    source_onnx: dict[str, str]  # path, sha256
    engine_sha256: str
    build_seconds: float
    built_at: str
    sa_deploy_version: str = __version__
    options: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    REQUIRED = ("tensorrt_version", "gpu", "profile", "engine_sha256", "precision")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "Sidecar":
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise SADeployError(f"{where} lacks {', '.join(missing)}; rebuild the engine with `sa-deploy build`")
        known = {f.name for f in fields(cls)}
        defaults = {"deploy_config": {}, "typing": "", "source_onnx": {}, "build_seconds": 0.0, "built_at": ""}
        return cls(**{**defaults, **{k: v for k, v in data.items() if k in known}})

    def metadata(self, where: str = "the sidecar") -> DeployMetadata:
        """The TensorRT reader: the engine's deploy metadata, typed: the ONNX file's it was built from, with the
        engine's own precision (a damaged value: one line naming ``where``)."""
        if not isinstance(self.deploy_config, dict):
            raise SADeployError(f"{where} has a damaged deploy_config (not a JSON object); rebuild the engine with "
                                "`sa-deploy build`")
        return DeployMetadata.from_strings({**{k: str(v) for k, v in self.deploy_config.items()},
                                            "precision": self.precision}, where)

    @property
    def batch_range(self) -> tuple[int, int]:
        return int(self.profile["min"][0]), int(self.profile["max"][0])

    def check(self, engine_bytes: bytes, trt_version: str, gpu: dict[str, Any]) -> None:
        """Raise a clear SADeployError when the engine cannot be trusted to run here; warn on a different GPU model
        of the same compute capability (it runs, but its kernels were timed on the other card)."""
        if bytes_sha256(engine_bytes) != self.engine_sha256:
            raise SADeployError("the engine file does not match its sidecar (engine_sha256 differs): it was "
                                "replaced or is incomplete; rebuild with `sa-deploy build`")
        if self.tensorrt_version != trt_version:
            raise SADeployError(f"engine built with TensorRT {self.tensorrt_version}, but TensorRT {trt_version} is "
                                "installed: engines are tied to the exact TensorRT version; rebuild it here")
        want_cc, have_cc = str(self.gpu.get("compute_capability")), str(gpu.get("compute_capability"))
        if want_cc != have_cc:
            raise SADeployError(f"engine built for {self.gpu.get('name')} (compute capability {want_cc}), but "
                                f"this GPU is {gpu.get('name')} ({have_cc}); rebuild it on this GPU")
        if self.gpu.get("name") != gpu.get("name"):
            warnings.warn(f"engine was built and timed on {self.gpu.get('name')}, running on {gpu.get('name')} "
                          "(same compute capability); rebuild for best speed", stacklevel=2)


def make_sidecar(*, deploy_config: DeployMetadata | dict[str, str], trt_version: str, gpu: dict[str, Any],
                 precision: str, typing: str, profile: Profile, onnx_sha256: str, onnx_path: str, engine_sha256: str,
                 build_seconds: float, options: dict[str, Any] | None = None) -> Sidecar:
    """The TensorRT writer's half: ``deploy_config`` (the source ONNX file's metadata, typed or in its stored string
    form) is kept in the sidecar's ``deploy_config`` object as strings; ``write_engine`` writes it."""
    if isinstance(deploy_config, DeployMetadata):
        deploy_config = deploy_config.to_strings()
    return Sidecar(dict(deploy_config), trt_version, dict(gpu), precision, typing, profile.to_dict(),
                   {"path": onnx_path, "sha256": onnx_sha256}, engine_sha256, round(build_seconds, 2),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), options=dict(options or {}))


def write_engine(engine: str | Path, engine_bytes: bytes, sidecar: Sidecar) -> Path:
    """The engine and its sidecar as one unit: both written to temp files first, then put in place back to back
    (sidecar, then engine), so a failure while writing leaves neither; returns the sidecar's path. Each may replace
    only sa-deploy's own file (an engine is ours when its sidecar is)."""
    engine = Path(engine)
    with atomic_path(engine, owned_engine) as tmp_engine, \
            atomic_path(sidecar_path(engine), owned_sidecar) as tmp_sidecar:
        tmp_engine.write_bytes(engine_bytes)
        tmp_sidecar.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return sidecar_path(engine)


def owned_sidecar(path: Path) -> bool:
    """Whether an existing file is a sidecar sa-deploy wrote: a JSON object with its engine hash and version."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return False
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "engine_sha256" in data and "sa_deploy_version" in data


def owned_engine(path: Path) -> bool:
    """An existing engine file is sa-deploy's when the sidecar beside it is (sa-deploy writes both)."""
    return path.is_file() and owned_sidecar(sidecar_path(path))


def read_sidecar(engine: str | Path) -> Sidecar:
    path = sidecar_path(engine)
    if not path.is_file():
        raise SADeployError(f"{path.name} not found next to {Path(engine).name}: sa-deploy runs only engines it "
                            "built (the sidecar says which TensorRT and GPU an engine is for)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SADeployError(f"{path.name} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise SADeployError(f"{path.name} is not a sidecar (a JSON object); rebuild with `sa-deploy build`")
    return Sidecar.from_dict(data, path.name)


def read_sidecar_metadata(engine: str | Path) -> DeployMetadata:
    """The deploy metadata of an engine, from its sidecar (``read_sidecar``: one-line errors for a missing or
    damaged one)."""
    return read_sidecar(engine).metadata(sidecar_path(engine).name)
