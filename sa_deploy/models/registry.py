"""Model registry: ``create_model(name, ...)``, ``list_models()``; each model carries its PreprocessConfig.

To add a model: write its builder (SA layers may sit anywhere: the lowerings find them; another attention module
gets its deploy form from ``rewrite.deploy_forms``), then ``register_model(ModelSpec(...))`` below."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models import family, sa_mobilenet, sa_resnet
from sa_deploy.models.checkpoint import load_into, read_checkpoint
from sa_deploy.models.deploy_config import DeployConfig, attach
from sa_deploy.models.preprocessing import CIFAR10_32, IMAGENET_224, PreprocessConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    preprocess: PreprocessConfig
    num_classes: int
    description: str
    pretrained_file: str | None = None  # file inside sa_deploy/weights/
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


for _spec in (
    ModelSpec("sa_resnet50", sa_resnet.sa_resnet50, IMAGENET_224, 1000, "SA-ResNet-50 (official layout, ImageNet)"),
    ModelSpec("sa_resnet101", sa_resnet.sa_resnet101, IMAGENET_224, 1000, "SA-ResNet-101 (official layout, ImageNet)"),
    ModelSpec("sa_resnet152", sa_resnet.sa_resnet152, IMAGENET_224, 1000, "SA-ResNet-152 (official layout, ImageNet)"),
    ModelSpec("sa_mobilenetv2", sa_mobilenet.sa_mobilenetv2, IMAGENET_224, 1000,
              "SA-MobileNetV2 (torchvision layout + SA per block, groups 4)"),
    ModelSpec("sa_resnet_cifar", sa_resnet.sa_resnet_cifar, CIFAR10_32, 10,
              "small bottleneck SA-ResNet for 32x32 (CIFAR-10), trained default", "sa_resnet_cifar.pth"),
    ModelSpec("sa_mobilenetv2_cifar", sa_mobilenet.sa_mobilenetv2_cifar, CIFAR10_32, 10,
              "SA-MobileNetV2 x0.5 for 32x32 (CIFAR-10), trained default", "sa_mobilenetv2_cifar.pth"),
    # the attention family SA-Net compares SA with, in SA-ResNet's layout (models/family.py)
    ModelSpec("se_resnet50", family.se_resnet50, IMAGENET_224, 1000, "SE-ResNet-50 (SE r16 after bn3, ImageNet)"),
    ModelSpec("cbam_resnet50", family.cbam_resnet50, IMAGENET_224, 1000,
              "CBAM-ResNet-50 (CBAM r16 + 7x7 spatial after bn3, ImageNet)"),
    ModelSpec("eca_resnet50", family.eca_resnet50, IMAGENET_224, 1000,
              "ECA-ResNet-50 (ECA, adaptive k, after bn3, ImageNet)"),
    ModelSpec("gc_resnet50", family.gc_resnet50, IMAGENET_224, 1000,
              "GC-ResNet-50 (GC r16 after bn3 in every block, ImageNet)"),
    ModelSpec("se_resnet_cifar", family.se_resnet_cifar, CIFAR10_32, 10,
              "small bottleneck SE-ResNet for 32x32 (CIFAR-10), trained as sa_resnet_cifar", "se_resnet_cifar.pth"),
    ModelSpec("cbam_resnet_cifar", family.cbam_resnet_cifar, CIFAR10_32, 10,
              "small bottleneck CBAM-ResNet for 32x32 (CIFAR-10), trained as sa_resnet_cifar", "cbam_resnet_cifar.pth"),
    ModelSpec("eca_resnet_cifar", family.eca_resnet_cifar, CIFAR10_32, 10,
              "small bottleneck ECA-ResNet for 32x32 (CIFAR-10), trained as sa_resnet_cifar", "eca_resnet_cifar.pth"),
    ModelSpec("gc_resnet_cifar", family.gc_resnet_cifar, CIFAR10_32, 10,
              "small bottleneck GC-ResNet for 32x32 (CIFAR-10), trained as sa_resnet_cifar", "gc_resnet_cifar.pth"),
):
    register_model(_spec)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise SADeployError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def pretrained_path(name: str) -> Path:
    spec = get_spec(name)
    if spec.pretrained_file is None:
        raise SADeployError(f"'{name}' has no embedded weights (only {', '.join(embedded_models())} do); "
                            "pass --checkpoint PATH")
    path = Path(str(resources.files("sa_deploy") / "weights" / spec.pretrained_file))
    if not path.is_file():
        raise SADeployError(f"embedded weights for '{name}' are missing from the installation ({path})")
    return path


def embedded_models() -> list[str]:
    return [n for n in list_models() if _REGISTRY[n].pretrained_file]


def create_model(name: str, checkpoint: str | Path | None = None, num_classes: int | None = None,
                 pretrained: bool = False, allow_nonfinite: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model in eval mode, optionally loading weights (strict, weights_only).

    The returned module carries ``model.deploy_config`` (a DeployConfig: name, preprocessing, checkpoint and its
    hash) and ``model.preprocess`` (its PreprocessConfig). A checkpoint with NaN/Inf weights is refused unless
    ``allow_nonfinite``."""
    spec = get_spec(name)
    if pretrained and checkpoint is not None:
        raise SADeployError("pass either pretrained=True or a checkpoint, not both")
    if pretrained:
        checkpoint = pretrained_path(name)
    n_classes = spec.num_classes if num_classes is None else num_classes
    model = spec.builder(num_classes=n_classes, **{**spec.defaults, **kwargs})
    preprocess = spec.preprocess
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        state, meta = read_checkpoint(checkpoint, allow_nonfinite=allow_nonfinite)
        load_into(model, state, source=Path(checkpoint).name)
        if meta.get("class_names") and isinstance(meta["class_names"], str):
            names = tuple(meta["class_names"].split(","))
            preprocess = PreprocessConfig(**{**preprocess.to_dict(), "class_names": names})
    if len(preprocess.class_names) != n_classes:
        preprocess = PreprocessConfig(**{**preprocess.to_dict(), "class_names": ()})
    attach(model, DeployConfig.create(name, preprocess, checkpoint, meta))
    return model.eval()
