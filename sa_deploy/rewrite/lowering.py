"""Deploy lowerings of SA, applied to a copy of a model. Each is proven equal to the reference SALayer in tests.

- ``reshape-transpose``: SAGate + channel shuffle as Reshape(b,2,c/2,h*w) -> Transpose -> Reshape (rank <= 4,
  no b*groups arithmetic, so a dynamic batch needs no Shape/Gather chain): 9 ONNX nodes per SA.
- ``fold``: the shuffle permutation is folded into the output channels of the conv + BN feeding SA, leaving only
  SAGate: 6 ONNX nodes per SA.
- ``none``: the reference layer as it is (the naive export, kept for comparisons).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.sa_layer import SALayer, shuffle_permutation
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


def _sa_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "sa", None), SALayer)]


def count_sa_layers(model: nn.Module) -> int:
    return sum(isinstance(m, SALayer) for m in model.modules())


def _fold_block(block: nn.Module) -> None:
    sa: SALayer = block.sa
    if not hasattr(block, "sa_producer"):
        raise SADeployError(f"{type(block).__name__} has an SA layer but no sa_producer(); the fold lowering needs "
                            "to know which conv + BN feeds SA (use --lowering reshape-transpose)")
    conv, bn = block.sa_producer()
    perm = shuffle_permutation(sa.channel, 2)
    idx = torch.as_tensor(perm)
    with torch.no_grad():
        conv.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[idx])
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, name)
            if t is not None:
                t.copy_(t[idx])
    block.sa = gate_from_sa(sa).permuted(perm)


def lower_model(model: nn.Module, lowering: str) -> nn.Module:
    """A copy of ``model`` (eval mode) with every SA layer replaced by the chosen deploy form."""
    if lowering not in LOWERINGS:
        raise SADeployError(f"unknown lowering '{lowering}'; choose one of: {', '.join(LOWERINGS)}")
    lowered = copy.deepcopy(model).eval()
    if lowering == "none":
        return lowered
    blocks = _sa_blocks(lowered)
    if count_sa_layers(lowered) != len(blocks):
        raise SADeployError("found SA layers not held as a block's `sa` attribute; cannot lower them")
    for block in blocks:
        if lowering == "fold":
            _fold_block(block)
        else:
            block.sa = SAReshapeTranspose(gate_from_sa(block.sa))
    return lowered
