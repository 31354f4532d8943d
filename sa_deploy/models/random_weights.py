"""Seeded random weights of a plausible scale, for tests and benchmarks of models without trained weights.

Not the init values: at init many per-channel SA constants are all zeros, onnxsim merges equal initializers, and
the INT8 quantizer then sees one tensor as both a conv bias and an SA scale. Latency does not depend on the
values; INT8 calibration ranges, the graph's initializers and the lowering property tests do. The other attention
modules (SE, CBAM, ECA, GC: ``models.attention``) get seeded weights of their layers' scale as well (GC's last conv
starts at zero, which would make the block the identity)."""
from __future__ import annotations

import torch
from torch import nn

from sa_deploy.models.attention import ATTENTION_CLASSES
from sa_deploy.models.sa_layer import sa_width

# SA parameters centred on 1 (the rest on 0), as trained SA layers are: a gate near sigmoid(1)
_CENTRED_ON_ONE = ("cbias", "sbias", "gn.weight")


def _randomize_attention(module: nn.Module, g: torch.Generator) -> None:
    """Weights N(0, 1/fan_in) (a unit-scale input gives unit-scale logits), biases N(0, 0.1^2), LayerNorm scales
    around 1."""
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=g)
            if isinstance(sub, nn.LayerNorm) and name == "weight":
                p.copy_(1.0 + 0.25 * noise)
            elif name == "bias" or p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / max(p[0].numel(), 1) ** 0.5)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random attention parameters (SA and the family) and BN statistics/affine, in place; returns the model in
    eval mode."""
    g = torch.Generator().manual_seed(seed)
    family = tuple(cls for name, cls in ATTENTION_CLASSES.items() if name != "sa")
    with torch.no_grad():
        for m in model.modules():
            if sa_width(m) is not None:  # any layer with SA's parameters, wherever it sits
                for name, p in m.named_parameters():
                    centre = 1.0 if name in _CENTRED_ON_ONE else 0.0
                    p.copy_(centre + 0.5 * torch.randn(p.shape, generator=g))
            elif isinstance(m, family):
                _randomize_attention(m, g)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.25)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()
