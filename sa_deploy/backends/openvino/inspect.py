"""What an OpenVINO IR holds: inputs/outputs (partial shapes), op histogram, weight precisions, the deploy config
in its rt_info. Read-only (validation and ``sa-deploy inspect`` use it)."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sa_deploy.backends.openvino.device import import_openvino
from sa_deploy.errors import SADeployError

RT_INFO_KEY = "sa_deploy"


@dataclass
class IRInfo:
    path: Path
    size_bytes: int  # .xml + .bin
    nodes: int
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    weight_precisions: dict[str, int] = field(default_factory=dict)  # element type -> number of Constants
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def read_ir(path: str | Path):
    """The ov.Model of an IR file, or one clear error."""
    ov = import_openvino("reading an OpenVINO IR")
    p = Path(path)
    if not p.is_file() or not p.with_suffix(".bin").is_file():
        raise SADeployError(f"OpenVINO IR not found: {p} (needs {p.name} and {p.with_suffix('.bin').name})")
    try:
        return ov.Core().read_model(str(p))
    except RuntimeError as exc:
        raise SADeployError(f"{p.name} is not a readable OpenVINO IR: {str(exc).splitlines()[0][:160]}") from None


def metadata_of(model) -> dict[str, str]:
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    return {k: v.astype(str) for k, v in model.get_rt_info()[RT_INFO_KEY].items()}


def read_ir_metadata(path: str | Path) -> dict[str, str]:
    """The ``sa_deploy`` deploy config in an IR's rt_info (empty if it has none)."""
    return metadata_of(read_ir(path))


def _ports(ports) -> list[dict]:
    return [{"name": p.get_any_name(), "dtype": str(p.get_element_type().get_type_name()),
             "shape": str(p.get_partial_shape())} for p in ports]


def inspect_ir(path: str | Path) -> IRInfo:
    model = read_ir(path)
    p = Path(path)
    ops = model.get_ordered_ops()
    consts = Counter(op.get_output_element_type(0).get_type_name() for op in ops if op.get_type_name() == "Constant")
    return IRInfo(p, p.stat().st_size + p.with_suffix(".bin").stat().st_size, len(ops), _ports(model.inputs),
                  _ports(model.outputs), dict(Counter(op.get_type_name() for op in ops).most_common()),
                  dict(consts.most_common()), metadata_of(model))
