"""`sa-deploy run` on a tiny configuration, with no data configured (as on a clean clone): report structure, the
embedded image sample named in the console and every report, and every listed artifact loads in its runtime."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from helpers import randomize

from sa_deploy.backends import open_runner
from sa_deploy.cli import main
from sa_deploy.models import create_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """No --data, no $SA_DEPLOY_DATA: the run uses the embedded sample."""
    import sa_deploy.data.resolve as resolve

    tmp = tmp_path_factory.mktemp("run")
    ck = tmp / "ck.pth"
    torch.save({"epoch": 1, "state_dict": randomize(create_model("sa_resnet_cifar")).state_dict(), "best_acc": 0.0},
               ck)
    # random weights: near-tied logits, so bf16 may flip a few of the 40 images; its budget is not what is tested
    # coreml_val_num < val-num: CoreML is scored on a sampled subset against PyTorch on the same subset
    (tmp / "plan.yaml").write_text("lowerings: [fold]\nlatency_iters: 3\ncoreml_precisions: [fp16]\n"
                                   "bf16_max_drop: 100\ncoreml_val_num: 20\n")
    console = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(console):
        mp.delenv(resolve.DATA_ENV, raising=False)
        mp.chdir(tmp)
        rc = main(["run", "--checkpoint", str(ck), "--out", str(tmp / "out"), "--val-num", "40",
                   "--calib-num", "16", "--config", str(tmp / "plan.yaml"), "--max-drop", "100"])
    return rc, tmp / "out", console.getvalue()


def test_report_files_and_structure(tiny_run):
    rc, out, _ = tiny_run
    for name in ("report.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["val_images"] == 40 and report["data"]["calib_images"] == 16
    assert report["reference"]["top1"] is not None
    names = [a["name"] for a in report["artifacts"]]
    assert {"onnx-fold-fp32", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu"} <= set(names)
    if importlib.util.find_spec("openvino"):  # OpenVINO rows wherever it is installed (the dev extra has it)
        from sa_deploy.backends.openvino.device import cpu_has_bf16

        assert {"openvino-fp32", "openvino-fp16", "openvino-int8"} <= set(names)
        assert ("openvino-bf16" in names) == cpu_has_bf16()
        # per-target gate precision: OpenVINO's INT8 IR comes from a Q/DQ file with the SA gate float, and says so
        from sa_deploy.backends.openvino.inspect import read_ir_metadata

        ov_int8 = next(a for a in report["artifacts"] if a["name"] == "openvino-int8")
        assert "SA gate float" in ov_int8["variant"] and read_ir_metadata(ov_int8["path"])["sa_gate"] == "float"
    stage_status = {s["name"]: s["status"] for s in report["stages"]}
    assert any(n.startswith("TensorRT engines") and st == "skipped" for n, st in stage_status.items())
    for a in report["artifacts"]:
        if a["status"] in ("ok", "over budget"):
            for key in ("top1", "top5", "drop", "cosine", "latency_ms", "size_mb"):
                assert isinstance(a[key], float), (a["name"], key)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert rc == 0 and report["passed"]
    # INT8 on every CPU: the kernel path is recorded, each INT8 file is judged by its target's numerics with its twin
    from sa_deploy.util.int8_kernels import cpu_int8_path

    assert report["machine"]["int8_kernels"] == cpu_int8_path().line()
    arts = {a["name"]: a for a in report["artifacts"]}
    trt, cpu = arts["onnx-int8-tensorrt"]["int8"], arts["onnx-int8-cpu"]["int8"]
    assert trt["judged_by"] == "emulation" and trt["path"]["accumulation"] == "float-emulation"
    assert cpu["judged_by"] == "kernels" and cpu["path"] == cpu_int8_path().to_dict()
    assert cpu["weight_bits"] == 7 and "7-bit weights" in arts["onnx-int8-cpu"]["variant"]
    for numerics in (trt, cpu):
        assert isinstance(numerics["kernel_drop"], float) and isinstance(numerics["emulated_drop"], float)
    md = (out / "report.md").read_text()
    assert f"int8 kernels here: {cpu_int8_path().line()}" in md.replace("\\", "")
    assert "## INT8: kernels vs emulation" in md


def test_coreml_is_scored_on_its_subset(tiny_run):
    rc, out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    coreml = [a for a in report["artifacts"] if a["format"] == "coreml" and a["status"] == "ok"]
    if not coreml:
        pytest.skip("coremltools is not installed")
    assert all(a["images"] == 20 for a in coreml)
    assert "20 images" in (out / "report.md").read_text()


def test_subset_budget_is_at_least_one_image():
    from sa_deploy.validate.accuracy import subset_budget

    assert subset_budget(0.1, 500) == pytest.approx(0.2)  # one image of 500 is 0.2 points
    assert subset_budget(0.1, 1000) == pytest.approx(0.1)  # measurable: unchanged
    assert subset_budget(1.0, 500) == 1.0
    assert subset_budget(0.0, 500) == 0.0  # "no drop at all" stays exact


def test_sampled_budget_note_in_the_report():
    from sa_deploy.report.render import summary_rows

    report = {"reference": {"top1": 90.0, "images": 1000},
              "artifacts": [{"format": "coreml", "lowering": "fold", "precision": "fp16", "status": "ok",
                             "top1": 89.8, "drop": 0.2, "cosine": 1.0, "images": 500, "runner": "coreml-reference",
                             "budget_note": "budget 0.1 is finer than 1 of 500 images: gate 0.20"}]}
    status = summary_rows(report)[-1][-1]
    assert status == "ok (500 images, coreml-reference; budget 0.1 is finer than 1 of 500 images: gate 0.20)"


def test_no_data_configured_uses_the_embedded_sample(tiny_run):
    _, out, console = tiny_run
    said = "embedded sample: 40 validation / 16 calibration images"
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["embedded"] is True and report["data"]["source"] == said
    assert "$SA_DEPLOY_DATA unset" in report["data"]["origin"]
    assert said in (out / "report.md").read_text() and said in (out / "report.html").read_text()
    assert f"data: {said}" in console


def test_reports_name_files_without_absolute_paths_and_render_markdown(tiny_run):
    _, out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    ck = report["model"]["checkpoint"]
    for text in (md, page):
        assert ck not in text and str(out.parent) not in text and "shared/data" not in text
        assert report["model"]["checkpoint_sha256"] in text
    assert "- checkpoint: `ck.pth`, sha256" in md
    assert "<code>ck.pth</code>" in page and "**" not in page and "<strong" in page


def test_every_artifact_loads_in_its_runtime(tiny_run):
    _, out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    x = np.zeros((2, 3, 32, 32), np.float32)
    for a in report["artifacts"]:
        assert a["status"] in ("ok", "over budget"), (a["name"], a["reason"])
        with open_runner(a["path"]) as runner:
            assert runner.infer(x).shape == (2, 10), a["name"]


def test_missing_data_is_one_line_error(tmp_path, capsys):
    rc = main(["run", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "labeled images not found" in err and "\n" not in err


def test_family_model_run_exports_each_distinct_graph_once(tmp_path):
    """A model with no SA layer (ECA-ResNet): fold and reshape-transpose would write the same graph, so the run exports
    it once; OpenVINO's INT8 IR comes from the cpu Q/DQ file itself (no SA gate to keep float)."""
    ck = tmp_path / "eca.pth"
    torch.save({"state_dict": randomize(create_model("eca_resnet_cifar")).state_dict()}, ck)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        rc = main(["run", "--model", "eca_resnet_cifar", "--checkpoint", str(ck), "--data", "embedded",
                   "--out", str(tmp_path / "out"), "--val-num", "40", "--calib-num", "16", "--max-drop", "100",
                   "--no-coreml", "--int8-weight-bits", "8"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    names = [a["name"] for a in report["artifacts"]]
    assert "onnx-fold-fp32" in names and "onnx-reshape-transpose-fp32" not in names
    assert report["plan"]["lowerings"] == ["fold"]
    assert report["plan"]["int8_weight_bits"] == 8  # --int8-weight-bits: every INT8 file of the run has 8-bit weights
    assert all("8-bit weights" in a["variant"] for a in report["artifacts"] if a["precision"] == "int8")
    assert "has no SA layer: reshape-transpose would export the same graph as fold" in console.getvalue()
    if importlib.util.find_spec("openvino"):
        ov_int8 = next(a for a in report["artifacts"] if a["name"] == "openvino-int8")
        cpu_qdq = next(a for a in report["artifacts"] if a["name"] == "onnx-int8-cpu")
        assert ov_int8["variant"] == "int8 cpu, 8-bit weights" and ov_int8["status"] == "ok"
        assert not list((tmp_path / "out").glob("*floatgate*"))  # no second Q/DQ file for a gate that is not there
        assert cpu_qdq["quantize"]["has_sa_gate"] is False
    assert rc == 0, [(a["name"], a["status"], a["reason"]) for a in report["artifacts"] if a["status"] != "ok"]
