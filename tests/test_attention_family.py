"""The attention family (SE, CBAM, ECA, GC) in SA-ResNet's layout: published parameter counts, the module's place in
the bottleneck, exact deploy forms (property tests against the reference modules: random channel counts, spatial
sizes, batch sizes and parameter values), and what the naive and deploy exports are (nodes per module, rank,
Shape/Gather, TensorRT lint, CoreML through the reference executor)."""
from __future__ import annotations

import json

import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sa_deploy import api
from sa_deploy.bench.variants import without_attention
from sa_deploy.exporters.inspect import module_graph_facts
from sa_deploy.exporters.metadata import read_onnx_metadata
from sa_deploy.exporters.onnx import export_onnx, onnx_graph
from sa_deploy.models import create_model, list_models
from sa_deploy.models.attention import CBAM, ECAModule, GCBlock, SEModule, attention_modules, eca_kernel_size
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.models.random_weights import randomize
from sa_deploy.rewrite import deploy_form_for, lower

# attribute -> (small variant, ImageNet model, reference class, parameters of the ImageNet model)
FAMILY = {
    "se": ("se_resnet_cifar", "se_resnet50", SEModule, 28_088_024),
    "cbam": ("cbam_resnet_cifar", "cbam_resnet50", CBAM, 28_089_608),
    "eca": ("eca_resnet_cifar", "eca_resnet50", ECAModule, 25_557_118),
    "gc": ("gc_resnet_cifar", "gc_resnet50", GCBlock, 28_105_032),
}
RESNET50 = 25_557_032  # the same network without attention (torchvision's ResNet-50 count)
# ONNX nodes per module at 32x32 (TorchScript exporter, opset 17, onnxsim): naive (lowering none) -> deploy form
NODES = {"se": (8, 6), "cbam": (20, 16), "eca": (10, 6), "gc": (12, 17)}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- models -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attr", FAMILY)
def test_resnet50_parameter_counts_and_keys(attr):
    _, name, cls, params = FAMILY[attr]
    m = create_model(name)
    assert _count(m) == params
    assert _count(without_attention(m)) == RESNET50
    assert sum(isinstance(x, cls) for x in m.modules()) == 16
    keys = set(m.state_dict())
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.weight"} <= keys
    assert all(any(k.startswith(f"layer{i}.0.{attr}.") for k in keys) for i in range(1, 5))
    assert not any(".sa." in k for k in keys)


def test_published_counts_explained():
    """SE and CBAM-ResNet-50 28.09M, ECA 25.56M match; GC in every block is 28.11M, the paper's 28.08M is GC in
    c3-c5 only (stages 2-4)."""
    assert round(FAMILY["se"][3] / 1e6, 2) == round(FAMILY["cbam"][3] / 1e6, 2) == 28.09
    assert round(FAMILY["eca"][3] / 1e6, 2) == 25.56
    assert round(FAMILY["gc"][3] / 1e6, 2) == 28.11
    assert _count(create_model("gc_resnet50", stages=(2, 3, 4))) == 28_078_773  # 28.08M


def test_eca_adaptive_kernel():
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    m = create_model("eca_resnet50")
    assert [getattr(m, f"layer{i}")[0].eca.kernel_size for i in range(1, 5)] == [5, 5, 5, 7]
    small = create_model("eca_resnet_cifar")
    assert [getattr(small, f"layer{i}")[0].eca.kernel_size for i in range(1, 4)] == [3, 5, 5]


@pytest.mark.parametrize("attr", FAMILY)
def test_small_variant_is_sa_resnet_cifar_with_another_module(attr):
    """Same stem, widths, depths and backbone keys as sa_resnet_cifar; the module takes bn3's output."""
    small, _, cls, _ = FAMILY[attr]
    m = create_model(small)
    sa = create_model("sa_resnet_cifar")
    backbone = {k: tuple(v.shape) for k, v in m.state_dict().items() if f".{attr}." not in k}
    assert backbone == {k: tuple(v.shape) for k, v in sa.state_dict().items() if ".sa." not in k}
    assert m.preprocess == sa.preprocess and m.fc.out_features == 10
    block = m.layer2[1]
    seen = {}
    block.bn3.register_forward_hook(lambda mod, args, out: seen.update(bn3=out.clone()))
    getattr(block, attr).register_forward_pre_hook(lambda mod, args: seen.update(attn=args[0].clone()))
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32))
    assert isinstance(getattr(block, attr), cls) and torch.equal(seen["bn3"], seen["attn"])


