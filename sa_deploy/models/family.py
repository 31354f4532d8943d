"""The attention family SA-Net compares SA with, in SA-ResNet's layout: SE-, CBAM-, ECA- and GC-ResNet-50 (ImageNet)
and their 32x32 variants built exactly like ``sa_resnet_cifar`` (same stem, widths and depths). The module sits in
every bottleneck after bn3, before the residual add (``sa_resnet.Bottleneck``; the papers' places are cited in
``models.attention``), under its own name: ``layerL.i.{se,cbam,eca,gc}.*``.

Parameter counts (ResNet-50 itself: 25,557,032):
  se_resnet50    28,088,024  (published 28.09M: SE paper / CBAM paper Table 4)
  cbam_resnet50  28,089,608  (published 28.09M)
  eca_resnet50   25,557,118  (published 25.56M with the adaptive k: 5/5/5/7 per stage, 86 weights in all)
  gc_resnet50    28,105,032  with GC in all 16 blocks; 28,078,773 with ``stages=(2, 3, 4)`` (published 28.08M:
                 the paper's GC-ResNet-50 has the block in c3-c5 only)
"""
from __future__ import annotations

from functools import partial

from sa_deploy.models.attention import CBAM, ECAModule, GCBlock, SEModule
from sa_deploy.models.sa_resnet import Attention, AttentionResNet

R50 = [3, 4, 6, 3]
CIFAR = dict(layers=[3, 3, 3], widths=(16, 32, 64), cifar_stem=True, stem_width=16)  # as sa_resnet_cifar


def _stages(stages: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return tuple(stages) if stages is not None else None


def se_attention(reduction: int = 16, stages: tuple[int, ...] | None = None) -> Attention:
    return Attention("se", partial(SEModule, reduction=reduction), _stages(stages))


def cbam_attention(reduction: int = 16, spatial_kernel: int = 7, stages: tuple[int, ...] | None = None) -> Attention:
    return Attention("cbam", partial(CBAM, reduction=reduction, spatial_kernel=spatial_kernel), _stages(stages))


def eca_attention(kernel_size: int | None = None, stages: tuple[int, ...] | None = None) -> Attention:
    return Attention("eca", partial(ECAModule, kernel_size=kernel_size), _stages(stages))


def gc_attention(ratio: float = 1 / 16, stages: tuple[int, ...] | None = None) -> Attention:
    return Attention("gc", partial(GCBlock, ratio=ratio), _stages(stages))


def se_resnet50(num_classes: int = 1000, reduction: int = 16) -> AttentionResNet:
    return AttentionResNet(R50, num_classes, attention=se_attention(reduction))


def cbam_resnet50(num_classes: int = 1000, reduction: int = 16) -> AttentionResNet:
    return AttentionResNet(R50, num_classes, attention=cbam_attention(reduction))


def eca_resnet50(num_classes: int = 1000, kernel_size: int | None = None) -> AttentionResNet:
    return AttentionResNet(R50, num_classes, attention=eca_attention(kernel_size))


def gc_resnet50(num_classes: int = 1000, ratio: float = 1 / 16,
                stages: tuple[int, ...] | None = None) -> AttentionResNet:
    """GC in every bottleneck by default (as the other modules, so the family compares like with like);
    ``stages=(2, 3, 4)`` is the paper's GC-ResNet-50 (c3-c5)."""
    return AttentionResNet(R50, num_classes, attention=gc_attention(ratio, stages))


def se_resnet_cifar(num_classes: int = 10, reduction: int = 16) -> AttentionResNet:
    return AttentionResNet(num_classes=num_classes, attention=se_attention(reduction), **CIFAR)


def cbam_resnet_cifar(num_classes: int = 10, reduction: int = 16) -> AttentionResNet:
    return AttentionResNet(num_classes=num_classes, attention=cbam_attention(reduction), **CIFAR)


def eca_resnet_cifar(num_classes: int = 10, kernel_size: int | None = None) -> AttentionResNet:
    return AttentionResNet(num_classes=num_classes, attention=eca_attention(kernel_size), **CIFAR)


def gc_resnet_cifar(num_classes: int = 10, ratio: float = 1 / 16) -> AttentionResNet:
    return AttentionResNet(num_classes=num_classes, attention=gc_attention(ratio), **CIFAR)
