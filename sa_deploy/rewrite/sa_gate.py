"""SA as a per-channel gate: every output channel of SA depends only on its own input channel.

For pre-shuffle channel ch with j = ch mod (c/groups), k = c/(2*groups):
  j <  k (channel branch, p = j):    gate = sigmoid(cweight[p] * mean_hw(x) + cbias[p])
  j >= k (spatial branch, p = j-k):  gate = sigmoid(A * instnorm(x) + B),
                                     A = sweight[p]*gn.weight[p], B = sweight[p]*gn.bias[p] + sbias[p]
Both are one formula, sigmoid(cw * mean_hw(x) + InstanceNorm(x; scale, bias)), with cw = 0 on spatial channels
and scale = 0 (bias = cbias) on channel-branch channels: 6 ONNX nodes, no reshape and no split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sa_deploy.models.sa_layer import SALayer


class SAGate(nn.Module):
    """y = x * sigmoid(cw * mean_hw(x) + InstanceNorm(x; in_scale, in_bias)), all per-channel constants (c,)."""

    def __init__(self, cw: torch.Tensor, in_scale: torch.Tensor, in_bias: torch.Tensor, eps: float = 1e-5) -> None:
        super().__init__()
        self.register_buffer("cw", cw.detach().clone().reshape(1, -1, 1, 1))
        self.register_buffer("in_scale", in_scale.detach().clone().reshape(-1))
        self.register_buffer("in_bias", in_bias.detach().clone().reshape(-1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the spatial mean as GlobalAveragePool, not ReduceMean: same value, but onnxruntime's INT8 path runs it
        # as QLinearGlobalAveragePool in NHWC (ReduceMean there is a strided float reduction after a
        # DequantizeLinear): INT8 SA-ResNet-50 0.73x -> 0.52x of FP32; FP32 unchanged (benchmarks/RESULTS.md)
        mean = F.adaptive_avg_pool2d(x, 1)
        normed = F.instance_norm(x, weight=self.in_scale, bias=self.in_bias, eps=self.eps)
        return x * torch.sigmoid(normed + mean * self.cw)

    def permuted(self, perm: list[int]) -> "SAGate":
        """The same gate with its channels reordered: new channel i is old channel perm[i]."""
        idx = torch.as_tensor(perm)
        return SAGate(self.cw.reshape(-1)[idx], self.in_scale[idx], self.in_bias[idx], self.eps)


def gate_from_sa(sa: SALayer) -> SAGate:
    """Per-channel gate constants, in pre-shuffle channel order, equal to the SA layer's two branches."""
    c, groups = sa.channel, sa.groups
    k = c // (2 * groups)
    cweight, cbias = sa.cweight.detach().reshape(k), sa.cbias.detach().reshape(k)
    a = sa.sweight.detach().reshape(k) * sa.gn.weight.detach()
    b = sa.sweight.detach().reshape(k) * sa.gn.bias.detach() + sa.sbias.detach().reshape(k)
    zeros = torch.zeros(k)
    # one group's 2k channels: [channel branch k | spatial branch k], repeated for each group
    cw = torch.cat([cweight, zeros]).repeat(groups)
    in_scale = torch.cat([zeros, a]).repeat(groups)
    in_bias = torch.cat([cbias, b]).repeat(groups)
    return SAGate(cw, in_scale, in_bias, sa.gn.eps)
