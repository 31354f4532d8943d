"""Image input for CoreML: pixels 0..255 in, the model's mean/std normalisation inside the model, exactly.

ct.ImageType computes ``scale * pixel + bias`` with a scalar scale and per-channel bias, so a per-channel std does
not fit. We use scale = 1/255 and bias = -mean (giving ``pixel/255 - mean``) and fold 1/std[c] into the input
channels of the first conv: conv(W, (p/255 - m)/s) == conv(W/s, p/255 - m), exact also at zero padding (a padded
zero stays zero either way). No averaged std, so no approximation error."""
from __future__ import annotations

import copy

import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig


def _first_conv_on_input(model: nn.Module, input_size: int) -> nn.Conv2d:
    """The Conv2d that reads the network input directly (checked by running the model once with a hook)."""
    x = torch.zeros(1, 3, input_size, input_size)
    hits: list[nn.Conv2d] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: hits.append(mod) if args[0] is x else None)
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if len(hits) != 1 or hits[0].groups != 1 or hits[0].in_channels != 3:
        raise SADeployError("image input needs the network input to feed exactly one 3-channel conv "
                            "(to fold 1/std into it); export with a tensor input instead")
    return hits[0]


def fold_input_std(model: nn.Module, preprocess: PreprocessConfig) -> nn.Module:
    """A copy of ``model`` that takes ``x*std`` (i.e. pixel/255 - mean) instead of the normalized x."""
    folded = copy.deepcopy(model).eval()
    conv = _first_conv_on_input(folded, preprocess.input_size)
    inv_std = 1.0 / torch.tensor(preprocess.std, dtype=conv.weight.dtype)
    with torch.no_grad():
        conv.weight.mul_(inv_std.reshape(1, 3, 1, 1))
    return folded


def image_input_type(ct, preprocess: PreprocessConfig, name: str = "input"):
    size = preprocess.input_size
    return ct.ImageType(name=name, shape=(1, 3, size, size), scale=1.0 / 255.0,
                        bias=[-float(m) for m in preprocess.mean], color_layout=ct.colorlayout.RGB)
