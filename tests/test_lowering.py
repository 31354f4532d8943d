"""Each deploy lowering equals the reference SA layer (max abs diff <= 1e-5), alone and inside full models."""
from __future__ import annotations

import torch
from helpers import random_sa, randomize, sa_cases
from hypothesis import given, settings

from sa_deploy.models import SALayer, create_model
from sa_deploy.models.sa_layer import shuffle_permutation
from sa_deploy.rewrite import gate_from_sa, lower_model
from sa_deploy.rewrite.lowering import SAReshapeTranspose


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sa_cases())
def test_reshape_transpose_equals_reference(case):
    sa = random_sa(case["channel"], case["groups"], case["seed"])
    x = torch.randn(case["batch"], case["channel"], case["h"], case["w"],
                    generator=torch.Generator().manual_seed(case["seed"] + 1))
    with torch.no_grad():
        diff = (SAReshapeTranspose(gate_from_sa(sa))(x) - sa(x)).abs().max().item()
    assert diff <= 1e-5


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sa_cases())
def test_fold_equals_reference(case):
    """fold = gate with permuted constants applied to permuted channels; no shuffle left."""
    sa = random_sa(case["channel"], case["groups"], case["seed"])
    x = torch.randn(case["batch"], case["channel"], case["h"], case["w"],
                    generator=torch.Generator().manual_seed(case["seed"] + 1))
    perm = shuffle_permutation(case["channel"])
    folded_gate = gate_from_sa(sa).permuted(perm)
    with torch.no_grad():
        diff = (folded_gate(x[:, perm]) - sa(x)).abs().max().item()
    assert diff <= 1e-5


def test_lowerings_inside_full_models():
    for name, size in (("sa_resnet_cifar", 32), ("sa_mobilenetv2_cifar", 32), ("sa_mobilenetv2", 96)):
        model = randomize(create_model(name))
        x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = model(x)
            for lowering in ("reshape-transpose", "fold"):
                lowered = lower_model(model, lowering)
                assert not any(isinstance(m, SALayer) for m in lowered.modules())
                assert (lowered(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), \
                    (name, lowering)
        # the original model is untouched
        assert sum(isinstance(m, SALayer) for m in model.modules()) > 0


def test_fold_inside_sa_resnet50():
    model = randomize(create_model("sa_resnet50", num_classes=10))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        for lowering in ("reshape-transpose", "fold"):
            assert (lower_model(model, lowering)(x) - ref).abs().max().item() <= 1e-5 * max(1, ref.abs().max())
