"""Issue 14 beyond the corpus: nothing the user owns is deleted or overwritten, sa-deploy's own files are, parity
fails a command, NaN never reads as equal, and data sources skip what they cannot open without hanging."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sa_deploy.cli import main
from sa_deploy.errors import OutputPathError
from sa_deploy.models import create_model
from sa_deploy.models.random_weights import randomize
from sa_deploy.util.atomic import atomic_path, png_software, starts_with, write_bytes_atomic
from sa_deploy.validate.parity import compare


@pytest.fixture(scope="module")
def exported(exported_cifar, tmp_path_factory):
    """An sa-deploy export of the embedded sa_resnet_cifar, and a tiny labeled .npz; a copy of the session's export
    in this module's own folder (a test here re-exports into it)."""
    tmp = tmp_path_factory.mktemp("rel")
    shutil.copy(exported_cifar["fold"], tmp / "sa_resnet_cifar_fold.onnx")
    rs = np.random.RandomState(0)
    np.savez(tmp / "val.npz", images=rs.randint(0, 255, (8, 32, 32, 3), dtype=np.uint8), labels=np.arange(8) % 10)
    return tmp / "sa_resnet_cifar_fold.onnx", tmp / "val.npz"


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def test_out_pointing_at_an_existing_folder_deletes_nothing(exported, tmp_path, capsys):
    """The data-loss bug: `fp16 --out FOLDER` and an export whose output name is a folder used to delete it."""
    onnx_path, _ = exported
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub" / "data.csv").write_text("1,2,3")
    before = _tree(folder)
    assert main(["fp16", str(onnx_path), "--out", str(folder)]) == 0  # the --out rule: a folder to write into
    (folder / "sa_resnet_cifar_fold_fp16.onnx").unlink()  # beside the user's files, which are untouched (below)
    out = tmp_path / "out"
    (out / "sa_resnet_cifar_fold.onnx").mkdir(parents=True)
    (out / "sa_resnet_cifar_fold.onnx" / "mine.txt").write_text("mine")
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--out", str(out)]) == 2
    assert "existing folder" in capsys.readouterr().err
    assert _tree(folder) == before and (out / "sa_resnet_cifar_fold.onnx" / "mine.txt").read_text() == "mine"
    # and the writer itself, whatever calls it
    with pytest.raises(OutputPathError, match="existing folder"):
        write_bytes_atomic(folder, b"x", owned=lambda p: False)
    assert _tree(folder) == before


def test_own_files_are_replaced_user_files_are_not(exported, tmp_path, capsys):
    onnx_path, _ = exported
    out = tmp_path / "m_fp16.onnx"
    assert main(["fp16", str(onnx_path), "--out", str(out)]) == 0
    first = out.stat().st_mtime_ns
    assert main(["fp16", str(onnx_path), "--out", str(out)]) == 0  # sa-deploy's own file: replaced
    assert out.stat().st_mtime_ns != first
    user = tmp_path / "user.onnx"
    user.write_bytes(b"the user's model")
    assert main(["fp16", str(onnx_path), "--out", str(user)]) == 2
    assert "not written by sa-deploy" in capsys.readouterr().err and user.read_bytes() == b"the user's model"
    # re-export into the same folder replaces the earlier export
    folder = onnx_path.parent
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--no-simplify", "--no-parity",
                 "--out", str(folder)]) == 0


