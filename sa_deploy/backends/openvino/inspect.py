"""What an OpenVINO IR holds: inputs/outputs (partial shapes), op histogram, weight precisions, the deploy config
in its rt_info. Read-only (validation and ``sa-deploy inspect`` use it)."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sa_deploy.backends.openvino.device import import_openvino, ov_error
from sa_deploy.errors import SADeployError
from sa_deploy.models.deploy_metadata import DeployMetadata

RT_INFO_KEY = "sa_deploy"  # the IR's deploy metadata: rt_info <sa_deploy><KEY value="..."/>...</sa_deploy>


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

    def lines(self) -> list[str]:
        """The headline, then one line per input and output (what ``sa-deploy inspect`` prints above its tables)."""
        weights = ", ".join(f"{t} x{n}" for t, n in self.weight_precisions.items())
        head = (f"{self.path}: OpenVINO IR, {self.size_bytes / 1e6:.2f} MB, {self.nodes} nodes, precision "
                f"{self.metadata.get('precision', '?')} (constants: {weights})")
        return [head] + [f"  {kind} {it['name']}: {it['dtype']} {it['shape']}"
                         for kind, items in (("input", self.inputs), ("output", self.outputs)) for it in items]


# IR versions OpenVINO 2026 reads; anything else makes it try every other frontend (and log their failures)
IR_VERSIONS = ("10", "11")
IMAGE_TYPES = ("f32", "f16")


def check_ir_files(path: str | Path) -> Path:
    """Both files of the IR are regular files and the .xml is an IR of a version OpenVINO reads; one-line errors."""
    p = Path(path)
    for f in (p, p.with_suffix(".bin")):
        if not f.is_file():
            raise SADeployError(f"OpenVINO IR not found: {p} (needs {p.name} and {p.with_suffix('.bin').name} as "
                                f"files{'; ' + f.name + ' is a folder' if f.is_dir() else ''})")
    head = p.open("rb").read(4096)
    match = re.search(rb"<net\b[^>]*?\bversion=\"([^\"]*)\"", head)
    if match is None:
        raise SADeployError(f"{p.name} is not an OpenVINO IR (no <net ... version=...> element at its start)")
    version = match.group(1).decode("ascii", "replace")
    if version not in IR_VERSIONS:
        raise SADeployError(f"{p.name} is an OpenVINO IR of version {version[:20]!r}; this OpenVINO reads "
                            f"versions {', '.join(IR_VERSIONS)} (re-convert it with `sa-deploy convert`)")
    return p


def read_ir(path: str | Path):
    """The ov.Model of an IR file, or one clear error."""
    ov = import_openvino("reading an OpenVINO IR")
    p = check_ir_files(path)
    try:
        model = ov.Core().read_model(str(p))
    except RuntimeError as exc:
        raise SADeployError(f"{p.name} is not a readable OpenVINO IR: {ov_error(exc)}") from None
    if not model.inputs or not model.outputs:
        raise SADeployError(f"{p.name} is an OpenVINO IR without {'inputs' if not model.inputs else 'outputs'}: "
                            "not a model sa-deploy can run")
    return model


def check_ir_image_input(model, name: str, input_size: int | None = None) -> None:
    """One float (N, 3, S, S) image input (S = ``input_size`` when the IR fixes it): what validation feeds."""
    if len(model.inputs) != 1:
        raise SADeployError(f"{name} has {len(model.inputs)} inputs; sa-deploy feeds one (N, 3, S, S) image input")
    port = model.inputs[0]
    shape, etype = port.get_partial_shape(), port.get_element_type().get_type_name()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else None
    if etype not in IMAGE_TYPES or dims is None or len(dims) != 4 or dims[1] not in (3, None):
        raise SADeployError(f"{name}'s input is {etype} {shape}; sa-deploy feeds a float (N, 3, S, S) image")
    fixed = {d for d in dims[2:] if d is not None}
    if input_size is not None and fixed and fixed != {input_size}:
        raise SADeployError(f"{name} takes {shape} inputs, the images are {input_size}x{input_size} (an artifact "
                            "of another model or input size?)")


def metadata_of(model) -> dict[str, str]:
    """The stored string form of an ov.Model's ``sa_deploy`` rt_info (empty if it has none)."""
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    return {k: v.astype(str) for k, v in model.get_rt_info()[RT_INFO_KEY].items()}


def ir_metadata(model, where: str = "the IR") -> DeployMetadata:
    """The OpenVINO reader: an ov.Model's deploy metadata, typed (a damaged value: one line naming ``where``)."""
    return DeployMetadata.from_strings(metadata_of(model), where)


def read_ir_deploy_metadata(path: str | Path) -> DeployMetadata:
    """The deploy metadata of an IR file (read and checked by ``read_ir``)."""
    return ir_metadata(read_ir(path), Path(path).name)


def read_ir_metadata(path: str | Path) -> dict[str, str]:
    """The ``sa_deploy`` deploy config in an IR's rt_info, in its stored string form (empty if it has none)."""
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
