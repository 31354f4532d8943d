"""The SA gate with its normalization written out: mean / subtract / multiply / rsqrt instead of ``F.instance_norm``.

Same value as ``SAGate`` (biased variance, the same eps; proven within 1e-5 in tests), for runtimes whose op set
takes the elementary ops but not the normalization: ExecuTorch lowers ``F.instance_norm`` to
``_native_batch_norm_legit_no_stats`` + ``repeat``, which XNNPACK does not take, so every gate splits the delegated
graph (18 XNNPACK partitions for the fold SA-MobileNetV2 on CIFAR, portable kernels between them); written out, the
whole model is one partition. The spatial mean is computed once and serves both branches (the channel branch's
``mean * cw`` and the centring). The per-channel constants are stored as (1, C, 1, 1): they broadcast as they are,
with no reshape in the graph. A deploy form recorded in the artifact's metadata (``sa_gate_form``)."""
from __future__ import annotations

import torch
from torch import nn

from sa_deploy.rewrite.sa_gate import SAGate

FORM = "explicit-norm"  # the metadata value of ``sa_gate_form`` (the default form is ``instance-norm``)


class SAGateExplicitNorm(SAGate):
    """y = x * sigmoid((x - m) * rsqrt(var + eps) * in_scale + in_bias + m * cw), m = mean_hw(x),
    var = mean_hw((x - m)^2): ``SAGate`` with its InstanceNorm written out."""

    form = FORM

    def __init__(self, cw: torch.Tensor, in_scale: torch.Tensor, in_bias: torch.Tensor, eps: float = 1e-5) -> None:
        super().__init__(cw, in_scale, in_bias, eps)
        self.in_scale = self.in_scale.reshape(1, -1, 1, 1)  # still the registered buffers, now broadcastable
        self.in_bias = self.in_bias.reshape(1, -1, 1, 1)

    @classmethod
    def from_gate(cls, gate: SAGate) -> "SAGateExplicitNorm":
        return cls(gate.cw.reshape(-1), gate.in_scale.reshape(-1), gate.in_bias.reshape(-1), gate.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dim=(2, 3), keepdim=True)
        normed = centered * (torch.rsqrt(var + self.eps) * self.in_scale) + self.in_bias
        return x * torch.sigmoid(normed + mean * self.cw)

    def permuted(self, perm: list[int]) -> "SAGateExplicitNorm":
        idx = torch.as_tensor(perm)
        return SAGateExplicitNorm(self.cw.reshape(-1)[idx], self.in_scale.reshape(-1)[idx],
                                  self.in_bias.reshape(-1)[idx], self.eps)


def explicit_norm_gates(module: nn.Module) -> int:
    """Replaces, in place, every ``SAGate`` of a lowered module (a fold gate, or the gate inside a reshape-transpose
    form) by its ``SAGateExplicitNorm``; returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SAGate) and not isinstance(child, SAGateExplicitNorm):
                setattr(parent, name, SAGateExplicitNorm.from_gate(child).to(child.cw.device))
                replaced += 1
    return replaced
