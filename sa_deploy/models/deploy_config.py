"""The one typed deploy config a model carries (like timm's ``pretrained_cfg``): what it is, how its inputs are
made, and which weights it holds. Computed once by ``create_model``; every exporter reads it from here."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocess_resolver import resolve_model
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.hashing import file_sha256

ATTRIBUTE = "deploy_config"


@dataclass(frozen=True)
class DeployConfig:
    name: str  # registry name (or the class name of a module the user brings)
    preprocess: PreprocessConfig
    checkpoint: str | None = None  # the weights file loaded, None for random init or a module built by the user
    checkpoint_sha256: str | None = None
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)  # epoch, best_acc, arch... from the file
    source: str = ""  # "registry <name>", or "module <package.Class>" for a module the user brings

    @classmethod
    def create(cls, name: str, preprocess: PreprocessConfig, checkpoint: str | Path | None = None,
               checkpoint_meta: dict[str, Any] | None = None) -> "DeployConfig":
        sha = file_sha256(checkpoint) if checkpoint is not None else None
        return cls(name, preprocess, str(checkpoint) if checkpoint is not None else None, sha,
                   dict(checkpoint_meta or {}), f"registry {name}")

    def with_input_size(self, input_size: int | None) -> "DeployConfig":
        return self if input_size is None else replace(self, preprocess=self.preprocess.with_input_size(input_size))


def attach(model: nn.Module, config: DeployConfig) -> nn.Module:
    """Sets ``model.deploy_config`` (and ``model.preprocess``, the documented shortcut to its preprocessing)."""
    setattr(model, ATTRIBUTE, config)
    model.preprocess = config.preprocess
    return model


def deploy_config_of(model: nn.Module, preprocess: PreprocessConfig | None = None,
                     name: str | None = None) -> DeployConfig:
    """The model's DeployConfig; ``preprocess`` / ``name`` override it or stand in when the model has none (any
    nn.Module: named after its class unless ``name`` is given, its source recorded as ``module <package.Class>``).
    The preprocessing is decided by the one resolver (models.preprocess_resolver.resolve_model)."""
    cfg = getattr(model, ATTRIBUTE, None)
    resolved = resolve_model(cfg.preprocess if cfg is not None else None, preprocess).config
    if resolved is None:
        raise SADeployError(f"{type(model).__name__} carries no deploy config: build it with create_model() or "
                            "pass preprocess=PreprocessConfig(...)")
    if cfg is None:
        cls = type(model)
        cfg = DeployConfig(name or cls.__name__, resolved, source=f"module {cls.__module__}.{cls.__qualname__}")
    elif resolved is not cfg.preprocess:
        cfg = replace(cfg, preprocess=resolved)
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
            raise SADeployError(f"model name {name[:60]!r} cannot name a file: use letters, digits, '_', '.', '-'")
        cfg = replace(cfg, name=name)
    return cfg
