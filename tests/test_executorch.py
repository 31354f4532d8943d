"""ExecuTorch (XNNPACK): the SA gate's XNNPACK form equals the reference; FP32 programs of both embedded CIFAR models
match PyTorch and are one XNNPACK partition; INT8 (PT2E) keeps top-1; the sidecar round-trips and guards a user's
files; `sa-deploy run` builds, evaluates and reports both rows; `validate` and `inspect` read a .pte.

The gate tests run everywhere; the rest need the executorch extra (``pip install 'sa-deploy[executorch]'``). One
`sa-deploy run` builds the sa_mobilenetv2_cifar programs that the other tests read (an INT8 lowering alone takes
about a minute on 2 cores)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import random_sa, randomize, sa_cases, torch_logits
from hypothesis import given, settings
from torch import nn

from sa_deploy.cli import main
from sa_deploy.errors import OutputPathError, SADeployError
from sa_deploy.models import create_model
from sa_deploy.models.sa_layer import shuffle_permutation
from sa_deploy.rewrite import SAGate, gate_from_sa, lower_model
from sa_deploy.rewrite.explicit_norm import SAGateExplicitNorm, explicit_norm_gates

RUN_ARGS = ["run", "--model", "sa_mobilenetv2_cifar", "--data", "embedded", "--val-num", "100", "--calib-num", "32",
            "--no-coreml", "--no-openvino", "--no-tensorrt"]


# --- the XNNPACK form of the SA gate (no executorch needed) --------------------------------------------------------
@settings(max_examples=150, deadline=None, derandomize=True)
@given(sa_cases())
def test_explicit_norm_gate_equals_reference(case):
    """mean / subtract / multiply / rsqrt == InstanceNorm gate == the SA layer, before and after a fold."""
    sa = random_sa(case["channel"], case["groups"], case["seed"])
    x = torch.randn(case["batch"], case["channel"], case["h"], case["w"],
                    generator=torch.Generator().manual_seed(case["seed"] + 1))
    gate = gate_from_sa(sa)
    explicit = SAGateExplicitNorm.from_gate(gate)
    perm = shuffle_permutation(case["channel"])
    with torch.no_grad():
        ref = sa(x)
        assert (explicit(x) - gate(x)).abs().max().item() <= 1e-5
        assert (explicit.permuted(perm)(x[:, perm]) - ref).abs().max().item() <= 1e-5


def test_explicit_norm_inside_full_models():
    for name, lowering in (("sa_resnet_cifar", "fold"), ("sa_mobilenetv2_cifar", "reshape-transpose")):
        model = randomize(create_model(name))
        lowered = lower_model(model, lowering)
        gates = sum(isinstance(m, SAGate) for m in lowered.modules())
        assert explicit_norm_gates(lowered) == gates > 0
        assert all(isinstance(m, SAGateExplicitNorm) for m in lowered.modules() if isinstance(m, SAGate))
        assert explicit_norm_gates(lowered) == 0  # idempotent
        x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert (lowered(x) - model.eval()(x)).abs().max().item() <= 1e-5


# --- ExecuTorch ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def et():
    return pytest.importorskip("executorch")


@pytest.fixture(scope="module")
def run_out(et, tmp_path_factory):
    """One `sa-deploy run` of sa_mobilenetv2_cifar on 100 embedded images: (exit code, folder, report)."""
    out = tmp_path_factory.mktemp("executorch_run") / "run"
    rc = main([*RUN_ARGS, "--out", f"{out}/"])
    return rc, out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def programs(run_out):
    out = run_out[1]
    return {"fp32": out / "sa_mobilenetv2_cifar_fold_fp32.pte", "int8": out / "sa_mobilenetv2_cifar_fold_int8.pte"}


def _val(sample, model, num=None):
    """(images, labels) of the embedded validation sample, preprocessed for ``model``."""
    source = sample.val.open(model.deploy_config.preprocess, num=num, seed=0)
    return next(source.batches(len(source)))


def test_run_builds_evaluates_and_reports_both_rows(run_out):
    rc, out, report = run_out
    assert rc == 0 and report["passed"]
    rows = {a["name"]: a for a in report["artifacts"]}
    fp32, int8 = rows["executorch-fp32"], rows["executorch-int8"]
    for row in (fp32, int8):
        assert row["status"] == "ok" and row["format"] == "executorch" and row["runner"] == "executorch"
        assert row["xnnpack_partitions"] == 1 and row["portable_ops"] == {} and row["sa_gate_form"] == "explicit-norm"
        assert row["images"] == 100 and row["latency_ms"] > 0 and row["size_mb"] > 0
    assert fp32["max_abs"] <= 1e-4 and fp32["top1_agreement"] == 1.0 and fp32["drop"] == 0.0
    assert int8["top1_agreement"] >= 0.97 and int8["drop"] <= 1.0
    assert int8["quantize"]["quantizer"] == "XNNPACKQuantizer (PT2E)" and int8["quantize"]["calibration_count"] == 32
    assert int8["int8"]["path"]["accumulation"] == "int32"
    stages = {s["name"]: s["status"] for s in report["stages"]}
    assert stages["ExecuTorch program (fp32, XNNPACK)"] == "ok"
    md = (out / "report.md").read_text()
    assert "| executorch fold | fp32 xnnpack |" in md and "| executorch fold | int8 xnnpack (PT2E, 32 calibration" in md
    for pte in (out / "sa_mobilenetv2_cifar_fold_fp32.pte", out / "sa_mobilenetv2_cifar_fold_int8.pte"):
        assert pte.is_file() and pte.with_name(pte.name + ".json").is_file()


def test_fp32_programs_match_pytorch_and_are_one_partition(et, programs, sample, tmp_path):
    from sa_deploy.backends import backend_for, open_runner
    from sa_deploy.backends.executorch.export import export_executorch

    resnet = create_model("sa_resnet_cifar", pretrained=True)
    built = export_executorch(resnet, tmp_path / "sa_resnet_cifar_fold_fp32.pte")
    assert built.program["fully_delegated"] and built.gate_form == "explicit-norm"
    for name, path in (("sa_mobilenetv2_cifar", programs["fp32"]), ("sa_resnet_cifar", built.path)):
        model = create_model(name, pretrained=True)
        x, _ = _val(sample, model, 100)
        ref = torch_logits(model, x)
        with open_runner(path, threads=1) as runner:
            out = runner.infer(x)
            assert runner.int8_path() is None
        assert np.abs(out - ref).max() <= 1e-4, name
        assert (out.argmax(1) == ref.argmax(1)).mean() == 1.0, name
        info = backend_for(path).inspect(path)
        assert info.xnnpack_partitions == 1 and info.fully_delegated and not info.portable_ops
        assert info.batch == 1 and info.metadata["precision"] == "fp32"
        assert info.metadata["sa_gate_form"] == "explicit-norm" and info.metadata["model"] == name


def test_int8_program_keeps_top1_on_the_embedded_sample(et, programs, sample):
    from sa_deploy.backends import backend_for, open_runner

    model = create_model("sa_mobilenetv2_cifar", pretrained=True)
    x, labels = _val(sample, model)  # all 1,000 embedded validation images
    ref = torch_logits(model, x)
    with open_runner(programs["int8"], threads=1) as runner:
        out = runner.infer(x)
    agreement = (out.argmax(1) == ref.argmax(1)).mean()
    drop = 100 * ((ref.argmax(1) == labels).mean() - (out.argmax(1) == labels).mean())
    assert agreement >= 0.97 and drop <= 1.0, (agreement, drop)
    info = backend_for(programs["int8"]).inspect(programs["int8"])
    assert info.fully_delegated and info.metadata["precision"] == "int8"
    assert info.quantized_ops.get("Conv2d", 0) > 0 and info.quantized_ops.get("DepthwiseConv2d", 0) > 0
    assert info.metadata["calibration_count"] == "32" and info.build["quantization"]["calibration_count"] == 32


def test_instance_norm_gate_splits_the_xnnpack_graph(et):
    """The reason for the form: F.instance_norm leaves the delegate; the explicit form does not."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from sa_deploy.backends.executorch.export import lower_to_xnnpack
    from sa_deploy.backends.executorch.inspect import program_summary

    gate = gate_from_sa(random_sa(16, 2, 0))
    example = torch.randn(1, 8, 8, 8)
    summaries = {}
    for form, g in (("instance-norm", gate), ("explicit-norm", SAGateExplicitNorm.from_gate(gate))):
        module = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), g, nn.Conv2d(16, 8, 1)).eval()
        summaries[form] = program_summary(deserialize_pte_binary(lower_to_xnnpack(module, example)).program)
    assert not summaries["instance-norm"]["fully_delegated"]
    assert summaries["instance-norm"]["portable_ops"]  # the normalization runs on portable kernels
    assert summaries["explicit-norm"]["fully_delegated"] and summaries["explicit-norm"]["partitions"] == 1


