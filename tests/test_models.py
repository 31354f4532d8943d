from __future__ import annotations

import pytest
import torch

from sa_deploy.models import SALayer, create_model, get_spec, list_models
from sa_deploy.models.sa_layer import channel_shuffle, shuffle_permutation


def test_sa_parameters_match_official_names_and_shapes():
    sa = SALayer(256, 64)
    shapes = {k: tuple(v.shape) for k, v in sa.state_dict().items()}
    assert shapes == {"cweight": (1, 2, 1, 1), "cbias": (1, 2, 1, 1), "sweight": (1, 2, 1, 1),
                      "sbias": (1, 2, 1, 1), "gn.weight": (2,), "gn.bias": (2,)}
    assert sa.gn.num_groups == sa.gn.num_channels == 2 and sa.gn.eps == 1e-5
    assert list(sa.buffers()) == []


def test_sa_at_init_is_sigmoid1_times_shuffle():
    x = torch.randn(2, 256, 5, 7)
    expected = torch.sigmoid(torch.tensor(1.0)) * channel_shuffle(x, 2)
    assert torch.allclose(SALayer(256, 64)(x), expected, atol=1e-6)
    assert abs(torch.sigmoid(torch.tensor(1.0)).item() - 0.731) < 1e-3


def test_channel_shuffle_matches_torch_and_permutation():
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(channel_shuffle(x, 2), torch.nn.ChannelShuffle(2)(x))
    perm = shuffle_permutation(12)
    assert perm[:4] == [0, 6, 1, 7]
    assert torch.equal(channel_shuffle(x, 2), x[:, perm])


@pytest.mark.parametrize("channel,groups", [(100, 64), (64, 3), (10, 4)])
def test_invalid_channels_error_at_construction(channel, groups):
    with pytest.raises(ValueError, match=r"not divisible by 2\*groups"):
        SALayer(channel, groups)


def test_sa_resnet50_parameter_count_and_keys():
    m = create_model("sa_resnet50")
    assert sum(p.numel() for p in m.parameters()) == 25_557_740
    assert sum(p.numel() for k, p in m.named_parameters() if ".sa." in k) == 708
    keys = set(m.state_dict())
    assert {"conv1.weight", "fc.weight", "layer1.0.downsample.0.weight", "layer4.2.sa.gn.bias",
            "layer3.5.sa.cweight", "layer1.0.bn3.running_var"} <= keys


@pytest.mark.parametrize("name,blocks", [("sa_resnet101", [3, 4, 23, 3]), ("sa_resnet152", [3, 8, 36, 3])])
def test_deeper_resnets_depths(name, blocks):
    m = create_model(name, num_classes=7)
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == blocks
    assert m.fc.out_features == 7


def test_mobilenetv2_layout_and_width():
    m = create_model("sa_mobilenetv2")
    keys = set(m.state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.2.conv.3.weight",
            "features.2.sa.cweight", "features.18.0.weight", "classifier.1.weight"} <= keys
    assert sum(isinstance(mod, SALayer) for mod in m.modules()) == 17
    half = create_model("sa_mobilenetv2", width_mult=0.5)
    assert half.features[1].sa.channel == 8


def test_registry_and_preprocess_config():
    assert {"sa_resnet50", "sa_resnet101", "sa_resnet152", "sa_mobilenetv2", "sa_resnet_cifar",
            "sa_mobilenetv2_cifar"} <= set(list_models())
    family = {f"{m}_resnet{s}" for m in ("se", "cbam", "eca", "gc") for s in ("50", "_cifar")}
    assert family <= set(list_models())
    assert {get_spec(n).preprocess.input_size for n in family} == {32, 224}
    m = create_model("sa_resnet_cifar")
    assert m.preprocess.input_size == 32 and len(m.preprocess.class_names) == 10
    assert create_model("sa_resnet50").preprocess.resize == 256
    for name in ("sa_resnet_cifar", "sa_mobilenetv2_cifar"):
        out = create_model(name)(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)
