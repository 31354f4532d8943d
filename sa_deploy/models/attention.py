"""The attention modules SA-Net's paper compares SA with -- SE, CBAM, ECA, GC -- written from their papers'
descriptions, as reference modules (the form people write and train; ``rewrite.attention_forms`` holds the exact
deploy forms proven equal to them).

Every one of them sits where its paper puts it in a ResNet bottleneck, the same place as SA: on the output of the
residual branch's last conv + BN, before the residual addition (``sa_resnet.Bottleneck``):

- SE  (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507, Fig. 3 "SE-ResNet module": the
  SE block rescales the residual branch before its summation with the identity branch);
- CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv 1807.06521, Fig. 3 "CBAM
  integrated with a ResBlock in ResNet": applied to the convolution outputs of each block, before the addition);
- ECA (Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020,
  arXiv 1910.03151: ECA takes the SE block's place in ResNet-50, i.e. after the last BN, before the addition);
- GC  (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW 2019,
  arXiv 1904.11492, Fig. 4(d) and the position ablation: "after 1x1", the last 1x1 conv of the residual block,
  before the addition, is the default).

``ATTENTION_CLASSES`` names every attention module the toolchain knows (SA included), for the attention-free
floor (``bench.variants.without_attention``) and for ``random_weights.randomize``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sa_deploy.models.sa_layer import SALayer, sa_modules


def _hidden(channels: int, reduction: int, what: str) -> int:
    if channels <= 0 or reduction <= 0 or channels // reduction < 1:
        raise ValueError(f"{what}: channels={channels} with reduction {reduction} leaves no hidden units")
    return channels // reduction


class SEModule(nn.Module):
    """Squeeze-and-Excitation, ``SE(channels, reduction=16)``.

    Squeeze: global average pooling to a (b, c) vector. Excitation: ``sigmoid(W2 relu(W1 z))`` with W1 (c/r x c)
    and W2 (c x c/r) fully connected layers (with biases, as in the paper's models: SE-ResNet-50 has 28.09M
    parameters). Scale: each channel of x times its gate. Parameters: ``fc1``, ``fc2`` (nn.Linear)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction, "SEModule")
        self.channels, self.reduction = channels, reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        z = F.adaptive_avg_pool2d(x, 1).view(b, c)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))
        return x * s.view(b, c, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class CBAM(nn.Module):
    """Convolutional Block Attention Module, ``CBAM(channels, reduction=16, spatial_kernel=7)``: channel attention,
    then spatial attention, applied in sequence (the paper's best arrangement).

    Channel: ``Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` with one shared MLP (c -> c/r -> c, ReLU after
    the first layer); x' = Mc * x. Spatial: ``Ms = sigmoid(f7x7([AvgPool_c(x'); MaxPool_c(x')]))``, the mean and the
    max over channels concatenated in that order (the paper's Eq. 3) into a 2-channel map; out = Ms * x'.
    Parameters: ``mlp`` (Linear, ReLU, Linear, with biases) and ``spatial`` (Conv2d 2 -> 1, 7x7, with a bias: the
    paper writes f7x7 alone; the authors' code puts an eval-mode BatchNorm after a bias-free conv, the same affine
    map). Not the authors' code: theirs concatenates [max; mean], so their spatial weights load with the two input
    channels swapped."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction, "CBAM")
        if spatial_kernel % 2 != 1:
            raise ValueError(f"CBAM: spatial_kernel must be odd (same-size output), got {spatial_kernel}")
        self.channels, self.reduction = channels, reduction
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        avg = F.adaptive_avg_pool2d(x, 1).view(b, c)
        mx = F.adaptive_max_pool2d(x, 1).view(b, c)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx)).view(b, c, 1, 1)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size k = |log2(C)/gamma + b/gamma|_odd: t = log2(C)/gamma + b/gamma, then the nearest
    odd integer, ties going up (floor, and +1 when even: 64 -> 3, 128 -> 5, 256..1024 -> 5, 2048 -> 7)."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECAModule(nn.Module):
    """Efficient Channel Attention, ``ECA(channels, kernel_size=None, gamma=2, b=1)``.

    Global average pooling, then a 1-D convolution of size k across the channel axis (local cross-channel
    interaction without dimensionality reduction; no bias), sigmoid, and each channel of x times its gate.
    k from ``eca_kernel_size`` unless given. Parameter: ``conv`` (nn.Conv1d(1, 1, k))."""

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        if k % 2 != 1:
            raise ValueError(f"ECAModule: kernel_size must be odd, got {k}")
        self.channels, self.kernel_size = channels, k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(x, 1)  # (b, c, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2))  # (b, 1, c): the 1-D conv runs along the channels
        y = torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # (b, c, 1, 1)
        return x * y.expand_as(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


class GCBlock(nn.Module):
    """Global Context block, ``GC(channels, ratio=1/16)``: context modeling, transform, fusion by addition.

    Context: a 1x1 conv W_k (c -> 1) gives one logit per position, softmax over the h*w positions, and the
    weighted sum of x over the positions (attention pooling) -> (b, c, 1, 1). Transform: 1x1 conv (c -> c*ratio),
    LayerNorm over (c*ratio, 1, 1), ReLU, 1x1 conv (c*ratio -> c). Fusion: out = x + transform(context), broadcast
    over positions. Parameters: ``mask`` (W_k) and ``transform`` (Conv2d, LayerNorm, ReLU, Conv2d), with biases."""

    def __init__(self, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        if hidden < 1:
            raise ValueError(f"GCBlock: channels={channels} with ratio {ratio} leaves no hidden units")
        self.channels, self.ratio = channels, ratio
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.LayerNorm([hidden, 1, 1]),
                                       nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        # the authors' init: W_k Kaiming (fan_in), the last transform conv zero, so the block starts as the identity
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(self.mask(x).view(b, 1, h * w), dim=-1)  # (b, 1, hw)
        context = torch.matmul(x.view(b, c, h * w), weights.transpose(1, 2))  # (b, c, 1)
        return x + self.transform(context.view(b, c, 1, 1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ratio={self.ratio:g}"


# every attention module class the toolchain knows, by the attribute name it has in a bottleneck
ATTENTION_CLASSES: dict[str, type[nn.Module]] = {"sa": SALayer, "se": SEModule, "cbam": CBAM, "eca": ECAModule,
                                                  "gc": GCBlock}


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every attention module of ``model``: the layers with SA's parameters (wherever
    they sit, see ``sa_layer.sa_modules``) and every instance of a known attention class (not their children)."""
    sa_ids = {id(m) for _, m in sa_modules(model)}
    classes = tuple(ATTENTION_CLASSES.values())
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue
        if id(m) in sa_ids or isinstance(m, classes):
            found.append((name, m))
    return found
