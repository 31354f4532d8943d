"""What a TensorRT engine is (``sa-deploy inspect X.engine``), from its sidecar: an engine can only be deserialized by
the TensorRT version that built it, on a GPU, so its layers are not read here. The sidecar (``X.engine.json``, the
build->run contract) says what it was built from, with which TensorRT, for which GPU and batch range; whether the
engine file still matches it is checked by hash. No TensorRT import."""
from __future__ import annotations

import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sa_deploy.backends.trt.sidecar import read_sidecar, sidecar_path
from sa_deploy.errors import SADeployError
from sa_deploy.util.hashing import file_sha256


@dataclass
class EngineInfo:
    path: Path
    size_bytes: int
    sidecar: Path
    matches_sidecar: bool  # the engine's SHA-256 is the one its sidecar recorded
    tensorrt_version: str
    gpu: dict[str, Any]
    precision: str
    typing: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)  # not recorded in the sidecar
    op_histogram: dict[str, int] = field(default_factory=dict)  # layers: not readable without TensorRT
    source_onnx: dict[str, str] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)  # seconds, built_at, sa_deploy_version, options
    metadata: dict[str, str] = field(default_factory=dict)  # the deploy config of the ONNX it was built from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"], d["sidecar"] = str(self.path), str(self.sidecar)
        return d

    def lines(self) -> list[str]:
        """What ``sa-deploy inspect`` prints for an engine (it has no op table: see the module doc)."""
        gpu = self.gpu.get("name", "?") + (f", compute capability {self.gpu['compute_capability']}"
                                           if self.gpu.get("compute_capability") else "")
        out = [f"{self.path}: TensorRT engine, {self.size_bytes / 1e6:.2f} MB, {self.precision} "
               f"({self.typing or '?'}), TensorRT {self.tensorrt_version}, built for {gpu}",
               f"  sidecar {self.sidecar.name}: " + ("the engine matches it (SHA-256)" if self.matches_sidecar else
                                                     "the engine does NOT match it (replaced or incomplete: "
                                                     "rebuild with `sa-deploy build`)")]
        out += [f"  input {it['name']}: {it['dtype']} {it['shape']} (profile min {it['min']}, opt {it['opt']}, "
                f"max {it['max']})" for it in self.inputs]
        if self.source_onnx:
            out.append(f"  built from {self.source_onnx.get('path', '?')} (sha256 "
                       f"{str(self.source_onnx.get('sha256', '?'))[:12]}...)")
        if self.build:
            out.append("  build: " + ", ".join(f"{k} {v}" for k, v in self.build.items() if v not in (None, "", {})))
        out.append("  layers: not listed (deserializing an engine needs the TensorRT that built it, on a GPU)")
        return out


def inspect_engine(path: str | Path) -> EngineInfo:
    """EngineInfo of an engine file and its sidecar; a missing engine or a missing/damaged sidecar is one
    SADeployError. ``path`` may also name the sidecar (``X.engine.json``)."""
    p = Path(path)
    if p.name.endswith((".engine.json", ".plan.json")):
        p = p.with_name(p.name[: -len(".json")])
    try:
        st = p.stat()
    except OSError:
        raise SADeployError(f"TensorRT engine not found: {p}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SADeployError(f"{p} is not a regular file (a TensorRT engine is one file, with {sidecar_path(p).name} "
                            "beside it)")
    side = read_sidecar(p)
    profile = side.profile
    try:
        low, high = side.batch_range
        inputs = [{"name": str(profile["input"]), "dtype": "float32",
                   "shape": [f"{low}..{high}", *list(profile["opt"])[1:]], "min": list(profile["min"]),
                   "opt": list(profile["opt"]), "max": list(profile["max"])}]
        config = {str(k): str(v) for k, v in (side.deploy_config or {}).items()}
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise SADeployError(f"{sidecar_path(p).name} is damaged (its profile or deploy config is not what "
                            "`sa-deploy build` writes); rebuild the engine") from None
    build = {"seconds": side.build_seconds, "built_at": side.built_at, "sa_deploy_version": side.sa_deploy_version,
             "options": side.options}
    return EngineInfo(p, st.st_size, sidecar_path(p), file_sha256(p) == side.engine_sha256, str(side.tensorrt_version),
                      dict(side.gpu) if isinstance(side.gpu, dict) else {}, str(side.precision), str(side.typing),
                      inputs, [], {}, dict(side.source_onnx) if isinstance(side.source_onnx, dict) else {}, build,
                      config)
