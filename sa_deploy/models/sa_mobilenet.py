"""SA-MobileNetV2: torchvision-layout MobileNetV2 with an ``sa`` layer at the end of each inverted-residual branch
(after the projection BN, before the residual add). Not in the official SA-Net code; keys ``features.N.sa.*``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sa_deploy.models.sa_layer import SALayer

# t (expansion), c (output channels), n (repeats), s (first stride) — torchvision's ImageNet setting
IMAGENET_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# for 32x32 inputs: stride-1 stem and second stage, so the last feature map is 4x4
CIFAR_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class ConvBNReLU6(nn.Sequential):
    """Same child indices as torchvision's Conv2dNormActivation: 0 conv, 1 bn, 2 relu6."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, sa_groups: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.sa = SALayer(cout, sa_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sa(self.conv(x))
        return x + out if self.use_res_connect else out


class SAMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, sa_groups: int = 4,
                 setting: Sequence[tuple[int, int, int, int]] = IMAGENET_SETTING, stem_stride: int = 2,
                 last_channel: int = 1280, dropout: float = 0.2) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(last_channel * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, cin, stride=stem_stride)]
        for t, c, n, s in setting:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, sa_groups))
                cin = cout
        features.append(ConvBNReLU6(cin, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def sa_mobilenetv2(num_classes: int = 1000, width_mult: float = 1.0, sa_groups: int = 4) -> SAMobileNetV2:
    return SAMobileNetV2(num_classes, width_mult, sa_groups)


def sa_mobilenetv2_cifar(num_classes: int = 10, width_mult: float = 0.5, sa_groups: int = 4) -> SAMobileNetV2:
    """SA-MobileNetV2 for 32x32 inputs (stride-1 stem and second stage, 640-wide head)."""
    return SAMobileNetV2(num_classes, width_mult, sa_groups, setting=CIFAR_SETTING, stem_stride=1,
                         last_channel=640, dropout=0.1)
