"""SA in the models users bring: SA layers anywhere (nn.Sequential, custom blocks, any attribute name), written as
the official layer or a re-implementation, found, proven, and lowered where they sit; fold only where a conv's
output feeds nothing but SA. Exported through the API with a PreprocessConfig."""
from __future__ import annotations

import json

import onnx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from sa_deploy import api
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import inspect_onnx
from sa_deploy.exporters.metadata import read_onnx_metadata
from sa_deploy.models import SALayer
from sa_deploy.models.preprocessing import CIFAR10_32, PreprocessConfig
from sa_deploy.models.sa_layer import SA_PARAMETERS, sa_modules
from sa_deploy.rewrite import lower


class OfficialStyleSA(nn.Module):
    """Written the way the official `sa_layer` is: `groups` attribute, pooling and sigmoid modules, the shuffle as
    a rank-5 permute, the channel count never stored."""

    def __init__(self, channel: int, groups: int = 64) -> None:
        super().__init__()
        k = channel // (2 * groups)
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)
        return out.reshape(b, -1, h, w)


class ReimplementedSA(nn.Module):
    """A popular re-implementation's shape: the groups as `G`, `view`, split instead of chunk, ChannelShuffle."""

    def __init__(self, channel: int, G: int = 8) -> None:  # noqa: N803 - the re-implementation's name
        super().__init__()
        self.G = G
        k = channel // (2 * G)
        self.gn = nn.GroupNorm(k, k)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.contiguous().view(b * self.G, -1, h, w)
        x_channel, x_spatial = x.split(x.shape[1] // 2, dim=1)
        x_channel = x_channel * torch.sigmoid(self.cweight * F.adaptive_avg_pool2d(x_channel, 1) + self.cbias)
        x_spatial = x_spatial * torch.sigmoid(self.sweight * self.gn(x_spatial) + self.sbias)
        return self.shuffle(torch.cat([x_channel, x_spatial], dim=1).contiguous().view(b, -1, h, w))


class MaxPoolLookAlike(OfficialStyleSA):
    """SA's parameters, another formula: the channel branch pools with max, not mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.avg_pool = nn.AdaptiveMaxPool2d(1)
        return super().forward(x)


class Block(nn.Module):
    """A user's block: conv-BN-ReLU then SA under another name (`attention`), as in many detectors' necks."""

    def __init__(self, c: int, sa: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)
        self.attention = sa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.act(self.bn(self.conv(x))))


class SharedOutput(nn.Module):
    """The conv's output feeds SA and a second consumer: folding would change what that consumer sees."""

    def __init__(self, c: int, sa: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)
        self.sa = sa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.sa(y) + 0.5 * y


class UserNet(nn.Module):
    """Five SA layers in five places, in three spellings."""

    def __init__(self, c: int = 32, groups: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        # in an nn.Sequential, after conv + BN: folded
        self.features = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), OfficialStyleSA(c, groups))
        # in a custom block after conv + BN + ReLU: folded (ReLU commutes with the permutation)
        self.block = Block(c, ReimplementedSA(c, groups))
        # after a conv whose output is also used elsewhere: not folded
        self.shared = SharedOutput(c, SALayer(c, groups))
        # after a depthwise conv: not folded (the permutation crosses its groups)
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c),
                                nn.Sequential(SALayer(c, groups)))
        # after a conv with a bias and no BN: folded
        self.nobn = nn.ModuleList([nn.Conv2d(c, c, 1), SALayer(c, groups)])
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.features(self.stem(x)))
        x = self.dw(self.shared(x))
        x = self.nobn[1](self.nobn[0](x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


EXPECTED_FORMS = {"features.2": "fold", "block.attention": "fold", "shared.sa": "reshape-transpose",
                  "dw.2.0": "reshape-transpose", "nobn.1": "fold"}


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every parameter and BN statistic at a trained network's scale (SA's init values are too
    regular to test with; unscaled weights would blow the logits up to where float32 rounding dominates)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in SA_PARAMETERS:
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)  # conv/linear: 1/sqrt(fan_in)
            else:
                p.copy_(0.5 + 0.25 * torch.rand(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _max_rel_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = a(x)
        return (b(x) - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def test_finds_every_spelling_of_sa_anywhere():
    net = UserNet()
    assert sorted(name for name, _ in sa_modules(net)) == sorted(EXPECTED_FORMS)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(groups=st.sampled_from([1, 2, 4, 8]), k=st.integers(1, 3), size=st.integers(4, 12), batch=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_lowerings_equal_the_user_model(groups, k, size, batch, seed):
    assume(groups * k >= 2)  # with 2 channels the shuffle is the identity, and even a depthwise conv folds it
    net = randomized(UserNet(2 * groups * k, groups), seed)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    for lowering in ("fold", "reshape-transpose"):
        lowered = lower(net, lowering, input_size=size)
        assert not sa_modules(lowered.module), "an SA layer was left in place"
        assert _max_rel_diff(net, lowered.module, x) <= 1e-5, lowering
        expected = EXPECTED_FORMS if lowering == "fold" else dict.fromkeys(EXPECTED_FORMS, lowering)
        assert {layer.name: layer.form for layer in lowered.layers} == expected


def test_fold_says_why_a_layer_was_not_folded():
    layers = {layer.name: layer for layer in lower(randomized(UserNet()), "fold", input_size=16).layers}
    assert "2 consumers" in layers["shared.sa"].reason
    assert "groups=32" in layers["dw.2.0"].reason
    assert layers["features.2"].producer == "features.0 + features.1"
    assert layers["block.attention"].producer == "block.conv + block.bn"
    assert layers["nobn.1"].producer == "nobn.0" and not layers["nobn.1"].reason


def test_the_original_model_is_untouched():
    net = randomized(UserNet())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lower(net, "fold", input_size=16)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert len(sa_modules(net)) == 5


def test_a_look_alike_that_computes_something_else_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 16, 1), MaxPoolLookAlike(16, 2))
    with pytest.raises(SADeployError, match=r"1 \(MaxPoolLookAlike\) has SA's parameters but does not compute"):
        lower(net, "fold", input_size=8)
    assert len(lower(net, "none", input_size=8).layers) == 0  # the escape hatch the error names


def test_a_look_alike_with_another_norm_is_refused():
    sa = SALayer(16, 2)
    sa.gn = nn.GroupNorm(1, 4)  # layer norm over the branch, not SA's per-channel normalization
    with pytest.raises(SADeployError, match="does not compute Shuffle Attention"):
        lower(nn.Sequential(nn.Conv2d(3, 16, 1), sa), "reshape-transpose", input_size=8)


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so no producer can be read from its graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.sa = SALayer(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 1.0
        return self.sa(y)


def test_untraceable_model_gets_reshape_transpose_with_the_reason():
    net = randomized(Untraceable())
    lowered = lower(net, "fold", input_size=8)
    assert [layer.form for layer in lowered.layers] == ["reshape-transpose"]
    assert "torch.fx cannot trace Untraceable" in lowered.layers[0].reason
    assert _max_rel_diff(net, lowered.module, torch.randn(2, 3, 8, 8)) <= 1e-5


def test_a_layer_called_twice_is_not_folded():
    sa = SALayer(16, 2)
    net = randomized(nn.Sequential(nn.Conv2d(3, 16, 1), sa, nn.Conv2d(16, 16, 1), sa))
    lowered = lower(net, "fold", input_size=8)
    assert [layer.form for layer in lowered.layers] == ["reshape-transpose"]
    assert "called 2 times" in lowered.layers[0].reason
    assert _max_rel_diff(net, lowered.module, torch.randn(3, 3, 8, 8)) <= 1e-5


PREPROCESS = PreprocessConfig(32, 32, "bilinear", CIFAR10_32.mean, CIFAR10_32.std)


def test_api_exports_a_user_model_with_fold(tmp_path):
    net = randomized(UserNet())
    res = api.export(net, tmp_path, "fold", preprocess=PREPROCESS)
    exp = res.export
    assert exp.path == tmp_path / "UserNet_fold.onnx"
    assert max(s.max_abs for s in res.parity) <= 1e-5 and all(s.passed for s in res.parity)
    assert {layer.name: layer.form for layer in exp.sa_layers} == EXPECTED_FORMS
    assert exp.lowering_summary == "5 SA layers: 3 folded, 2 reshape-transpose"
    meta = read_onnx_metadata(onnx.load(str(exp.path)))
    assert meta["model"] == "UserNet" and meta["model_source"] == f"module {__name__}.UserNet"
    assert meta["checkpoint_sha256"] == "none (in-memory module)" and len(meta["weights_sha256"]) == 64
    assert json.loads(meta["preprocess"])["mean"] == list(PREPROCESS.mean)
    assert {d["name"]: d["form"] for d in json.loads(meta["sa_layers"])} == EXPECTED_FORMS
    ops = [n.op_type for n in onnx.load(str(exp.path)).graph.node]
    assert ops.count("InstanceNormalization") == 5 and ops.count("Transpose") == 2  # 2 shuffles left, rank 4
    assert inspect_onnx(exp.path).sa_layers == 5


@pytest.mark.parametrize("lowering", ["reshape-transpose", "fold"])
def test_inspect_counts_sa_layers_of_a_user_model_in_every_precision(tmp_path, lowering):
    """Counted by structure (their names are the user's): FP32, FP16 and both INT8 flavours, each lowering."""
    fp32 = api.export(randomized(UserNet()), tmp_path, lowering, preprocess=PREPROCESS).export.path
    files = [fp32, api.fp16(fp32)] + [api.quantize(fp32, "embedded", flavour=f, num=16, method="minmax").path
                                      for f in ("cpu", "tensorrt")]
    assert [inspect_onnx(f).sa_layers for f in files] == [5, 5, 5, 5]
    # the tensorrt flavour keeps every gate float, found by structure (the layers are not named `sa`)
    float_nodes = json.loads(read_onnx_metadata(onnx.load(str(files[3])))["float_nodes"])
    assert len(float_nodes) == 5 * 6 and sum("Sigmoid" in n for n in float_nodes) == 5


def test_api_names_a_user_model_and_needs_its_preprocessing(tmp_path):
    with pytest.raises(SADeployError, match="pass preprocess=PreprocessConfig"):
        api.export(UserNet(), tmp_path)
    with pytest.raises(SADeployError, match="cannot name a file"):
        api.export(UserNet(), tmp_path, preprocess=PREPROCESS, name="../escape")
    assert not list(tmp_path.iterdir())
    res = api.export(randomized(UserNet()), tmp_path, "reshape-transpose", preprocess=PREPROCESS, name="my-net")
    assert res.export.path.name == "my-net_reshape-transpose.onnx"


def test_api_exports_a_user_model_to_openvino(tmp_path):
    pytest.importorskip("openvino", reason="openvino extra not installed")
    from sa_deploy.backends.openvino.inspect import read_ir_metadata

    res = api.export_openvino(randomized(UserNet()), tmp_path, preprocess=PREPROCESS)
    assert res.onnx.export.path == tmp_path / "UserNet_fold.onnx"
    assert res.export.path == tmp_path / "UserNet_fold_fp32.xml"
    assert res.parity and all(s.passed for s in res.parity)
    assert read_ir_metadata(res.export.path)["model_source"] == f"module {__name__}.UserNet"


def test_api_exports_a_user_model_to_coreml(tmp_path):
    pytest.importorskip("coremltools", reason="coreml extra not installed")
    from sa_deploy.backends.coreml.export import read_coreml_metadata

    res = api.export_coreml(randomized(UserNet()), tmp_path, preprocess=PREPROCESS)
    assert res.export.path == tmp_path / "UserNet_fold_fp32.mlpackage"
    assert res.parity and all(s.passed for s in res.parity)
    meta = read_coreml_metadata(res.export.path)
    assert meta["model_source"] == f"module {__name__}.UserNet" and meta["model"] == "UserNet"


def test_naive_export_of_an_op_onnx_lacks_is_a_clear_error(tmp_path):
    """nn.ChannelShuffle (the re-implementation's shuffle) has no ONNX export: lowering none says so in one line,
    the lowerings replace it and export."""
    with pytest.raises(SADeployError, match="torch.onnx cannot export UserNet: .*channel_shuffle"):
        api.export(randomized(UserNet()), tmp_path, "none", preprocess=PREPROCESS)
    assert not list(tmp_path.iterdir())