def test_sidecar_round_trip_and_ownership(et, programs, tmp_path):
    from sa_deploy import api
    from sa_deploy.backends import backend_for, output_backend
    from sa_deploy.backends.executorch.sidecar import read_sidecar, sidecar_path, write_program
    from sa_deploy.models.deploy_metadata import DeployMetadata

    pte = tmp_path / "m.pte"
    shutil.copyfile(programs["fp32"], pte)
    shutil.copyfile(sidecar_path(programs["fp32"]), sidecar_path(pte))
    manager = backend_for(pte)
    assert manager.name == "executorch" and output_backend(sidecar_path(pte)) is manager
    meta = manager.metadata(pte)
    assert DeployMetadata.from_strings(meta).to_strings() == meta  # the stored strings round-trip
    typed = DeployMetadata.from_strings(meta)
    assert typed.format == "executorch" and typed.lowering == "fold" and typed.preprocess.input_size == 32
    sidecar = read_sidecar(pte)
    assert json.loads(sidecar_path(pte).read_text()) == sidecar.to_dict()
    assert list(sidecar.to_dict())[0] == "sa_deploy_version" and sidecar.program["fully_delegated"]
    assert manager.size_of(pte) == pte.stat().st_size + sidecar_path(pte).stat().st_size
    manager.check(pte, input_size=32, num_classes=10)
    # sa-deploy's own files may be replaced
    assert manager.owned_output(pte) and manager.owned_output(sidecar_path(pte))
    api.check_output(pte)
    api.check_output(sidecar_path(pte))
    write_program(pte, programs["fp32"].read_bytes(), sidecar)
    # a user's program put in its place is theirs: not replaced, and no longer described by the sidecar
    user = programs["int8"].read_bytes()
    pte.write_bytes(user)
    assert not manager.owned_output(pte)
    with pytest.raises(OutputPathError):
        api.check_output(pte)
    with pytest.raises(OutputPathError):
        write_program(pte, programs["fp32"].read_bytes(), sidecar)
    assert pte.read_bytes() == user
    with pytest.raises(SADeployError, match="pte_sha256 differs"):
        manager.check(pte)
    # a user's .pte without a sidecar, and a user's file where the sidecar goes, are never overwritten
    alone = tmp_path / "alone.pte"
    shutil.copyfile(programs["fp32"], alone)
    assert manager.metadata(alone) == {} and not manager.owned_output(alone)
    with pytest.raises(OutputPathError):
        write_program(alone, b"x", sidecar)
    theirs = tmp_path / "theirs.pte"
    sidecar_path(theirs).write_text('{"my": "notes"}')
    with pytest.raises(OutputPathError):
        write_program(theirs, programs["fp32"].read_bytes(), sidecar)
    assert not theirs.exists() and sidecar_path(theirs).read_text() == '{"my": "notes"}'
    with pytest.raises(SADeployError, match="not an ExecuTorch sidecar"):
        manager.metadata(theirs)