def test_registry_lists_the_family():
    names = {spec[0] for spec in FAMILY.values()} | {spec[1] for spec in FAMILY.values()}
    assert names <= set(list_models())
    assert create_model("gc_resnet50").preprocess.input_size == 224
    assert create_model("gc_resnet50").preprocess.resize == 256


def test_floors_are_one_network():
    """Every small variant without its attention is the same network (the floor the costs are measured on)."""
    floors = [without_attention(create_model(n)) for n in ["sa_resnet_cifar"] + [v[0] for v in FAMILY.values()]]
    shapes = [{k: tuple(v.shape) for k, v in f.state_dict().items()} for f in floors]
    assert all(s == shapes[0] for s in shapes)
    assert all(not attention_modules(f) for f in floors)


def test_randomize_covers_the_family():
    a = randomize(create_model("gc_resnet_cifar"), seed=3)
    b = randomize(create_model("gc_resnet_cifar"), seed=3)
    gc = a.layer1[0].gc
    assert gc.transform[-1].weight.abs().sum() > 0  # GC's last conv starts at zero: randomize moves it
    assert not torch.equal(gc.transform[1].weight, torch.ones_like(gc.transform[1].weight))
    for k, v in a.state_dict().items():
        if ".gc." in k:
            assert torch.equal(v, b.state_dict()[k]), k


# ---- deploy forms equal the reference modules ----------------------------------------------------------------------

def _random_parameters(module: nn.Module, seed: int, scale: float) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(scale * torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return module.eval()


def _check_form(reference: nn.Module, case: dict) -> None:
    reference = _random_parameters(reference, case["seed"], case["scale"])
    form = deploy_form_for(reference)
    assert form is not None
    deploy = form.build(reference).eval()
    x = 2 * torch.randn(case["batch"], case["channels"], case["h"], case["w"],
                        generator=torch.Generator().manual_seed(case["seed"] + 1))
    with torch.no_grad():
        want = reference(x)
        diff = (deploy(x) - want).abs().max().item()
    assert diff <= 1e-5 * max(1.0, want.abs().max().item()), (case, diff)


def _shapes(channels):
    return st.fixed_dictionaries({
        "channels": channels, "batch": st.integers(1, 4), "h": st.integers(1, 9), "w": st.integers(1, 9),
        "seed": st.integers(0, 2**31 - 1), "scale": st.sampled_from([0.3, 1.0, 3.0])})


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from([1, 2, 4, 8, 16]).flatmap(lambda r: st.tuples(st.just(r), _shapes(st.integers(1, 24).map(
    lambda n: n * r)))))
def test_se_form_equals_reference(drawn):
    reduction, case = drawn
    _check_form(SEModule(case["channels"], reduction), case)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from([1, 4, 16]), st.sampled_from([1, 3, 5, 7]), _shapes(st.integers(1, 16)))
def test_cbam_form_equals_reference(reduction, kernel, case):
    case["channels"] *= reduction
    _check_form(CBAM(case["channels"], reduction, kernel), case)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from([None, 1, 3, 5, 7, 9]), _shapes(st.integers(1, 300)))
def test_eca_form_equals_reference(kernel, case):
    _check_form(ECAModule(case["channels"], kernel), case)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from([16, 8, 4]), _shapes(st.integers(4, 16)))
def test_gc_form_equals_reference(inverse_ratio, case):
    # hidden = channels / inverse_ratio >= 4: a LayerNorm over 2 values that differ by ~sqrt(eps) is
    # ill-conditioned, and two float32 implementations round it differently (as for SA's GroupNorm)
    case["channels"] *= inverse_ratio
    _check_form(GCBlock(case["channels"], 1 / inverse_ratio), case)


