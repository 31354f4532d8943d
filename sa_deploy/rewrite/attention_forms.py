"""Exact deploy forms of the attention family (SE, CBAM, ECA, GC; reference modules in ``models.attention``), each
built from a reference module's parameters and proven equal to it in tests (max |diff| <= 1e-5 of the output's
scale). What the naive export of each does and what its form changes: docs/attention.md.

- SE:   the two nn.Linear layers on the flattened (b, c) vector become 1x1 convs on the pooled (b, c, 1, 1) map:
        GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul (no Reshape, no Gemm).
- CBAM: the shared MLP runs once on the avg- and max-pooled maps side by side, (b, c, 1, 2): W1 as a 1x1 conv,
        ReLU, the two columns summed, W2 as a 1x1 conv with bias 2*b2 (W2 is linear); the global max pool is a
        ReduceMax over (h, w), not a MaxPool whose kernel is the feature map's size; no Reshape. The 7x7 conv over
        Concat[mean; max] becomes one 1-channel conv per map, summed (the conv is linear in its input channels):
        coremltools' quantizer gives a Concat and its inputs one shared scale, which came out fit to the mean map
        and clipped the max map (CoreML W8A8 of cbam_resnet_cifar: top-1 70% with the Concat, 88% without; float
        89%); split, each map gets its own scale.
- ECA:  the 1-D conv across channels runs on (b, 1, c, 1) as a (k x 1) Conv2d between two Transposes: rank 4, no
        Squeeze/Unsqueeze, and the gate broadcasts in the Mul (no Shape -> Expand).
- GC:   the context in rank 4 without shape arithmetic: softmax over (h, w) of the logit map written out (ReduceMax,
        Sub, Exp, ReduceSum, Div) and ReduceSum(x * map) instead of Reshape(b, c, h*w) + MatMul (whose Shape/Gather
        chains only onnxsim removes); the LayerNorm over the (c/r, 1, 1) transform vector becomes
        InstanceNormalization on its (b, 1, c/r, 1) transpose plus the per-channel affine: opset-17
        LayerNormalization is not in TensorRT 8.5's ONNX parser (JetPack 5) nor in the CoreML reference executor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sa_deploy.models.attention import CBAM, ECAModule, GCBlock, SEModule


def _conv1x1(linear: nn.Linear, bias_scale: float = 1.0) -> nn.Conv2d:
    """nn.Linear(in, out) as the equal 1x1 Conv2d on (b, in, 1, 1) maps (bias times ``bias_scale``)."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.detach().reshape(*linear.weight.shape, 1, 1))
        if linear.bias is not None:
            conv.bias.copy_(bias_scale * linear.bias.detach())
    return conv


class SEDeploy(nn.Module):
    """x * sigmoid(W2' relu(W1' GAP(x))), W1'/W2' the SE layer's Linear layers as 1x1 convs."""

    def __init__(self, se: SEModule) -> None:
        super().__init__()
        self.reduce = _conv1x1(se.fc1)
        self.expand = _conv1x1(se.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(s))))


class CBAMDeploy(nn.Module):
    """CBAM with its shared MLP applied once to [avg | max] pooled side by side, rank-4 pooling throughout, and the
    spatial conv split per input map (no Concat)."""

    def __init__(self, cbam: CBAM) -> None:
        super().__init__()
        first, act, second = cbam.mlp
        if not isinstance(act, nn.ReLU):
            raise TypeError(f"CBAM deploy form expects ReLU between the MLP layers, got {type(act).__name__}")
        self.reduce = _conv1x1(first)
        # mlp(avg) + mlp(max) = W2 (relu(W1 avg + b1) + relu(W1 max + b1)) + 2 b2
        self.expand = _conv1x1(second, bias_scale=2.0)
        # conv([mean; max]) = conv_mean(mean) + conv_max(max): no Concat, whose one int8 scale clips one map
        self.spatial_mean, self.spatial_max = (
            nn.Conv2d(1, 1, cbam.spatial.kernel_size, padding=cbam.spatial.padding, bias=bias)
            for bias in (cbam.spatial.bias is not None, False))
        with torch.no_grad():
            self.spatial_mean.weight.copy_(cbam.spatial.weight.detach()[:, :1])
            self.spatial_max.weight.copy_(cbam.spatial.weight.detach()[:, 1:])
            if cbam.spatial.bias is not None:
                self.spatial_mean.bias.copy_(cbam.spatial.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), x.amax(dim=(2, 3), keepdim=True)], dim=3)  # (b, c, 1, 2)
        hidden = torch.relu(self.reduce(pooled)).sum(dim=3, keepdim=True)  # (b, c/r, 1, 1)
        x = x * torch.sigmoid(self.expand(hidden))
        logits = self.spatial_mean(x.mean(dim=1, keepdim=True)) + self.spatial_max(x.amax(dim=1, keepdim=True))
        return x * torch.sigmoid(logits)