def test_atomic_writer_rules(tmp_path):
    # an owned folder artifact (an .mlpackage) is replaced whole; a failed write leaves no folder it created
    pkg = tmp_path / "a.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "old").write_text("old")
    with atomic_path(pkg, owned=lambda p: True) as tmp:
        (tmp / "Data").mkdir(parents=True)
        (tmp / "Data" / "new").write_text("new")
    assert [p.name for p in (pkg / "Data").iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.mlpackage"]  # no temp or backup left
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x" / "y" / "f.bin") as tmp:
        raise RuntimeError("the stage failed")
    assert not (tmp_path / "x").exists()
    # under a file
    (tmp_path / "file").write_text("f")
    with pytest.raises(OutputPathError, match="is a file"):
        write_bytes_atomic(tmp_path / "file" / "f.bin", b"")
    # signatures
    md = tmp_path / "report.md"
    md.write_text("# sa-deploy report: x\n")
    write_bytes_atomic(md, b"# sa-deploy report: y\n", owned=starts_with(b"# sa-deploy "))
    md.write_text("# my notes\n")
    with pytest.raises(OutputPathError, match="not written by sa-deploy"):
        write_bytes_atomic(md, b"# sa-deploy report: z\n", owned=starts_with(b"# sa-deploy "))
    assert md.read_text() == "# my notes\n"


def test_report_files_carry_their_signature(tmp_path):
    from sa_deploy.report.plots import all_charts
    from sa_deploy.report.render import owned_report_file, write_json

    charts = all_charts({"artifacts": [{"name": "a", "status": "ok", "top1": 1.0, "images": 1, "drop": 0.0,
                                        "latency_ms": 1.0, "size_mb": 1.0}], "reference": {"top1": 1.0}})
    png = tmp_path / "chart_accuracy.png"
    png.write_bytes(charts["accuracy"])
    assert png_software(png).startswith("sa-deploy") and owned_report_file(png)
    write_json(tmp_path / "v.json", {"passed": True})
    assert owned_report_file(tmp_path / "v.json")
    (tmp_path / "other.json").write_text('{"passed": true}')
    assert not owned_report_file(tmp_path / "other.json")
    # a matplotlib chart written before charts were signed counts only beside an sa-deploy report
    legacy = tmp_path / "legacy" / "latency.png"
    legacy.parent.mkdir()
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.savefig(legacy)
    plt.close(fig)
    assert not owned_report_file(legacy)
    (legacy.parent / "RESULTS.md").write_text("# sa-deploy benchmark: onnxruntime CPU\n")
    assert owned_report_file(legacy)


def test_nan_logits_fail_parity_and_print_as_nan():
    ref = np.random.RandomState(0).randn(4, 10)
    bad = ref.copy()
    bad[1, 3] = np.nan
    for a, b in ((bad, ref), (ref, bad), (np.full_like(ref, np.inf), ref)):
        s = compare(a, b, "fp32")
        assert not s.passed and math.isnan(s.cosine) and math.isnan(s.max_abs) and s.reason() == "outputs are NaN/Inf"
        assert f"{s.cosine:.5f}" == "nan"
    zero = np.zeros_like(ref)
    assert compare(zero, zero).cosine == 1.0 and compare(zero, ref).cosine == 0.0
    assert compare(ref, ref).passed


def test_validate_fails_on_parity_alone(exported, tmp_path, capsys):
    """An artifact of other weights: within a huge accuracy budget, outside the fp32 parity tolerance -> exit 3."""
    _, npz = exported
    other = randomize(create_model("sa_resnet_cifar"), seed=5)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    assert main(["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "other.pth"),
                 "--no-simplify", "--no-parity", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", str(npz), "--artifacts",
               str(tmp_path / "sa_resnet_cifar_fold.onnx"), "--max-drop", "100", "--no-progress",
               "--json", str(tmp_path / "v.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and "outside the parity tolerance" in err and "\n" not in err, err
    import json

    row = json.loads((tmp_path / "v.json").read_text())["results"][0]
    assert row["within_budget"] and not row["passed"] and not row["parity"]["passed"]


def test_failing_export_parity_leaves_no_file(tmp_path, capsys):
    state = create_model("sa_resnet_cifar").state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    out = tmp_path / "new" / "out"
    rc = main(["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "nan.pth"),
               "--allow-nonfinite", "--no-simplify", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 3 and "was not written" in captured.err and "nan" in captured.out
    assert not (tmp_path / "new").exists()  # not even the folders created for it


def test_folder_with_fifo_and_broken_links_is_read_without_hanging(tmp_path):
    from sa_deploy.data.sources import ImageSource
    from sa_deploy.models.preprocessing import CIFAR10_32

    (tmp_path / "cat").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cat" / "ok.png")
    os.mkfifo(tmp_path / "cat" / "pipe.png")
    os.symlink(tmp_path / "cat" / "gone.png", tmp_path / "cat" / "dangling.png")
    os.symlink(tmp_path / "cat" / "loop.png", tmp_path / "cat" / "loop.png")
    (tmp_path / "cat" / os.fsdecode(b"\xff.png")).write_bytes(b"junk")
    src = ImageSource(tmp_path, CIFAR10_32)
    assert len(src.fingerprint()) == 16
    with pytest.warns(UserWarning, match="skipped 4 unreadable"):
        assert len(src) == 1


def test_run_stops_with_what_it_completed():
    from sa_deploy.pipeline import Artifact, planned_outputs, progress_note
    from sa_deploy.plan import RunPlan

    plan = RunPlan(out="o", lowerings=["fold"], coreml=False)
    names = {p.name for p in planned_outputs(plan)}
    assert {"sa_resnet_cifar_fold.onnx", "sa_resnet_cifar_fold_fp16.onnx", "report.md"} <= names
    note = progress_note(plan, [Artifact("onnx-fold-fp32", "onnx", "fp32", None),
                                Artifact("onnx-fp16", "onnx", "fp16", None, status="failed")])
    assert ("not made: onnx-fp16, onnx-int8-tensorrt, onnx-int8-cpu, openvino-fp32, openvino-fp16, "
            "onnx-int8-cpu-float-gate, openvino-int8, report") in note


def test_an_internal_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only user errors become one line: a real bug shows its traceback, says it is one, and exits 70."""
    from sa_deploy.cli import cmd_list_models

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cmd_list_models, "run", broken)
    assert main(["list-models"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and "bug in sa-deploy" in err


def test_report_json_writes_nan_as_null(tmp_path):
    """JSON has no NaN: a non-finite number (the parity of NaN logits) is written as null; strict readers load it."""
    from sa_deploy.report.render import write_json

    path = write_json(tmp_path / "r.json", {"cosine": float("nan"), "rows": [{"max_abs": np.float32("inf")}],
                                            "top1": np.float32(81.5), "n": 3})
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["cosine"] is None and data["rows"][0]["max_abs"] is None and data["top1"] == 81.5 and data["n"] == 3
