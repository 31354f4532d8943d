"""The one place an ONNX file's preprocessing is decided: its ``sa_deploy.preprocess`` metadata, with any field given
on the command line (or to the API) replacing that field; for a file sa-deploy did not write, the flags alone.

No silent defaults where a wrong value would quietly ruin calibration or accuracy: without metadata, ``mean`` and
``std`` must be given; ``input_size`` defaults to the graph's fixed H/W, ``resize`` to the input size and
``interpolation`` to bilinear."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import onnx

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import image_input
from sa_deploy.exporters.metadata import preprocess_from_metadata, read_onnx_metadata
from sa_deploy.models.preprocessing import PreprocessConfig

# the flag each field comes from (error messages name the flags, not the fields)
FLAGS = {"input_size": "--input-size S", "resize": "--resize R", "interpolation": "--interpolation NAME",
         "mean": "--mean R G B", "std": "--std R G B", "class_names": "--class-names FILE"}


@dataclass(frozen=True)
class PreprocessOverrides:
    """Preprocessing fields given explicitly (None: not given). Each replaces the file's metadata field."""

    input_size: int | None = None
    resize: int | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    class_names: tuple[str, ...] | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __bool__(self) -> bool:
        return bool(self.given())

    @classmethod
    def of(cls, value: "PreprocessOverrides | PreprocessConfig | dict | None") -> "PreprocessOverrides":
        """From an instance, a dict of fields (the Python API), a whole PreprocessConfig, or None (nothing given)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, PreprocessConfig):
            value = value.to_dict()
        if not isinstance(value, dict):
            raise SADeployError(f"preprocessing overrides must be a dict of fields, got {type(value).__name__}")
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise SADeployError(f"unknown preprocessing field {unknown[0]!r}; known: "
                                f"{', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**{k: (tuple(v) if k in ("mean", "std", "class_names") and v is not None else v)
                          for k, v in value.items()})
        except TypeError:
            raise SADeployError("preprocessing 'mean', 'std' and 'class_names' must be sequences") from None


@dataclass(frozen=True)
class ResolvedPreprocess:
    config: PreprocessConfig | None  # None: the file carries none and none was given (allowed when not required)
    origin: str  # "metadata", "flags", "metadata + flags (mean, std)", "<artifact> metadata", or "none"

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict() if self.config else None, "origin": self.origin}


def check_input_size_flag(input_size: int | None, fixed: int | None, name: str) -> None:
    """--input-size must be the graph's fixed H/W when it has one."""
    if input_size is not None and fixed is not None and input_size != fixed:
        raise SADeployError(f"--input-size {input_size}: {name} takes fixed {fixed}x{fixed} inputs")


def output_classes(model: onnx.ModelProto) -> int | None:
    """The fixed class count of a (N, classes) first output, or None when it is not fixed."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None


def resolve_preprocess(model: onnx.ModelProto, name: str, overrides: PreprocessOverrides | dict | None = None,
                       required: bool = True, fallback: tuple[PreprocessConfig, str] | None = None
                       ) -> ResolvedPreprocess:
    """The preprocessing of ``model`` (file ``name``), its one image input checked first (a single float (N, 3, S, S)
    input: one-line errors otherwise). Metadata (else ``fallback``: a config and where it came from) with the given
    ``overrides`` replacing its fields; without either, the overrides alone (mean and std required). ``required``
    False: no metadata, no fallback and no overrides -> ``config`` None instead of an error."""
    ov = PreprocessOverrides.of(overrides)
    _, fixed = image_input(model, name)
    check_input_size_flag(ov.input_size, fixed, name)
    base = preprocess_from_metadata(read_onnx_metadata(model), name)
    origin = "metadata"
    if base is None and fallback is not None:
        base, origin = fallback
    given = ov.given()
    if base is None:
        if not given and not required:
            return ResolvedPreprocess(None, "none")
        cfg = _from_flags(ov, fixed, name)
        origin = "flags"
    else:
        cfg = apply_overrides(base, ov, name)
        if given:
            origin += f" + flags ({', '.join(given)})"
    image_input(model, name, cfg.input_size)  # fixed H/W must be the size the images are preprocessed to
    classes = output_classes(model)
    if ov.class_names is not None and classes is not None and len(cfg.class_names) != classes:
        raise SADeployError(f"--class-names lists {len(cfg.class_names)} names, {name} outputs {classes} classes")
    return ResolvedPreprocess(cfg, origin)


def apply_overrides(base: PreprocessConfig, overrides: PreprocessOverrides | dict | None,
                    name: str = "the model") -> PreprocessConfig:
    """``base`` with each given field replaced; a new input size without a new resize keeps the resize/crop ratio."""
    ov = PreprocessOverrides.of(overrides)
    values = {**base.to_dict(), **ov.given()}
    if ov.input_size is not None and ov.resize is None:
        values["resize"] = base.with_input_size(ov.input_size).resize
    return _config(values, name)


def _from_flags(ov: PreprocessOverrides, fixed: int | None, name: str) -> PreprocessConfig:
    size = ov.input_size or fixed
    missing = ([] if size is not None else [FLAGS["input_size"]]) + [FLAGS[k] for k in ("mean", "std")
                                                                      if getattr(ov, k) is None]
    if missing:
        defaults = [(flag, value) for flag, value, given in (
            ("--input-size", size, ov.input_size is not None or size is None),
            ("--resize", size or "S", ov.resize is not None),
            ("--interpolation", "bilinear", ov.interpolation is not None)) if not given]
        hint = (f" (and {'/'.join(f for f, _ in defaults)} if not {'/'.join(str(v) for _, v in defaults)})"
                if defaults else "")
        raise SADeployError(f"{name} carries no sa-deploy preprocessing; pass {' '.join(missing)}{hint}")
    return _config({"input_size": size, "resize": ov.resize or size, "interpolation": ov.interpolation or "bilinear",
                    "mean": ov.mean, "std": ov.std, "class_names": ov.class_names or ()}, name)


def _config(values: dict[str, Any], name: str) -> PreprocessConfig:
    """PreprocessConfig.from_dict's checks (the same as for metadata), as one-line errors."""
    size, resize = values["input_size"], values["resize"]
    if isinstance(size, int) and isinstance(resize, int) and resize < size:
        raise SADeployError(f"{name}: --resize {resize} is smaller than the input size {size} (images are resized, "
                            "then center-cropped to the input size)")
    try:
        return PreprocessConfig.from_dict({k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()})
    except (ValueError, TypeError) as exc:
        raise SADeployError(f"{name}: invalid preprocessing: {exc}") from None