class ECADeploy(nn.Module):
    """x * sigmoid(conv_k(GAP(x) viewed as (b, 1, c, 1))): the channel axis moved to H by a Transpose, a (k x 1)
    Conv2d with the ECA kernel, moved back."""

    def __init__(self, eca: ECAModule) -> None:
        super().__init__()
        k = eca.conv.kernel_size[0]
        self.conv = nn.Conv2d(1, 1, (k, 1), padding=(eca.conv.padding[0], 0), bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(eca.conv.weight.detach().reshape(1, 1, k, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(x, 1).transpose(1, 2)  # (b, 1, c, 1)
        return x * torch.sigmoid(self.conv(y).transpose(1, 2))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (b, c, 1, 1) tensor, as InstanceNormalization of its (b, 1, c, 1) transpose
    (one channel normalized over c values: the same mean, biased variance and eps) and a per-channel affine."""

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        shape = tuple(ln.normalized_shape)
        if len(shape) != 3 or shape[1:] != (1, 1):
            raise TypeError(f"ChannelLayerNorm expects LayerNorm([c, 1, 1]), got LayerNorm({list(shape)})")
        c = shape[0]
        self.eps = ln.eps
        weight = ln.weight.detach() if ln.weight is not None else torch.ones(shape)
        bias = ln.bias.detach() if ln.bias is not None else torch.zeros(shape)
        self.register_buffer("weight", weight.reshape(1, c, 1, 1).clone())
        self.register_buffer("bias", bias.reshape(1, c, 1, 1).clone())
        # the instance norm's own scale/bias (one channel): initializers in the graph, not Constant nodes
        self.register_buffer("unit_scale", torch.ones(1))
        self.register_buffer("zero_shift", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.instance_norm(x.transpose(1, 2), weight=self.unit_scale, bias=self.zero_shift, eps=self.eps)
        normed = normed.transpose(1, 2)
        return normed * self.weight + self.bias


class GCDeploy(nn.Module):
    """GC in rank 4 with no shape arithmetic: the softmax over the h*w positions of the (b, 1, h, w) logit map as
    exp(l - max) / sum, the context as ReduceSum over (h, w) of x times that map (no Reshape of x, no MatMul); the
    LayerNorm as ChannelLayerNorm; fusion by addition as in the reference."""

    def __init__(self, gc: GCBlock) -> None:
        super().__init__()
        reduce, ln, act, expand = gc.transform
        if not isinstance(act, nn.ReLU):
            raise TypeError(f"GC deploy form expects ReLU in the transform, got {type(act).__name__}")
        self.mask = gc.mask
        self.transform = nn.Sequential(reduce, ChannelLayerNorm(ln), nn.ReLU(), expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mask(x)  # (b, 1, h, w)
        e = torch.exp(logits - logits.amax(dim=(2, 3), keepdim=True))
        weights = e / e.sum(dim=(2, 3), keepdim=True)
        context = (x * weights).sum(dim=(2, 3), keepdim=True)  # (b, c, 1, 1)
        return x + self.transform(context)
