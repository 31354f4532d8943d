"""The OpenVINO backend: IRs (.xml + .bin) on the CPU plugin with an explicit precision hint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import ArtifactSpec, BackendManager, BuildContext, Int8Plan, SkipArtifact
from sa_deploy.util.hashing import file_sha256
from sa_deploy.util.optional import missing


class OpenVINOManager(BackendManager):
    name = "openvino"
    suffixes = (".xml",)
    companion_suffixes = (".bin",)
    runner_path = "sa_deploy.backends.openvino.runner:OpenVINORunner"
    stage_group = "OpenVINO IR"

    def is_available(self) -> str | None:
        return missing("openvino", "openvino")

    def metadata(self, path: Path) -> Any:
        from sa_deploy.backends.openvino.inspect import read_ir_deploy_metadata

        return read_ir_deploy_metadata(path)

    def check(self, path: Path, input_size: int | None = None, num_classes: int | None = None) -> None:
        from sa_deploy.backends.openvino.inspect import check_ir_image_input, read_ir

        check_ir_image_input(read_ir(path), path.name, input_size)

    def owned_output(self, path: Path) -> bool:
        from sa_deploy.backends.openvino.export import owned_ir_file

        return owned_ir_file(path)

    def inspect(self, path: Path) -> Any:
        from sa_deploy.backends.openvino.inspect import inspect_ir

        return inspect_ir(path)

    def int8_plan(self, path: Path) -> Int8Plan | None:
        """An INT8 IR is judged by this CPU's kernels; its twin is the Q/DQ ONNX it was converted from, emulated
        (found beside it by the SHA-256 its rt_info records)."""
        meta = self.metadata(path)
        if meta.precision != "int8":
            return None
        sha = meta.source_onnx_sha256
        candidates = [path.with_suffix(".onnx")] + sorted(path.parent.glob("*.onnx"))
        source = next((c for c in candidates if sha and c.is_file() and file_sha256(c) == sha), None)
        return Int8Plan({}, "kernels", (source, {"qdq_emulation": True}) if source else None, meta.int8_flavour,
                        meta.int8_weight_bits)

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        """An IR from an ONNX artifact (FP32, FP16-compressed weights, INT8 from a Q/DQ file); a row that runs an
        existing IR with another precision hint (bf16) builds nothing and is skipped where the CPU lacks it."""
        if spec.runner_options.get("precision_hint") == "bf16":
            from sa_deploy.backends.openvino.device import cpu_has_bf16

            if not cpu_has_bf16():
                raise SkipArtifact("this CPU reports no bf16")
            return {}
        from sa_deploy.backends.openvino.export import convert_onnx
        from sa_deploy.exporters.metadata import read_deploy_metadata

        cfg = read_deploy_metadata(source).preprocess
        convert_onnx(source, spec.path, bool(spec.options.get("fp16_weights")), cfg)
        return {}
