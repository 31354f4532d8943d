"""What `sa-deploy run` does, as data: defaults, a YAML file, then command-line overrides; checked as a whole
(``RunPlan.check``) before any stage runs."""
from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sa_deploy.backends.manager import ArtifactSpec
from sa_deploy.data.resolve import LabeledData, resolve_labeled_data
from sa_deploy.errors import SADeployError
from sa_deploy.naming import artifact_name, derived_path


@dataclass
class RunPlan:
    model: str = "sa_resnet_cifar"
    checkpoint: str | None = None  # None: the embedded trained weights of `model`
    # where images come from (sa_deploy.data.resolve): a folder with train/ and val/ (image folders), or `embedded`;
    # default: $SA_DEPLOY_DATA, else the sample embedded in sa-deploy (data/resolve.py)
    data: str | None = None
    calib: str | None = None  # overrides data/train
    val: str | None = None  # overrides data/val
    labels: str | None = None  # labels file for a flat validation folder (CSV `filename,label` or `filename label`)
    out: str = "out/run"
    lowerings: list[str] = field(default_factory=lambda: ["fold", "reshape-transpose"])
    fp16: bool = True
    int8_flavours: list[str] = field(default_factory=lambda: ["tensorrt", "cpu"])
    int8_method: str = "entropy"
    # None: each flavour's default (cpu 7: overflow-safe on x86 without VNNI; tensorrt 8); 8 for cpu only where every
    # deployment CPU has VNNI/AMX or is Arm (backends/cpu_lint.py, util/int8_kernels.py)
    int8_weight_bits: int | None = None
    calib_num: int = 512
    val_num: int | None = None  # None: every validation image
    coreml: bool = True
    openvino: bool = True  # IR FP32, FP16 weights and INT8 (from the cpu-flavour Q/DQ ONNX) on the CPU plugin
    openvino_bf16: bool = True  # also run the FP32 IR with the bf16 hint, where the CPU has bf16
    executorch: bool = True  # ExecuTorch .pte FP32 and INT8 (PT2E) on XNNPACK, where the executorch extra is installed
    coreml_precisions: list[str] = field(default_factory=lambda: ["fp16", "w8a8"])
    coreml_val_num: int | None = 1000  # off macOS CoreML runs in the numpy reference executor: all of the embedded
    # sample (1,000), a stratified 1,000 of a larger set
    tensorrt: bool = True
    sensitivity: bool = True
    latency_batch: int = 1
    latency_iters: int = 30
    int8_max_drop: float = 1.0
    fp16_max_drop: float = 0.1
    bf16_max_drop: float = 0.5  # bf16 keeps 8 mantissa bits
    threads: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def budgets(self) -> dict[str, float]:
        """The drop budgets by tolerance class (validate.accuracy.budget_for): FP32 and FP16 share one."""
        return {"fp32": self.fp16_max_drop, "fp16": self.fp16_max_drop, "bf16": self.bf16_max_drop,
                "int8": self.int8_max_drop}

    def artifacts(self, model_name: str | None = None, has_sa_gate: bool = True,
                  upstream_only: bool = False) -> list[ArtifactSpec]:
        """Every artifact the run plans, derived once (typed ``ArtifactSpec``s, in build order): the ONNX family
        from the first lowering's export (FP16, INT8 per flavour), CoreML from the model, OpenVINO IRs (the INT8
        one from a cpu Q/DQ file whose SA gate stays float, an intermediate, unless the model has no SA gate),
        TensorRT engines; then what every other registered runtime plans from those
        (``BackendManager.plan_artifacts``). The planned outputs, the progress note, the build loop, the
        evaluation and the report all read this list."""
        from sa_deploy.backends import BACKENDS

        name, out = model_name or self.model, Path(self.out)
        specs: list[ArtifactSpec] = []
        for lowering in self.lowerings:
            specs.append(ArtifactSpec(f"onnx-{lowering}-fp32", "onnxruntime", "onnx", "fp32",
                                      out / artifact_name(name, lowering, suffix=".onnx"), lowering,
                                      options={"parity": True}, stage=f"export ONNX ({lowering}) + onnxsim"))
        base = specs[0]
        if self.fp16:
            specs.append(ArtifactSpec("onnx-fp16", "onnxruntime", "onnx", "fp16", derived_path(base.path, "fp16"),
                                      base.lowering, source=base.name, stage="FP16 ONNX"))
        for flavour in self.int8_flavours:
            specs.append(ArtifactSpec(f"onnx-int8-{flavour}", "onnxruntime", "onnx", "int8",
                                      derived_path(base.path, "int8", flavour, self.int8_method), base.lowering,
                                      f"int8 {flavour}", base.name,
                                      options={"flavour": flavour, "method": self.int8_method,
                                               "weight_bits": self.int8_weight_bits},
                                      stage=f"INT8 Q/DQ ({flavour}, {self.int8_method}, {self.calib_num} "
                                            "calibration images)"))
        if self.coreml:
            specs += [ArtifactSpec(f"coreml-{p}", "coreml", "coreml", p,
                                   out / artifact_name(name, "fold", p, suffix=".mlpackage"), "fold", p,
                                   stage=f"CoreML mlprogram ({p})") for p in self.coreml_precisions]
        if self.openvino:
            specs += [ArtifactSpec("openvino-fp32", "openvino", "openvino", "fp32", derived_path(base.path, "fp32",
                                   suffix=".xml"), base.lowering, "fp32 weights, f32 hint", base.name,
                                   stage="OpenVINO IR (fp32)"),
                      ArtifactSpec("openvino-fp16", "openvino", "openvino", "fp16", derived_path(base.path, "fp16",
                                   suffix=".xml"), base.lowering, "fp16 weights, f32 hint", base.name,
                                   options={"fp16_weights": True}, stage="OpenVINO IR (fp16)")]
            if "cpu" in self.int8_flavours:
                # the per-target SA gate precision: OpenVINO is faster with it float (docs/openvino.md); a model
                # without an SA gate has nothing to keep float: its IR comes from the cpu Q/DQ file itself
                qdq = next(s for s in specs if s.name == "onnx-int8-cpu")
                if has_sa_gate:
                    qdq = ArtifactSpec("onnx-int8-cpu-float-gate", "onnxruntime", "onnx", "int8",
                                       derived_path(base.path, "int8", "cpu", self.int8_method, "floatgate"),
                                       base.lowering, "int8 cpu, SA gate float", base.name, evaluate=False,
                                       options={**qdq.options, "keep_sa_gate_float": True},
                                       stage="INT8 Q/DQ for OpenVINO (cpu flavour, SA gate float)")
                    specs.append(qdq)
                specs.append(ArtifactSpec("openvino-int8", "openvino", "openvino", "int8",
                                          qdq.path.with_suffix(".xml"), base.lowering, None, qdq.name,  # its source's
                                          stage="OpenVINO IR (int8)"))
            if self.openvino_bf16:
                specs.append(ArtifactSpec("openvino-bf16", "openvino", "openvino", "bf16",
                                          derived_path(base.path, "fp32", suffix=".xml"), base.lowering,
                                          "fp32 IR, bf16 hint", "openvino-fp32",
                                          runner_options={"precision_hint": "bf16"}, stage="OpenVINO bf16 hint"))
        if self.tensorrt:
            for src, precision in (("onnx-fp16", "fp16"), ("onnx-int8-tensorrt", "int8")):
                source = next((s for s in specs if s.name == src), None)
                if source is not None:
                    specs.append(ArtifactSpec(f"tensorrt-{precision}", "tensorrt", "tensorrt", precision,
                                              source.path.with_suffix(".engine"), source.lowering, source=src,
                                              stage=f"TensorRT engine ({precision})"))
        if upstream_only:
            return specs
        for manager in BACKENDS.values():  # runtimes registered beside the built-in ones plan their own
            specs += manager.plan_artifacts(self, list(specs))
        return specs

    def disabled_runtimes(self) -> list[str]:
        """The built-in runtimes this plan turns off (recorded as skipped stages)."""
        return [n for n, on in (("coreml", self.coreml), ("openvino", self.openvino), ("tensorrt", self.tensorrt),
                                ("executorch", self.executorch)) if not on]

    def apply(self, overrides: dict) -> "RunPlan":
        known = {f.name for f in fields(self)}
        odd = [k for k in overrides if not isinstance(k, str)]
        if odd:
            raise SADeployError(f"plan keys must be names, got {odd[0]!r}; known: {', '.join(sorted(known))}")
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SADeployError(f"unknown plan key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for k, v in overrides.items():
            if v is not None:
                setattr(self, k, v)
        return self

    def check(self) -> "RunPlan":
        """Every key's type and range, every choice, the model, the checkpoint and the output folder, before anything
        runs: one SADeployError naming the key and what it accepts."""
        hints = typing.get_type_hints(RunPlan)
        for f in fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise SADeployError(f"plan key '{f.name}' must be {_describe(hints[f.name])}, got {value!r}"[:300])
        positive = ("calib_num", "val_num", "coreml_val_num", "latency_batch", "latency_iters", "threads")
        for key in positive:
            value = getattr(self, key)
            if value is not None and not 1 <= value <= _MAX.get(key, 10**7):
                raise SADeployError(f"plan key '{key}' must be in 1..{_MAX.get(key, 10**7)}, got {value}")
        for key in ("int8_max_drop", "fp16_max_drop"):
            if not math.isfinite(getattr(self, key)):
                raise SADeployError(f"plan key '{key}' must be a finite number of points, got {getattr(self, key)}")
        from sa_deploy.calibration.int8 import WEIGHT_BITS

        if self.int8_weight_bits is not None and self.int8_weight_bits not in WEIGHT_BITS:
            raise SADeployError(f"plan key 'int8_weight_bits' must be 7 or 8 (or null: each flavour's default), "
                                f"got {self.int8_weight_bits}")
        if self.seed < 0:
            raise SADeployError(f"plan key 'seed' must be >= 0, got {self.seed}")
        choices = _choices()
        for key, allowed in choices.items():
            value = getattr(self, key)
            for v in value if isinstance(value, list) else [value]:
                if v not in allowed:
                    raise SADeployError(f"plan key '{key}': unknown value {v!r}; choose from {', '.join(allowed)}")
            if isinstance(value, list) and len(set(value)) != len(value):
                raise SADeployError(f"plan key '{key}' lists a value twice: {value}")
        if not self.lowerings:
            raise SADeployError("plan key 'lowerings' is empty; the run needs at least one ONNX export")
        from sa_deploy.models.registry import get_spec

        get_spec(self.model)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise SADeployError(f"plan key 'checkpoint': {self.checkpoint} is not a file")
        out = Path(self.out)
        for p in [out, *out.parents]:
            if p.exists() and not p.is_dir():
                raise SADeployError(f"plan key 'out': {p} is a file; the run writes into a folder")
            if p.is_dir():
                break
        return self


_MAX = {"latency_batch": 1024, "threads": 1024, "latency_iters": 100_000}


def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of the choice keys, from the modules that define them."""
    from sa_deploy.backends.coreml.export import PRECISIONS as COREML_PRECISIONS
    from sa_deploy.calibration.int8 import FLAVOURS, METHODS
    from sa_deploy.rewrite import LOWERINGS

    return {"lowerings": LOWERINGS, "int8_flavours": tuple(FLAVOURS), "int8_method": tuple(METHODS),
            "coreml_precisions": COREML_PRECISIONS}


def _matches(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)  # type: ignore[arg-type]


def _describe(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null (unset)"}.get(hint, str(hint))  # type: ignore[call-overload]


def load_plan(path: str | Path | None, overrides: dict | None = None) -> RunPlan:
    plan = RunPlan()
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise SADeployError(f"config file {p} is not a regular file" if p.exists() else
                                f"config file not found: {p}")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise SADeployError(f"{p.name} is not a UTF-8 text file; a plan is YAML") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:  # unknown tags (!!python/object...) are refused here, never run
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), "parse error")
            raise SADeployError(f"{p.name} is not valid YAML for a plan: {first}") from None
        if not isinstance(data, dict):
            raise SADeployError(f"{p.name} must hold a mapping of plan keys (e.g. `model: sa_resnet_cifar`)")
        plan.apply(data)
    return plan.apply(overrides or {})


def resolve_data(plan: RunPlan) -> LabeledData:
    """Calibration and validation images for the plan (sa_deploy.data.resolve decides)."""
    return resolve_labeled_data(plan.data, plan.calib, plan.val, plan.labels)
