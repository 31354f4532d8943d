"""SA-ResNet (torchvision ResNet layout + an ``sa`` layer at the end of each Bottleneck), ImageNet and CIFAR sizes.

The ResNet is generic over its attention module (``AttentionResNet``, ``Attention``): the same layout carries SA,
SE, CBAM, ECA or GC (``models.family``) at the same place, under the module's own attribute name."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from sa_deploy.models.sa_layer import SALayer


@dataclass(frozen=True)
class Attention:
    """Which attention module a bottleneck carries: its attribute name (state_dict keys ``layerL.i.<name>.*``) and
    a factory from the channel count to the module. ``stages``: the stages (1-based) whose blocks carry it (None:
    every stage); blocks of other stages get nn.Identity under the same name (no parameters)."""
    name: str
    factory: Callable[[int], nn.Module]
    stages: tuple[int, ...] | None = None


def sa_attention(sa_groups: int = 64) -> Attention:
    return Attention("sa", partial(SALayer, groups=sa_groups))


class Bottleneck(nn.Module):
    """conv1-bn1-relu-conv2-bn2-relu-conv3-bn3-<attention>, + identity/downsample, relu: the attention module sits
    on the residual branch after its last BN, before the addition (SA-Net's place, and SE's, CBAM's, ECA's and
    GC's in their papers). Default attention: SA with ``sa_groups``."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 sa_groups: int = 64, attention: Attention | None = None, with_attention: bool = True) -> None:
        super().__init__()
        attention = attention or sa_attention(sa_groups)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.attention_name = attention.name
        module = attention.factory(planes * self.expansion) if with_attention else nn.Identity()
        setattr(self, attention.name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = getattr(self, self.attention_name)(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class AttentionResNet(nn.Module):
    """torchvision's ResNet layout with an attention module in every Bottleneck (keys ``layerL.i.<name>.*``).

    ``cifar_stem=True`` uses a 3x3 stride-1 stem without max-pool (for 32x32 inputs).
    """

    def __init__(self, layers: Sequence[int], num_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512),
                 attention: Attention | None = None, cifar_stem: bool = False, stem_width: int = 64) -> None:
        super().__init__()
        attention = attention or sa_attention()
        self.attention_spec = attention
        if len(layers) != len(widths):
            raise ValueError(f"layers ({len(layers)}) and widths ({len(widths)}) must have the same length")
        self.inplanes = stem_width
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, stem_width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, stride=2, padding=1)
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            on = attention.stages is None or i + 1 in attention.stages
            setattr(self, f"layer{i + 1}", self._make_layer(planes, blocks, stride, attention, on))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1] * Bottleneck.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int, attention: Attention, on: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, attention=attention, with_attention=on)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, attention=attention, with_attention=on) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """The backbone's init; attention modules keep their own (each as its paper initialises it)."""
        inside = {id(m) for block in self.modules() if isinstance(block, Bottleneck)
                  for m in getattr(block, block.attention_name).modules()}
        for m in self.modules():
            if id(m) in inside:  # (SA's GroupNorm starts at ones/zeros either way)
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SAResNet(AttentionResNet):
    """SA-ResNet with official state_dict keys (torchvision ResNet + ``layerL.i.sa.*``)."""

    def __init__(self, layers: Sequence[int], num_classes: int = 1000, widths: Sequence[int] = (64, 128, 256, 512),
                 sa_groups: int = 64, cifar_stem: bool = False, stem_width: int = 64) -> None:
        super().__init__(layers, num_classes, widths, sa_attention(sa_groups), cifar_stem, stem_width)


def sa_resnet50(num_classes: int = 1000, sa_groups: int = 64) -> SAResNet:
    return SAResNet([3, 4, 6, 3], num_classes, sa_groups=sa_groups)


def sa_resnet101(num_classes: int = 1000, sa_groups: int = 64) -> SAResNet:
    return SAResNet([3, 4, 23, 3], num_classes, sa_groups=sa_groups)


def sa_resnet152(num_classes: int = 1000, sa_groups: int = 64) -> SAResNet:
    return SAResNet([3, 8, 36, 3], num_classes, sa_groups=sa_groups)


def sa_resnet_cifar(num_classes: int = 10, sa_groups: int = 8) -> SAResNet:
    """Small bottleneck SA-ResNet for 32x32 inputs: 3 stages of 3 blocks, outputs 64/128/256 channels."""
    return SAResNet([3, 3, 3], num_classes, widths=(16, 32, 64), sa_groups=sa_groups, cifar_stem=True,
                    stem_width=16)
