"""Preprocessing config that travels with a model (timm-style): one source of truth for export metadata,
calibration and evaluation."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# square input sizes sa-deploy accepts (a 100000x100000 input would ask for hundreds of GB before failing)
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 1024
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB image becomes the model's input: resize the shorter side to ``resize`` (``interpolation``),
    center-crop ``input_size`` x ``input_size``, scale to 0..1, subtract ``mean``, divide by ``std``; layout NCHW."""

    input_size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = field(default_factory=tuple)

    def with_input_size(self, input_size: int) -> "PreprocessConfig":
        """Same recipe at another input size (keeps the resize/crop ratio)."""
        resize = round(input_size * self.resize / self.input_size)
        return PreprocessConfig(input_size, resize, self.interpolation, self.mean, self.std, self.class_names)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """The config from its dict/JSON form; ValueError naming the first field that is missing or invalid."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        input_size = _int(data, "input_size", MIN_INPUT_SIZE, MAX_INPUT_SIZE)
        resize = _int(data, "resize", input_size, 4 * MAX_INPUT_SIZE)
        interpolation = data.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"'interpolation' must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        mean, std = _triple(data, "mean", positive=False), _triple(data, "std", positive=True)
        names = data.get("class_names", ())
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ValueError("'class_names' must be a list of strings")
        return cls(input_size, resize, interpolation, mean, std, tuple(names))


def _int(data: dict, key: str, lo: int, hi: int) -> int:
    if key not in data:
        raise ValueError(f"'{key}' is missing")
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"'{key}' must be an integer in {lo}..{hi}, got {v!r}"[:120])
    return v


def _triple(data: dict, key: str, positive: bool) -> tuple[float, float, float]:
    v = data.get(key)
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
        for x in v)
    if not ok:
        raise ValueError(f"'{key}' must be 3 finite{' positive' if positive else ''} numbers, got {v!r}"[:120])
    return tuple(float(x) for x in v)


IMAGENET_224 = PreprocessConfig()
CIFAR10_32 = PreprocessConfig(32, 32, "bilinear", CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES)
