"""Deploy lowerings of SA, applied to a copy of any model, wherever its SA layers sit. Each is proven equal to the
reference SALayer in tests.

- ``reshape-transpose``: SAGate + channel shuffle as Reshape(b,2,c/2,h*w) -> Transpose -> Reshape (rank <= 4,
  no b*groups arithmetic, so a dynamic batch needs no Shape/Gather chain): 9 ONNX nodes per SA.
- ``fold``: the shuffle permutation is folded into the output channels of the conv (+ BN) feeding SA, leaving only
  SAGate: 6 ONNX nodes per SA. A layer with no such conv (see ``producers``) gets reshape-transpose, and its
  ``LayerLowering.reason`` says why.
- ``none``: the reference layer as it is (the naive export, kept for comparisons).

Every lowering except ``none`` also puts the other attention modules (SE, CBAM, ECA, GC) in their exact deploy
forms (``deploy_forms``); ``Lowered.modules`` says what each became.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.sa_layer import sa_modules, shuffle_permutation
from sa_deploy.rewrite.deploy_forms import deploy_form_for
from sa_deploy.rewrite.find_sa import find_sa_layers
from sa_deploy.rewrite.producers import Producer, find_producers
from sa_deploy.rewrite.sa_gate import SAGate, gate_from_sa

LOWERINGS = ("reshape-transpose", "fold", "none")


class ShuffleReshapeTranspose(nn.Module):
    """Channel shuffle with 2 groups, written with rank-4 tensors only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        x = x.reshape(-1, 2, c // 2, h * w).transpose(1, 2)
        return x.reshape(-1, c, h, w)


class SAReshapeTranspose(nn.Sequential):
    def __init__(self, gate: SAGate) -> None:
        super().__init__(gate, ShuffleReshapeTranspose())


@dataclass(frozen=True)
class LayerLowering:
    """What one SA layer became: ``form`` fold or reshape-transpose; ``reason`` why a fold was not possible."""
    name: str
    channels: int
    groups: int
    form: str
    producer: str = ""  # the conv (+ BN) that absorbed the shuffle
    reason: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v != ""}


@dataclass(frozen=True)
class ModuleLowering:
    """What one attention module of another kind (SE, CBAM, ECA, GC) became: its registered deploy form."""
    name: str
    kind: str  # the reference class, e.g. SEModule
    form: str  # the DeployForm's name, e.g. se-conv

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Lowered:
    module: nn.Module
    lowering: str
    layers: list[LayerLowering] = field(default_factory=list)
    modules: list[ModuleLowering] = field(default_factory=list)

    def summary(self) -> str:
        """e.g. "16 SA layers: 15 folded, 1 reshape-transpose", or "16 SEModule: se-conv"."""
        text = self._sa_summary()
        forms: dict[tuple[str, str], int] = {}
        for m in self.modules:
            forms[m.kind, m.form] = forms.get((m.kind, m.form), 0) + 1
        others = "; ".join(f"{n} {kind}: {form}" for (kind, form), n in forms.items())
        if others:
            return others if not self.layers else f"{text}; {others}"
        return text

    def _sa_summary(self) -> str:
        if self.lowering == "none" or not self.layers:
            return f"{len(self.layers)} SA layers" + (" (kept as they are)" if self.layers else "")
        folded = sum(layer.form == "fold" for layer in self.layers)
        parts = [f"{folded} folded"] if self.lowering == "fold" else []
        if len(self.layers) - folded:
            parts.append(f"{len(self.layers) - folded} reshape-transpose")
        return f"{len(self.layers)} SA layers: {', '.join(parts)}"


def count_sa_layers(model: nn.Module) -> int:
    """Modules with SA's parameters (not yet proven to compute SA: see ``find_sa``)."""
    return len(sa_modules(model))


def _example_input(model: nn.Module, input_size: int | None) -> torch.Tensor:
    if input_size is None:
        config = getattr(model, "deploy_config", None)
        if config is None:
            raise SADeployError(f"lowering {type(model).__name__} needs its input size (input_size=...) to trace it")
        input_size = config.preprocess.input_size
    return torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))


def replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``model`` holds ``old`` (any parent, any nesting, every alias)."""
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, child_name, new)


def _fold_into(model: nn.Module, producer: Producer, channels: int) -> list[int]:
    """Permute the producer's output channels by the shuffle permutation, in place -> the permutation."""
    perm = shuffle_permutation(channels, 2)
    idx = torch.as_tensor(perm)
    conv = model.get_submodule(producer.conv)
    bn = model.get_submodule(producer.bn) if producer.bn else None
    with torch.no_grad():
        for t in (conv.weight, conv.bias) + ((bn.weight, bn.bias, bn.running_mean, bn.running_var) if bn else ()):
            if t is not None:
                t.copy_(t[idx])
    return perm


def lower(model: nn.Module, lowering: str, input_size: int | None = None) -> Lowered:
    """A copy of ``model`` (eval mode) with every SA layer it calls replaced by the chosen deploy form, and what
    each layer became. ``input_size``: the square input traced to find the layers (default: the model's)."""
    if lowering not in LOWERINGS:
        raise SADeployError(f"unknown lowering '{lowering}'; choose one of: {', '.join(LOWERINGS)}")
    lowered = copy.deepcopy(model).eval()
    if lowering == "none":
        return Lowered(lowered, lowering)
    found = find_sa_layers(lowered, _example_input(lowered, input_size))
    producers: list[Producer | str] = (find_producers(lowered, [f.module for f in found]) if lowering == "fold"
                                       else [""] * len(found))
    layers = []
    for sa, producer in zip(found, producers):
        gate = gate_from_sa(sa.reference)
        if isinstance(producer, Producer):
            replace_module(lowered, sa.module, gate.permuted(_fold_into(lowered, producer, sa.channel)))
            where = producer.conv + (f" + {producer.bn}" if producer.bn else "")
            layers.append(LayerLowering(sa.name, sa.channel, sa.groups, "fold", producer=where))
        else:
            replace_module(lowered, sa.module, SAReshapeTranspose(gate))
            layers.append(LayerLowering(sa.name, sa.channel, sa.groups, "reshape-transpose", reason=producer))
    return Lowered(lowered, lowering, layers, lower_attention_modules(lowered))


def lower_attention_modules(model: nn.Module) -> list[ModuleLowering]:
    """Replace, in place, every module of ``model`` that has a registered deploy form by that form."""
    done = []
    for name, module in list(model.named_modules()):
        form = deploy_form_for(module)
        if form is not None:
            replace_module(model, module, form.build(module).eval())
            done.append(ModuleLowering(name, type(module).__name__, form.name))
    return done


def lower_model(model: nn.Module, lowering: str, input_size: int | None = None) -> nn.Module:
    """``lower(...).module``: the lowered copy alone."""
    return lower(model, lowering, input_size).module