def test_lower_applies_forms_except_none():
    model = randomize(create_model("cbam_resnet_cifar"))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        for lowering in ("fold", "reshape-transpose"):
            low = lower(model, lowering)
            assert not any(isinstance(m, CBAM) for m in low.module.modules())
            assert [m.form for m in low.modules] == ["cbam-conv"] * 9 and low.modules[0].name == "layer1.0.cbam"
            assert low.summary() == "9 CBAM: cbam-conv"
            assert (low.module(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
        none = lower(model, "none")
        assert sum(isinstance(m, CBAM) for m in none.module.modules()) == 9 and not none.modules

    class MySE(SEModule):  # a subclass may compute something else: no form
        pass

    assert deploy_form_for(MySE(32)) is None


# ---- exports: naive vs deploy form ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Each small variant exported naive (lowering none) and in its deploy form (fold; parity checked by export)."""
    out = tmp_path_factory.mktemp("family")
    files = {}
    for attr, (small, *_) in FAMILY.items():
        model = randomize(create_model(small), seed=1)
        files[attr, "none"] = export_onnx(model, out / f"{small}_none.onnx", lowering="none")
        res = api.export(model, out, lowering="fold")  # parity vs PyTorch at batch 1 and 3 through the file
        assert all(s.passed and s.max_abs <= 1e-5 for s in res.parity), (small, res.parity)
        files[attr, "fold"] = res.export
    return files


@pytest.mark.parametrize("attr", FAMILY)
def test_nodes_rank_and_shape_ops(exports, attr):
    naive = module_graph_facts(onnx.load(str(exports[attr, "none"].path)), attr)
    deploy = module_graph_facts(onnx.load(str(exports[attr, "fold"].path)), attr)
    assert naive.modules == deploy.modules == 9
    assert (naive.nodes_max, deploy.nodes_max) == NODES[attr] and deploy.nodes_min == deploy.nodes_max
    assert deploy.max_rank == 4 and deploy.shape_ops == 0
    assert not {"Reshape", "Gemm", "MatMul", "Expand", "Shape", "LayerNormalization", "MaxPool"} & set(deploy.ops)
    if attr == "eca":  # expand_as -> Shape + Expand, the 1-D conv on a rank-3 tensor
        assert naive.shape_ops == 9 and naive.max_rank == 4 and naive.ops["Expand"] == 1
    meta = read_onnx_metadata(onnx.load(str(exports[attr, "fold"].path), load_external_data=False))
    forms = json.loads(meta["attention_modules"])
    assert len(forms) == 9 and forms[0]["form"] == deploy_form_for(FAMILY[attr][2](64)).name


def test_lint_verdicts(exports):
    """TensorRT lint: every deploy form passes; GC's naive export fails on LayerNormalization (not in the opset-17
    parser table of TensorRT 8.5), the others pass naive too."""
    for attr in FAMILY:
        assert api.lint_onnx(exports[attr, "fold"].path).passed, attr
        naive = api.lint_onnx(exports[attr, "none"].path)
        if attr == "gc":
            assert naive.rules_failed() == {"op-support"}
            assert any("LayerNormalization" in f.message for f in naive.errors)
        else:
            assert naive.passed, attr


class _AllForms(nn.Module):
    """One small net with the four modules in a row, so that one CoreML conversion covers every deploy form."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c))
        self.se, self.cbam, self.eca, self.gc = SEModule(c), CBAM(c), ECAModule(c), GCBlock(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gc(self.eca(self.cbam(self.se(self.stem(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def test_deploy_forms_need_no_simplifier():
    """Straight from the TorchScript exporter (no onnxsim), the deploy forms hold no Shape/Gather and stay rank 4;
    the naive modules compute their reshapes from the input's shape (onnxsim folds them only when it runs)."""
    net = randomize(_AllForms(), seed=4)
    deploy, _, _ = onnx_graph(net, "fold", 16, simplify=False)
    naive, _, _ = onnx_graph(net, "none", 16, simplify=False)
    for attr, shape_ops in {"se": 4, "cbam": 4, "eca": 1, "gc": 8}.items():
        facts = module_graph_facts(deploy, attr)
        assert facts.shape_ops == 0 and facts.max_rank == 4 and facts.nodes_max == NODES[attr][1], (attr, facts)
        assert module_graph_facts(naive, attr).shape_ops == shape_ops, attr


def test_coreml_converts_every_deploy_form(tmp_path):
    """coremltools converts the deploy forms (torch.export path) and the reference MIL executor runs them within
    fp32 parity; naive ECA needs `tile` and naive GC `layer_norm`, which that executor does not implement."""
    pytest.importorskip("coremltools")
    net = randomize(_AllForms(), seed=2)
    pre = PreprocessConfig(input_size=16, resize=16)
    res = api.export_coreml(net, tmp_path, precision="fp32", preprocess=pre, name="all_forms")
    assert res.runner == "coreml-reference" and all(s.passed for s in res.parity)
    ops = res.export.op_histogram
    assert "layer_norm" not in ops and "tile" not in ops and ops.get("instance_norm") == 1
