"""The one typed deploy config a model carries (like timm's ``pretrained_cfg``): what it is, how its inputs are
made, and which weights it holds. Computed once by ``create_model``; every exporter reads it from here."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.hashing import file_sha256

ATTRIBUTE = "deploy_config"


@dataclass(frozen=True)
class DeployConfig:
    name: str  # registry name (or the class name of a module the user brings)
    preprocess: PreprocessConfig
    checkpoint: str | None = None  # the weights file loaded, None for random init
    checkpoint_sha256: str | None = None
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)  # epoch, best_acc, arch... from the file

    @classmethod
    def create(cls, name: str, preprocess: PreprocessConfig, checkpoint: str | Path | None = None,
               checkpoint_meta: dict[str, Any] | None = None) -> "DeployConfig":
        sha = file_sha256(checkpoint) if checkpoint is not None else None
        return cls(name, preprocess, str(checkpoint) if checkpoint is not None else None, sha,
                   dict(checkpoint_meta or {}))

    def with_input_size(self, input_size: int | None) -> "DeployConfig":
        return self if input_size is None else replace(self, preprocess=self.preprocess.with_input_size(input_size))


def attach(model: nn.Module, config: DeployConfig) -> nn.Module:
    """Sets ``model.deploy_config`` (and ``model.preprocess``, the documented shortcut to its preprocessing)."""
    setattr(model, ATTRIBUTE, config)
    model.preprocess = config.preprocess
    return model


def deploy_config_of(model: nn.Module, preprocess: PreprocessConfig | None = None,
                     name: str | None = None) -> DeployConfig:
    """The model's DeployConfig; ``preprocess`` / ``name`` override it or stand in when the model has none."""
    cfg = getattr(model, ATTRIBUTE, None)
    if cfg is None:
        if preprocess is None:
            raise SADeployError(f"{type(model).__name__} carries no deploy config: build it with create_model() or "
                                "pass preprocess=PreprocessConfig(...)")
        cfg = DeployConfig(name or type(model).__name__, preprocess)
    if preprocess is not None:
        cfg = replace(cfg, preprocess=preprocess)
    if name is not None:
        cfg = replace(cfg, name=name)
    return cfg
