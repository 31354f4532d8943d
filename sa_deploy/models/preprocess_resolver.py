"""The one place a model's preprocessing is decided, whatever holds the model: the base (a PyTorch model's deploy
config, the config given to the API, an ONNX file's ``sa_deploy.preprocess`` metadata, else the one the files made
from it carry) with each field given on the command line (or to the API) replacing that field; without a base,
the flags alone. The result says where it came from (``origin``).

No silent defaults where a wrong value would quietly ruin calibration or accuracy: without a base, ``mean`` and
``std`` must be given; ``input_size`` defaults to the graph's fixed H/W, ``resize`` to the input size and
``interpolation`` to bilinear. What a file says about itself (its fixed H/W, its class count, its metadata) is read
by the file's own adapter (``exporters.preprocess_flags.resolve_preprocess`` for ONNX) and passed in."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable

from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig

# the flag each field comes from (error messages name the flags, not the fields)
FLAGS = {"input_size": "--input-size S", "resize": "--resize R", "interpolation": "--interpolation NAME",
         "mean": "--mean R G B", "std": "--std R G B", "class_names": "--class-names FILE"}


@dataclass(frozen=True)
class PreprocessOverrides:
    """Preprocessing fields given explicitly (None: not given). Each replaces the base's field."""

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
    config: PreprocessConfig | None  # None: no base and nothing given (allowed when not required)
    origin: str  # "model", "given", "metadata", "flags", "<artifact> metadata", "... + flags (mean, std)", "none"

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict() if self.config else None, "origin": self.origin}


def check_input_size_flag(input_size: int | None, fixed: int | None, name: str) -> None:
    """--input-size must be the graph's fixed H/W when it has one."""
    if input_size is not None and fixed is not None and input_size != fixed:
        raise SADeployError(f"--input-size {input_size}: {name} takes fixed {fixed}x{fixed} inputs")


def resolve(base: PreprocessConfig | None, origin: str, overrides: PreprocessOverrides | dict | None, name: str,
            *, fixed: int | None = None, classes: int | None = None, required: bool = True,
            fallback: tuple[PreprocessConfig, str] | None = None,
            check_size: Callable[[int], None] | None = None) -> ResolvedPreprocess:
    """The preprocessing of ``name``: ``base`` (from ``origin``; None: ``fallback``, a config and where it came from)
    with the given ``overrides`` replacing its fields; without either, the overrides alone (mean and std required).
    ``fixed``: the input's fixed H/W (None: dynamic or unknown); ``classes``: its fixed class count (checked against
    --class-names); ``check_size``: checks the resolved input size against the file (one-line errors).
    ``required`` False: no base, no fallback and no overrides -> ``config`` None instead of an error."""
    ov = PreprocessOverrides.of(overrides)
    check_input_size_flag(ov.input_size, fixed, name)
    if base is None and fallback is not None:
        base, origin = fallback
    given = ov.given()
    if base is None:
        if not given and not required:
            return ResolvedPreprocess(None, "none")
        cfg = _from_flags(ov, fixed, name)
        origin = "flags"
    elif given:
        cfg = apply_overrides(base, ov, name)
        origin += f" + flags ({', '.join(given)})"
    else:
        cfg = base
    if check_size is not None:
        check_size(cfg.input_size)  # e.g. a graph's fixed H/W must be the size the images are preprocessed to
    if ov.class_names is not None and classes is not None and len(cfg.class_names) != classes:
        raise SADeployError(f"--class-names lists {len(cfg.class_names)} names, {name} outputs {classes} classes")
    return ResolvedPreprocess(cfg, origin)


def resolve_model(own: PreprocessConfig | None, preprocess: PreprocessConfig | None = None,
                  overrides: PreprocessOverrides | dict | None = None, name: str = "the model") -> ResolvedPreprocess:
    """A PyTorch model's preprocessing: ``preprocess`` (a whole config given to the API) in place of its deploy
    config's ``own``, with the ``overrides`` fields replacing that; ``config`` None when it has neither."""
    if preprocess is not None:
        return resolve(preprocess, "given", overrides, name)
    if own is not None:
        return resolve(own, "model", overrides, name)
    return ResolvedPreprocess(None, "none")


def agreeing(carried: Iterable[tuple[PreprocessConfig | None, str]]) -> tuple[PreprocessConfig, str] | None:
    """(config, origin) of the preprocessing that files (``(config, file name)``: e.g. the INT8/FP16 artifacts made
    from a file without metadata) carry, when they carry one and agree; else None."""
    found: dict[PreprocessConfig, str] = {}
    for cfg, name in carried:
        if cfg is not None:
            found.setdefault(cfg, name)
    if len(found) != 1:
        return None
    cfg, name = next(iter(found.items()))
    return cfg, f"{name} metadata"


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
