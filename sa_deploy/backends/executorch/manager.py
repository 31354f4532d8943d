"""The ExecuTorch backend: .pte programs delegated to XNNPACK (FP32, and INT8 quantized by PT2E with the XNNPACK
quantizer), each with its JSON sidecar (``X.pte.json``: the deploy config, since a .pte has no user metadata)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import ArtifactSpec, BackendManager, BuildContext
from sa_deploy.errors import SADeployError
from sa_deploy.util.optional import missing

SIDECAR_SUFFIX = ".pte.json"


class ExecuTorchManager(BackendManager):
    name = "executorch"
    suffixes = (".pte",)
    companion_suffixes = (SIDECAR_SUFFIX,)  # X.pte -> X.pte.json (Path.with_suffix keeps the name)
    runner_path = "sa_deploy.backends.executorch.runner:ExecuTorchRunner"
    stage_group = "ExecuTorch (XNNPACK)"

    def is_available(self) -> str | None:
        return missing("executorch", "executorch")

    def owns_output(self, path: Path) -> bool:
        return self.owns(path) or path.name.endswith(SIDECAR_SUFFIX)

    def metadata(self, path: Path) -> dict[str, str]:
        from sa_deploy.backends.executorch.sidecar import read_metadata

        return read_metadata(path)

    def check(self, path: Path, input_size: int | None = None, num_classes: int | None = None) -> None:
        """A readable program whose ``forward`` takes one float (N, 3, S, S) image (S = ``input_size`` when given)
        and gives (N, classes); its sidecar, when there is one, describes this very file."""
        from sa_deploy.backends.executorch.inspect import METHOD, forward_plan, io_of, read_program
        from sa_deploy.backends.executorch.sidecar import check_sidecar, read_sidecar

        plan = forward_plan(read_program(path), METHOD)
        inputs, outputs = io_of(plan)
        shape = inputs[0]["shape"] if len(inputs) == 1 else []
        if len(inputs) != 1 or inputs[0]["dtype"] != "float" or len(shape) != 4 or shape[1] != 3:
            got = ", ".join(f"{i['dtype']} {i['shape']}" for i in inputs) or "no input"
            raise SADeployError(f"{path.name}: '{METHOD}' must take one float (N, 3, H, W) image; it takes {got}")
        if input_size is not None and shape[2:] != [input_size, input_size]:
            raise SADeployError(f"{path.name} takes {shape[2]}x{shape[3]} images; the model's preprocessing gives "
                                f"{input_size}x{input_size}")
        if num_classes is not None and outputs and outputs[0]["shape"][-1:] != [num_classes]:
            raise SADeployError(f"{path.name} gives outputs of shape {outputs[0]['shape']}, expected "
                                f"(N, {num_classes})")
        sidecar = read_sidecar(path)
        if sidecar is not None:
            check_sidecar(path, sidecar)

    def owned_output(self, path: Path) -> bool:
        from sa_deploy.backends.executorch.sidecar import owned_pte, owned_sidecar

        return owned_sidecar(path) if path.name.endswith(SIDECAR_SUFFIX) else owned_pte(path)

    def inspect(self, path: Path) -> Any:
        from sa_deploy.backends.executorch.inspect import inspect_pte

        return inspect_pte(path)

    # --- building, for `sa-deploy run` ----------------------------------------------------------------------------
    def plan_artifacts(self, plan: Any, upstream: list[ArtifactSpec]) -> list[ArtifactSpec]:
        """FP32 and INT8 programs of the fold-lowered model (built from the model, not from an ONNX file), beside
        the run's other artifacts; none when the plan says ``executorch: false``."""
        if not getattr(plan, "executorch", True):
            return []
        base = next((s for s in upstream if s.backend == "onnxruntime" and s.lowering), None)
        name = base.path.stem.removesuffix(f"_{base.lowering}") if base is not None else plan.model
        out = base.path.parent if base is not None else Path(plan.out)
        calib = getattr(plan, "calib_num", None)
        return [
            ArtifactSpec("executorch-fp32", self.name, "executorch", "fp32", out / f"{name}_fold_fp32.pte", "fold",
                         "fp32 xnnpack", stage="ExecuTorch program (fp32, XNNPACK)"),
            ArtifactSpec("executorch-int8", self.name, "executorch", "int8", out / f"{name}_fold_int8.pte", "fold",
                         "int8 xnnpack (PT2E)", stage=f"ExecuTorch program (int8: PT2E XNNPACKQuantizer, "
                                                     f"{calib} calibration images)"),
        ]

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        """A .pte (+ sidecar) from the model: the lowering with the SA gate in its XNNPACK form; INT8 calibrated on
        all of the run's calibration images (as the ONNX INT8 path is)."""
        from sa_deploy.backends.executorch.export import export_executorch

        batches = None
        if spec.precision == "int8":
            if context.calib is None:
                raise SADeployError("ExecuTorch INT8 needs the run's calibration images")
            batches = [x for x, _ in context.calib.batches(32)]
        result = export_executorch(context.model, spec.path, spec.precision, batches, spec.lowering or "fold")
        row: dict[str, Any] = {"sa_gate_form": result.gate_form,
                               "xnnpack_partitions": result.program.get("xnnpack_partitions"),
                               "portable_ops": result.program.get("portable_ops"),
                               "build_seconds": round(result.seconds, 1)}
        if result.quantization:
            q = result.quantization
            row["quantize"] = {**q, "method": "histogram"}
            row["variant"] = f"int8 xnnpack (PT2E, {q['calibration_count']} calibration images)"
        return row
