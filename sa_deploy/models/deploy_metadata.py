"""The deploy metadata every artifact carries, typed: what a file says about the model it holds, how it was made and
how its inputs are preprocessed.

Every container stores it as strings under ``sa_deploy.*`` (ONNX ``metadata_props``, OpenVINO ``rt_info`` under
``sa_deploy``, CoreML user metadata ``sa_deploy.*``, the TensorRT sidecar's ``deploy_config``); this type is that
string form parsed once (``from_strings``) and written back unchanged (``to_strings``: a file sa-deploy wrote reads
and re-writes to the same strings). The reader and writer of each container live with it: ``exporters.metadata``
(ONNX), ``backends/openvino`` (IR), ``backends/coreml`` (mlpackage), ``backends/trt/sidecar`` (engine)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig

PREFIX = "sa_deploy."  # the key prefix in containers with one namespace (ONNX, CoreML); an IR nests the keys instead
VERSION_SUFFIX = "_version"  # sa_deploy_version, torch_version, onnx_version, openvino_version, coremltools_version
_INT = re.compile(r"-?[0-9]+")


def damaged(where: str, key: str, reason: Any) -> SADeployError:
    """The one-line error for a stored value that does not parse (naming the file and the key)."""
    return SADeployError(f"{where} has damaged {PREFIX}{key} metadata ({reason}); re-export it with "
                         "`sa-deploy export`")


def parse_preprocess(raw: str | None, where: str = "the model") -> PreprocessConfig | None:
    """The PreprocessConfig of a stored ``preprocess`` value (None when absent or empty); a damaged one is a one-line
    error naming ``where``."""
    if not raw:
        return None
    try:
        return PreprocessConfig.from_dict(json.loads(raw))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise damaged(where, "preprocess", exc) from None


def _parse_int(raw: str, where: str, key: str) -> int:
    if not _INT.fullmatch(raw.strip()):
        raise damaged(where, key, f"{raw[:40]!r} is not an integer")
    return int(raw)


def _parse_names(raw: str, where: str, key: str) -> tuple[str, ...]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise damaged(where, key, exc) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise damaged(where, key, "expected a JSON list of node names")
    return tuple(value)


# stored keys with a typed field, by how they are parsed and written back
_TEXT = ("model", "model_source", "format", "lowering", "precision", "checkpoint_sha256", "weights_sha256",
         "source_onnx_sha256", "int8_flavour", "calibration_method", "calibration_fingerprint", "sa_gate")
_INTS = ("input_size", "int8_weight_bits", "calibration_count")


@dataclass(frozen=True)
class DeployMetadata:
    """One artifact's ``sa_deploy.*`` metadata. A field is None when the file does not carry that key (readers
    decide the default: e.g. ``precision or "fp32"``). ``versions``: the ``*_version`` keys (sa_deploy_version,
    torch_version, onnx_version, openvino_version, coremltools_version); ``extra``: every other key, as stored
    (sa_layers, attention_modules, opset, fp16_fp32_ops, int16_overflow_safe, bench_variant, ...)."""

    model: str | None = None  # registry name, the user's module class name, or a foreign file's stem
    model_source: str | None = None  # "registry <name>" or "module <package.Class>"
    format: str | None = None  # "openvino", "coreml" (an ONNX file does not say)
    lowering: str | None = None
    precision: str | None = None  # fp32 | fp16 | int8 | a CoreML precision (int8-weights, palettize, w8a8)
    preprocess: PreprocessConfig | None = None
    checkpoint_sha256: str | None = None
    weights_sha256: str | None = None  # of the module's state_dict
    source_onnx_sha256: str | None = None  # the ONNX file a converted artifact was made from
    input_size: int | None = None
    int8_flavour: str | None = None  # tensorrt | cpu
    int8_weight_bits: int | None = None
    calibration_method: str | None = None
    calibration_count: int | None = None
    calibration_fingerprint: str | None = None
    float_nodes: tuple[str, ...] | None = None  # nodes an INT8 file keeps in float
    sa_gate: str | None = None  # float | int8 | "none (no SA layer)"
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_strings(cls, strings: Mapping[str, str], where: str = "the model") -> "DeployMetadata":
        """The typed form of a container's ``sa_deploy.*`` strings (keys without the prefix). A value that does not
        parse is one SADeployError naming ``where`` (the file) and the key."""
        values: dict[str, Any] = {}
        versions: dict[str, str] = {}
        extra: dict[str, str] = {}
        for key, raw in strings.items():
            raw = str(raw)
            if key in _TEXT:
                values[key] = raw
            elif key in _INTS:
                values[key] = _parse_int(raw, where, key)
            elif key == "preprocess":
                values[key] = parse_preprocess(raw, where) if raw else None
                if not raw:  # an empty value is kept as stored (it says "no preprocessing")
                    extra[key] = raw
            elif key == "float_nodes":
                values[key] = _parse_names(raw, where, key)
            elif key.endswith(VERSION_SUFFIX):
                versions[key] = raw
            else:
                extra[key] = raw
        return cls(**values, versions=versions, extra=extra)

    def to_strings(self) -> dict[str, str]:
        """The stored form (keys without the prefix, sorted), what ``from_strings`` read; the container's writer
        adds the prefix or nests the keys."""
        out: dict[str, str] = {**self.versions, **self.extra}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("versions", "extra") or value is None:
                continue
            if f.name == "preprocess":
                out[f.name] = value.to_json()
            elif f.name == "float_nodes":
                out[f.name] = json.dumps(list(value))
            else:
                out[f.name] = str(value)
        return dict(sorted(out.items()))

    def with_strings(self, values: Mapping[str, Any]) -> "DeployMetadata":
        """This metadata with the given keys set (any key, in its stored or Python form: ``str()`` of it is stored,
        a PreprocessConfig as its JSON, a list or tuple as JSON); what a writer adds to a source's metadata."""
        strings = self.to_strings()
        for key, value in values.items():
            if isinstance(value, PreprocessConfig):
                value = value.to_json()
            elif isinstance(value, (list, tuple)):
                value = json.dumps(list(value))
            strings[key] = str(value)
        return DeployMetadata.from_strings(strings, "sa-deploy")

    def replace(self, **changes: Any) -> "DeployMetadata":
        """dataclasses.replace on the typed fields."""
        return replace(self, **changes)

    def get(self, key: str, default: str | None = None) -> str | None:
        """One stored value by its key (the string form), e.g. for a key without a typed field."""
        return self.to_strings().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_strings()

    def __bool__(self) -> bool:
        """Whether the file carries any sa-deploy metadata."""
        return bool(self.to_strings())
