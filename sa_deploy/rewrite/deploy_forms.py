"""Which reference attention module gets which exact deploy form: a small registry, applied by ``lowering.lower``
for every lowering except ``none`` (SA keeps its own lowerings: fold / reshape-transpose).

A class is matched exactly (``type(module) is cls``): a subclass may compute something else. A module whose naive
export is already good gets no entry (none of the family today; docs/attention.md records per module why each
form exists). To add one: write the form (built from the reference module, proven equal to it in a property
test) and ``register_deploy_form``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from sa_deploy.models.attention import CBAM, ECAModule, GCBlock, SEModule
from sa_deploy.rewrite.attention_forms import CBAMDeploy, ECADeploy, GCDeploy, SEDeploy


@dataclass(frozen=True)
class DeployForm:
    name: str  # what the lowering records per module, e.g. "se-conv"
    build: Callable[[nn.Module], nn.Module]  # reference module -> its deploy form (a new module)
    summary: str  # one line: what the form changes


_FORMS: dict[type[nn.Module], DeployForm] = {}


def register_deploy_form(cls: type[nn.Module], form: DeployForm) -> DeployForm:
    _FORMS[cls] = form
    return form


def deploy_form_for(module: nn.Module) -> DeployForm | None:
    return _FORMS.get(type(module))


def deploy_forms() -> dict[type[nn.Module], DeployForm]:
    return dict(_FORMS)


for _cls, _form in (
    (SEModule, DeployForm("se-conv", SEDeploy, "Linear layers on the flattened vector -> 1x1 convs, no Reshape")),
    (CBAM, DeployForm("cbam-conv", CBAMDeploy,
                      "shared MLP once on [avg | max] as 1x1 convs, ReduceMax pooling, spatial conv per map "
                      "(no Concat), no Reshape")),
    (ECAModule, DeployForm("eca-rank4", ECADeploy, "Conv1d on (b, 1, c) -> (k x 1) Conv2d on (b, 1, c, 1), no "
                                                   "Shape/Expand")),
    (GCBlock, DeployForm("gc-rank4", GCDeploy, "Reshape + MatMul context -> rank-4 ReduceSum(x * softmax map); "
                                                "LayerNorm -> InstanceNormalization on the transpose + affine")),
):
    register_deploy_form(_cls, _form)
