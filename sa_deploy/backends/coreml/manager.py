"""The CoreML backend: .mlpackage ML programs (Core ML on macOS, the numpy reference MIL executor elsewhere)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import ArtifactSpec, BackendManager, BuildContext
from sa_deploy.util.optional import missing


class CoreMLManager(BackendManager):
    name = "coreml"
    suffixes = (".mlpackage",)
    runner_path = "sa_deploy.backends.coreml.runner:CoreMLRunner"
    stage_group = "CoreML mlprogram"

    def is_available(self) -> str | None:
        return missing("coremltools", "coreml")

    def owns(self, path: Path) -> bool:  # a package under another name is still a package
        return path.suffix in self.suffixes or (path.is_dir() and (path / "Manifest.json").is_file())

    def metadata(self, path: Path) -> Any:
        from sa_deploy.backends.coreml.mil_reader import read_mlpackage_metadata

        return read_mlpackage_metadata(path)

    def check(self, path: Path, input_size: int | None = None, num_classes: int | None = None) -> None:
        from sa_deploy.backends.coreml.mil_reader import check_mlpackage

        check_mlpackage(path)

    def owned_output(self, path: Path) -> bool:
        from sa_deploy.backends.coreml.export import is_sa_deploy_mlpackage

        return is_sa_deploy_mlpackage(path)

    def inspect(self, path: Path) -> Any:
        from sa_deploy.backends.coreml.inspect import inspect_mlpackage

        return inspect_mlpackage(path)

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        """An ML program from the model (its lowering), at the spec's precision; W8A8 calibrates on the run's
        calibration images."""
        from sa_deploy.backends.coreml.export import export_coreml

        batches = None
        if spec.precision == "w8a8":
            batches, seen = [], 0
            for x, _ in context.calib.batches(32):
                batches.append(x)
                seen += len(x)
                if seen >= context.calib_num:
                    break
        export_coreml(context.model, spec.path, spec.lowering or "fold", spec.precision, batches)
        return {}
