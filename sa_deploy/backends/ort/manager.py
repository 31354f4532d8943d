"""The onnxruntime backend: every ONNX artifact (FP32, FP16, both INT8 flavours, files sa-deploy did not write)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import ArtifactSpec, BackendManager, BuildContext, Int8Plan
from sa_deploy.util.optional import missing


class OnnxRuntimeManager(BackendManager):
    name = "onnxruntime"
    suffixes = (".onnx",)
    runner_path = "sa_deploy.backends.ort.runner:OnnxRuntimeRunner"
    stage_group = "ONNX"

    def is_available(self) -> str | None:
        return missing("onnxruntime", "dev")

    def metadata(self, path: Path) -> Any:
        from sa_deploy.exporters.metadata import read_deploy_metadata

        return read_deploy_metadata(path)

    def check(self, path: Path, input_size: int | None = None, num_classes: int | None = None) -> None:
        """``load_onnx`` passes, one (N, 3, S, S) image input of the data's size, ``num_classes`` logits when the
        output size is fixed."""
        from sa_deploy.exporters.inspect import OnnxFileError, image_input, load_onnx

        model = load_onnx(path)
        image_input(model, path.name, input_size)
        dims = model.graph.output[0].type.tensor_type.shape.dim
        fixed = dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None
        if num_classes is not None and fixed is not None and fixed != num_classes:
            raise OnnxFileError(f"{path.name} outputs {fixed} classes, the model has {num_classes} (an artifact of "
                                "another model?)")

    def owned_output(self, path: Path) -> bool:
        from sa_deploy.exporters.metadata import is_sa_deploy_onnx

        return is_sa_deploy_onnx(path)

    def inspect(self, path: Path) -> Any:
        from sa_deploy.exporters.inspect import inspect_onnx

        return inspect_onnx(path)

    def int8_plan(self, path: Path) -> Int8Plan | None:
        """A Q/DQ file: the tensorrt flavour is judged by the float Q/DQ emulation (int32, TensorRT's numerics) with
        this CPU's kernels as its twin; any other Q/DQ file by this CPU's kernels, with the emulation as twin."""
        from sa_deploy.exporters.inspect import load_onnx
        from sa_deploy.exporters.metadata import onnx_metadata

        model = load_onnx(path)
        meta = onnx_metadata(model, path.name)
        if meta.precision != "int8" and not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
            return None
        flavour, bits = meta.int8_flavour, meta.int8_weight_bits
        emulate: dict[str, Any] = {"qdq_emulation": True}
        if flavour == "tensorrt":
            return Int8Plan(emulate, "emulation", (path, {}), flavour, bits)
        return Int8Plan({}, "kernels", (path, emulate), flavour, bits)

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        """The ONNX family: an export of the model (a lowering), or FP16 / INT8 Q/DQ from the FP32 export."""
        from sa_deploy.exporters.checks import check_finite_weights

        if source is None:
            from sa_deploy.exporters.onnx import export_onnx

            return {"nodes": export_onnx(context.model, spec.path, spec.lowering or "fold").nodes}
        check_finite_weights(source)
        if spec.precision == "fp16":
            from sa_deploy.exporters.fp16 import convert_fp16

            convert_fp16(source, spec.path)
            return {}
        from sa_deploy.calibration.int8 import quantize_int8

        o = spec.options
        q = quantize_int8(source, spec.path, context.calib, o["method"], o["flavour"],
                          cache_dir=context.cache_dir, keep_sa_gate_float=o.get("keep_sa_gate_float"),
                          weight_bits=o.get("weight_bits"))
        variant = f"int8 {q.flavour}, {q.weight_bits}-bit weights" + (f", SA gate {q.sa_gate}" if q.has_sa_gate
                                                                       else "")
        return {"variant": variant, "quantize": {k: v for k, v in q.to_dict().items() if k != "path"}}
