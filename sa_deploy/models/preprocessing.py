"""Preprocessing config that travels with a model (timm-style): one source of truth for export metadata,
calibration and evaluation."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
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
        return cls(int(data["input_size"]), int(data["resize"]), str(data.get("interpolation", "bilinear")),
                   tuple(data["mean"]), tuple(data["std"]), tuple(data.get("class_names", ())))


IMAGENET_224 = PreprocessConfig()
CIFAR10_32 = PreprocessConfig(32, 32, "bilinear", CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES)