def test_run_refuses_a_users_pte_before_building(et, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    user = out / "sa_mobilenetv2_cifar_fold_int8.pte"
    user.write_bytes(b"mine")
    assert main([*RUN_ARGS, "--out", f"{out}/"]) == 2
    assert "was not written by sa-deploy" in capsys.readouterr().err
    assert user.read_bytes() == b"mine" and not (out / "sa_mobilenetv2_cifar_fold.onnx").exists()


def test_plan_key_and_flag_turn_the_rows_off():
    from sa_deploy.plan import load_plan

    names = [s.name for s in load_plan(None, {}).artifacts()]
    assert "executorch-fp32" in names and "executorch-int8" in names
    off = load_plan(None, {"executorch": False})
    assert not [s for s in off.artifacts() if s.backend == "executorch"]
    from sa_deploy.cli import build_parser

    args = build_parser().parse_args(["run", "--no-executorch"])
    assert args.executorch is False


def test_validate_and_inspect_through_the_cli(et, programs, tmp_path, capsys):
    out = tmp_path / "v.json"
    assert main(["validate", "--model", "sa_mobilenetv2_cifar", "--pretrained", "--data", "embedded", "--num", "50",
                 "--no-progress", "--artifacts", str(programs["fp32"]), "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["precision"] == "fp32" and result["drop"] == 0.0 and result["details"]["runner"] == "executorch"
    capsys.readouterr()
    assert main(["inspect", str(programs["int8"])]) == 0
    text = capsys.readouterr().out
    assert "ExecuTorch program" in text and "the whole graph is one partition" in text
    assert "quantized ops:" in text and "xnnpack:Conv2d" in text and "sa_gate_form=explicit-norm" in text
    assert main(["inspect", str(programs["fp32"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["xnnpack_partitions"] == 1 and info["fully_delegated"] and info["metadata"]["precision"] == "fp32"
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program at all")
    assert main(["inspect", str(bad)]) == 2
    assert "is not an ExecuTorch program" in capsys.readouterr().err


def test_missing_extra_is_a_skip_with_the_install_hint(monkeypatch):
    from sa_deploy.backends import get_backend

    monkeypatch.setitem(sys.modules, "executorch", None)  # what an environment without the extra sees
    assert get_backend("executorch").is_available() == "executorch not installed: pip install 'sa-deploy[executorch]'"
