"""The OpenVINO backend: IRs (.xml + .bin) on the CPU plugin with an explicit precision hint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import BackendManager, Int8Plan
from sa_deploy.util.hashing import file_sha256
from sa_deploy.util.optional import missing


class OpenVINOManager(BackendManager):
    name = "openvino"
    suffixes = (".xml",)
    companion_suffixes = (".bin",)
    runner_path = "sa_deploy.backends.openvino.runner:OpenVINORunner"

    def is_available(self) -> str | None:
        return missing("openvino", "openvino")

    def metadata(self, path: Path) -> dict[str, str]:
        from sa_deploy.backends.openvino.inspect import read_ir_metadata

        return read_ir_metadata(path)

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
        if meta.get("precision") != "int8":
            return None
        sha = meta.get("source_onnx_sha256")
        candidates = [path.with_suffix(".onnx")] + sorted(path.parent.glob("*.onnx"))
        source = next((c for c in candidates if sha and c.is_file() and file_sha256(c) == sha), None)
        bits = meta.get("int8_weight_bits")
        return Int8Plan({}, "kernels", (source, {"qdq_emulation": True}) if source else None,
                        meta.get("int8_flavour"), int(bits) if bits and bits.isdigit() else None)
