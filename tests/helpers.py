"""Helpers shared by the test modules (imported as ``from helpers import ...``; pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st

from sa_deploy.backends import TorchRunner
from sa_deploy.models import SALayer
from sa_deploy.models.preprocessing import CIFAR10_32
from sa_deploy.models.random_weights import randomize

__all__ = ["ROOT", "random_sa", "randomize", "sa_cases", "tiny_mlpackage", "torch_logits"]

ROOT = Path(__file__).resolve().parents[1]  # the repository (scripts/ live here)


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The PyTorch reference logits of ``model`` on NCHW float inputs ``x``."""
    with TorchRunner(model) as runner:
        return runner.infer(x)


@st.composite
def sa_cases(draw):
    """Random SA layer shapes: groups, channel = 2 * groups * k, batch, H, W, a seed."""
    groups = draw(st.integers(1, 16))
    k = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if h * w < 4:
        # 1 value per channel: GroupNorm (the reference) is undefined. 2 values: normalizing them is ill-conditioned
        # when they differ by ~sqrt(eps), so both float32 implementations round differently (3e-5 seen in 2 of
        # 3,000 random cases, all 1x2). SA layers in real networks see maps of 4x4 and more.
        w = -(-4 // h)
    return dict(groups=groups, channel=2 * groups * k, batch=draw(st.integers(1, 4)), h=h, w=w,
                seed=draw(st.integers(0, 2**31 - 1)))


def random_sa(channel: int, groups: int, seed: int) -> SALayer:
    """An SA layer with seeded random parameters (x2, so the gates are far from their init), in eval mode."""
    sa = SALayer(channel, groups)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sa.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)
    return sa.eval()


def tiny_mlpackage(path: Path, metadata: dict[str, str] | None = None) -> Path | None:
    """A two-op ML program (reshape + linear, weights in weight.bin) with sa-deploy metadata (model, preprocessing,
    plus ``metadata``) saved at ``path``, or None without coremltools."""
    try:
        import coremltools as ct
        from coremltools.converters.mil import Builder as mb
    except ImportError:
        return None
    w = np.random.RandomState(0).randn(10, 3 * 32 * 32).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 32, 32))], opset_version=ct.target.iOS16)
    def prog(input):
        return mb.linear(x=mb.reshape(x=input, shape=[1, 3 * 32 * 32]), weight=w, name="logits")

    mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                         compute_precision=ct.precision.FLOAT32)
    mlmodel.user_defined_metadata.update({"sa_deploy.model": "sa_resnet_cifar",
                                          "sa_deploy.preprocess": CIFAR10_32.to_json(), **(metadata or {})})
    mlmodel.save(str(path))
    return path
