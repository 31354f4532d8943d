"""What `sa-deploy run` does, as data: defaults, a YAML file, then command-line overrides."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sa_deploy.data.resolve import LabeledData, resolve_labeled_data
from sa_deploy.errors import SADeployError


@dataclass
class RunPlan:
    model: str = "sa_resnet_cifar"
    checkpoint: str | None = None  # None: the embedded trained weights of `model`
    # where images come from (sa_deploy.data.resolve): a folder with train/ and val/ (image folders), or `embedded`;
    # default: $SA_DEPLOY_DATA, the development copy ../shared/data/cifar10, else the sample embedded in sa-deploy
    data: str | None = None
    calib: str | None = None  # overrides data/train
    val: str | None = None  # overrides data/val
    labels: str | None = None  # labels file for a flat validation folder (CSV `filename,label` or `filename label`)
    out: str = "out/run"
    lowerings: list[str] = field(default_factory=lambda: ["fold", "reshape-transpose"])
    fp16: bool = True
    int8_flavours: list[str] = field(default_factory=lambda: ["tensorrt", "cpu"])
    int8_method: str = "entropy"
    calib_num: int = 512
    val_num: int | None = None  # None: every validation image
    coreml: bool = True
    openvino: bool = True  # IR FP32, FP16 weights and INT8 (from the cpu-flavour Q/DQ ONNX) on the CPU plugin
    openvino_bf16: bool = True  # also run the FP32 IR with the bf16 hint, where the CPU has bf16
    coreml_precisions: list[str] = field(default_factory=lambda: ["fp16", "w8a8"])
    coreml_val_num: int | None = 500  # off macOS CoreML runs in the numpy reference executor: a subset
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

    def apply(self, overrides: dict) -> "RunPlan":
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SADeployError(f"unknown plan key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for k, v in overrides.items():
            if v is not None:
                setattr(self, k, v)
        return self


def load_plan(path: str | Path | None, overrides: dict | None = None) -> RunPlan:
    plan = RunPlan()
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise SADeployError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SADeployError(f"{p.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise SADeployError(f"{p.name} must hold a mapping of plan keys (e.g. `model: sa_resnet_cifar`)")
        plan.apply(data)
    return plan.apply(overrides or {})


def resolve_data(plan: RunPlan) -> LabeledData:
    """Calibration and validation images for the plan (sa_deploy.data.resolve decides)."""
    return resolve_labeled_data(plan.data, plan.calib, plan.val, plan.labels)
