"""Reference Shuffle Attention (SA) layer, with the official parameter names and semantics.

SA-Net: "Shuffle Attention for Deep Convolutional Neural Networks" (arXiv 2102.00240).
This is the numerical reference every deploy lowering in ``sa_deploy.rewrite`` is proven against.
"""
from __future__ import annotations

import torch
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle: view (b, groups, c/groups, h, w), swap dims 1 and 2, flatten back."""
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(b, c, h, w)


def shuffle_permutation(channels: int, groups: int = 2) -> list[int]:
    """Source channel of each output channel of ``channel_shuffle`` (out[i] = in[perm[i]])."""
    per_group = channels // groups
    return [(i % groups) * per_group + i // groups for i in range(channels)]


class SALayer(nn.Module):
    """Shuffle Attention, ``SA(channel, groups=64)``.

    Parameters (official names): ``cweight``, ``cbias``, ``sweight``, ``sbias`` of shape (1, k, 1, 1) and
    ``gn = GroupNorm(k, k)`` with k = channel // (2 * groups).
    """

    def __init__(self, channel: int, groups: int = 64) -> None:
        super().__init__()
        if channel <= 0 or groups <= 0:
            raise ValueError(f"SALayer needs positive channel and groups, got channel={channel}, groups={groups}")
        if channel % (2 * groups) != 0:
            raise ValueError(
                f"SALayer: channel={channel} is not divisible by 2*groups={2 * groups}; "
                f"pick groups so that channel % (2*groups) == 0 (e.g. groups={_largest_valid_groups(channel, groups)})"
            )
        self.channel = channel
        self.groups = groups
        k = channel // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, c // self.groups, h, w)
        x0, x1 = x.chunk(2, dim=1)
        # channel attention: gate from the global average of each channel
        xn = x0 * torch.sigmoid(self.cweight * x0.mean(dim=(2, 3), keepdim=True) + self.cbias)
        # spatial attention: gate from the per-channel normalized map
        xs = x1 * torch.sigmoid(self.sweight * self.gn(x1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, c, h, w)
        return channel_shuffle(out, 2)

    def extra_repr(self) -> str:
        return f"channel={self.channel}, groups={self.groups}"


def _largest_valid_groups(channel: int, wanted: int) -> int:
    for g in range(min(wanted, max(channel // 2, 1)), 0, -1):
        if channel % (2 * g) == 0:
            return g
    return 1


SA_PARAMETERS = ("cweight", "cbias", "sweight", "sbias")


def sa_width(module: nn.Module) -> int | None:
    """k (channels per branch and group) when ``module`` has SA's parameters, else None: ``cweight``, ``cbias``,
    ``sweight``, ``sbias`` of shape (1, k, 1, 1) and ``gn`` a GroupNorm over k channels. This is how SA layers are
    recognised in models users bring (the official ``sa_layer`` and its re-implementations share these names);
    whether such a module really computes SA is checked numerically by ``rewrite.find_sa``."""
    params = [getattr(module, name, None) for name in SA_PARAMETERS]
    gn = getattr(module, "gn", None)
    if not all(isinstance(p, torch.Tensor) for p in params) or not isinstance(gn, nn.GroupNorm):
        return None
    k = gn.num_channels
    if any(tuple(p.shape) != (1, k, 1, 1) for p in params):
        return None
    return k


def sa_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every module of ``model`` that has SA's parameters (see ``sa_width``)."""
    return [(name, m) for name, m in model.named_modules() if sa_width(m) is not None]
