"""The TensorRT backend: engines (.engine / .plan) with the sidecar (ENGINE.json) that is their build->run contract."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import ArtifactSpec, BackendManager, BuildContext
from sa_deploy.errors import SADeployError


class TensorRTManager(BackendManager):
    name = "tensorrt"
    suffixes = (".engine", ".plan")
    runner_path = "sa_deploy.backends.trt.runner:TensorRTRunner"
    stage_group = "TensorRT engines"

    def is_available(self) -> str | None:
        from sa_deploy.backends.trt.env import cuda_gpu, import_tensorrt

        try:
            import_tensorrt()
            cuda_gpu()
        except SADeployError as exc:
            return str(exc)
        return None

    def owns(self, path: Path) -> bool:  # an engine's sidecar stands for its engine
        return path.suffix in self.suffixes or path.name.endswith((".engine.json", ".plan.json"))

    def files_of(self, path: Path) -> list[Path]:
        from sa_deploy.backends.trt.sidecar import sidecar_path

        sidecar = sidecar_path(path)
        return [path] + ([sidecar] if sidecar.is_file() else [])

    def metadata(self, path: Path) -> Any:
        from sa_deploy.backends.trt.sidecar import read_sidecar_metadata

        return read_sidecar_metadata(path)

    def owned_output(self, path: Path) -> bool:
        from sa_deploy.backends.trt.sidecar import owned_engine

        return owned_engine(path)

    def inspect(self, path: Path) -> Any:
        from sa_deploy.backends.trt.inspect import inspect_engine

        return inspect_engine(path)

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        from sa_deploy.backends.trt.build import build_engine

        build_engine(source, spec.path, precision=spec.precision)
        return {}
