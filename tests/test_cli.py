from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_mlpackage

from sa_deploy.cli import main
from sa_deploy.models import create_model


def test_list_models(capsys):
    assert main(["list-models"]) == 0
    out = capsys.readouterr().out
    assert "sa_resnet50" in out and "sa_mobilenetv2_cifar" in out
    assert "gc_resnet_cifar" in out and "eca_resnet50" in out


def test_help_has_examples(capsys):
    try:
        main(["export", "--help"])
    except SystemExit as e:
        assert e.code == 0
    assert "examples:" in capsys.readouterr().out


def test_export_and_inspect(tmp_path, capsys):
    assert main(["export", "--model", "sa_resnet_cifar", "--lowering", "reshape-transpose",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parity vs PyTorch" in out and "pass" in out and "sa-deploy inspect" in out
    path = tmp_path / "sa_resnet_cifar_reshape-transpose.onnx"
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sa_layers"] == 9 and info["max_rank"] == 4 and info["inputs"][0]["shape"][0] == "batch"


def test_user_errors_are_one_line_nonzero(tmp_path, capsys):
    cases = [
        ["export", "--model", "resnet9000"],
        ["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "missing.pth")],
        ["inspect", str(tmp_path / "missing.onnx")],
        ["export", "--model", "sa_resnet50", "--pretrained"],
    ]
    torch.save(create_model("sa_mobilenetv2_cifar").state_dict(), tmp_path / "mbv2.pth")
    cases.append(["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "mbv2.pth"),
                  "--out", str(tmp_path)])
    for argv in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc != 0, argv
        assert err.startswith("sa-deploy ") and "error:" in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "sa_resnet_cifar_fold.onnx").exists()


# --- issue 26 ------------------------------------------------------------------------------------------------------

def _one_error(capsys, command: str) -> str:
    """The one-line user error of ``command`` (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sa-deploy {command}: error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def exported(exported_cifar) -> Path:
    """sa_resnet_cifar with its embedded weights, exported (fold): the session's shared file (every command here
    writes into its own tmp_path)."""
    return exported_cifar["fold"]


# (2) one --out rule for every command

@pytest.mark.parametrize("text, suffixes, expected", [
    ("q2/model.onnx", (".onnx",), ("q2/model.onnx", False)),
    ("q2/", (".onnx",), ("q2", True)),
    ("q2/new_folder", (".onnx",), ("q2/new_folder", True)),
    ("q2/model.onnx/", (".onnx",), ("q2/model.onnx", True)),
    ("q2/model.xml", (".xml",), ("q2/model.xml", False)),
    ("q2/model.mlpackage", (".mlpackage",), ("q2/model.mlpackage", False)),
    ("q2/r.engine", (".engine", ".plan"), ("q2/r.engine", False)),
    ("q2/run", (), ("q2/run", True)),
    ("q2/model.onnx", (".xml",), "'.onnx' is not a suffix"),
    ("q2/notes.txt", (".onnx",), "'.txt' is not a suffix"),
    ("q2/v1.2", (), "writes several files"),
    ("q2/report.json", (), "writes several files"),
    ("", (".onnx",), "empty"),
])
def test_out_rule(text, suffixes, expected, tmp_path, monkeypatch):
    from sa_deploy.cli.out_path import resolve_out
    from sa_deploy.errors import OutputPathError

    monkeypatch.chdir(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(OutputPathError, match=expected) as info:
            resolve_out(text, suffixes)
        assert "pass " in str(info.value)  # which form to use
    else:
        out = resolve_out(text, suffixes)
        assert (out.path, out.is_folder) == (Path(expected[0]), expected[1])


def test_out_rule_existing_paths(tmp_path):
    from sa_deploy.cli.out_path import resolve_out
    from sa_deploy.errors import OutputPathError

    (tmp_path / "v1.2").mkdir()
    (tmp_path / "notes").write_text("mine")
    assert resolve_out(tmp_path / "v1.2", ()).is_folder  # an existing folder, whatever its name
    for text, suffixes in ((tmp_path / "notes", ()), (f"{tmp_path / 'notes'}/", (".onnx",)),
                           (tmp_path / "notes" / "m.onnx", (".onnx",))):
        with pytest.raises(OutputPathError, match="file"):
            resolve_out(text, suffixes)


def test_export_out_file_is_a_file(tmp_path, capsys):
    """`export --out q2/model.onnx` used to create a folder named model.onnx."""
    out = tmp_path / "q2" / "model.onnx"
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--no-parity", "--no-simplify",
                 "--out", str(out)]) == 0
    assert out.is_file() and f"exported {out}" in capsys.readouterr().out


def test_export_of_several_lowerings_writes_into_a_folder(tmp_path, capsys):
    base = ["export", "--model", "sa_resnet_cifar", "--pretrained", "--no-parity", "--no-simplify",
            "--lowering", "fold", "reshape-transpose"]
    assert main(base + ["--out", str(tmp_path / "x" / "model.onnx")]) == 2
    assert "2 artifacts" in _one_error(capsys, "export") and not (tmp_path / "x").exists()
    assert main(base + ["--out", str(tmp_path / "both")]) == 0
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["sa_resnet_cifar_fold.onnx",
                                                                      "sa_resnet_cifar_reshape-transpose.onnx"]


def test_out_rule_is_the_same_for_every_command(exported, tmp_path, capsys):
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "mine.txt").write_text("the user's")
    # an existing folder, a path ending in /, a new name without a suffix: the default name inside
    assert main(["fp16", str(exported), "--out", str(folder)]) == 0
    assert main(["fp16", str(exported), "--out", f"{tmp_path / 'slash'}/"]) == 0
    assert main(["quantize", str(exported), "--calib", "embedded", "--num", "8", "--method", "minmax",
                 "--out", str(tmp_path / "q")]) == 0
    assert (folder / "sa_resnet_cifar_fold_fp16.onnx").is_file() and (folder / "mine.txt").read_text() == "the user's"
    assert (tmp_path / "slash" / "sa_resnet_cifar_fold_fp16.onnx").is_file()
    assert (tmp_path / "q" / "sa_resnet_cifar_fold_int8_tensorrt_minmax.onnx").is_file()
    capsys.readouterr()
    # anything else: one line saying which form to use, nothing written
    for argv in (["fp16", str(exported), "--out", str(tmp_path / "f.txt")],
                 ["quantize", str(exported), "--calib", "embedded", "--out", str(tmp_path / "q.xml")],
                 ["convert", str(exported), "--out", str(tmp_path / "m.onnx")],
                 ["build", str(exported), "--precision", "fp16", "--out", str(tmp_path / "r.onnx")],
                 ["export", "--model", "sa_resnet_cifar", "--out", str(tmp_path / "m.xml")],
                 ["run", "--out", str(tmp_path / "run.json")],
                 ["bench", str(exported), "--out", str(tmp_path / "RESULTS.md")]):
        assert main(argv) == 2, argv
        err = _one_error(capsys, argv[0])
        assert "pass " in err and "a folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "q", "slash"]


def test_convert_out_folder(exported, tmp_path, capsys):
    pytest.importorskip("openvino", reason="openvino extra not installed")
    assert main(["convert", str(exported), "--out", f"{tmp_path}/", "--no-parity"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"sa_resnet_cifar_fold_fp32.xml", "sa_resnet_cifar_fold_fp32.bin"}


# (3) inspect reads every format sa-deploy writes; bench says what it does with them

def test_inspect_and_bench_an_mlpackage(tmp_path, capsys):
    pkg = tiny_mlpackage(tmp_path / "m.mlpackage", {"sa_deploy.precision": "fp32"})
    if pkg is None:
        pytest.skip("coremltools not installed")
    capsys.readouterr()
    assert main(["inspect", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "CoreML ML program" in out and "linear" in out and "30,730 parameters" in out, out  # weight + bias
    assert "input input: float32 [1, 3, 32, 32]" in out and "model=sa_resnet_cifar" in out
    assert "center crop 32" in out  # the preprocessing in its metadata
    assert main(["inspect", str(pkg), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == [1, 3, 32, 32] and info["op_histogram"]["linear"] == 1
    assert info["metadata"]["model"] == "sa_resnet_cifar" and info["weight_precisions"]["FLOAT32"] >= 1
    assert main(["bench", str(pkg), "--out", str(tmp_path / "b")]) == 2  # exists: not "artifact not found"
    err = _one_error(capsys, "bench")
    assert "not found" not in err and "CoreML package" in err and "ONNX" in err
    assert not (tmp_path / "b").exists()


def _engine(path: Path, data: bytes = b"engine bytes") -> Path:
    from sa_deploy.backends.trt.sidecar import Profile, make_sidecar, write_engine
    from sa_deploy.util.hashing import bytes_sha256

    side = make_sidecar(deploy_config={"model": "sa_resnet_cifar", "precision": "int8"}, trt_version="10.3.0",
                        gpu={"name": "NVIDIA H100", "compute_capability": "9.0"}, precision="int8",
                        typing="strongly-typed", profile=Profile("input", (3, 32, 32), 1, 8, 32),
                        onnx_sha256="ab" * 32, onnx_path="out/m.onnx", engine_sha256=bytes_sha256(data),
                        build_seconds=1.5)
    write_engine(path, data, side)
    return path


def test_inspect_a_tensorrt_engine(tmp_path, capsys):
    engine = _engine(tmp_path / "m.engine")
    assert main(["inspect", str(engine)]) == 0
    out = capsys.readouterr().out
    assert "TensorRT engine" in out and "TensorRT 10.3.0" in out and "NVIDIA H100" in out
    assert "matches it" in out and "1..32" in out and "model=sa_resnet_cifar" in out
    assert main(["inspect", str(tmp_path / "m.engine.json"), "--json"]) == 0  # the sidecar names its engine
    info = json.loads(capsys.readouterr().out)
    assert info["matches_sidecar"] and info["inputs"][0]["max"] == [32, 3, 32, 32]
    engine.write_bytes(b"replaced")
    assert main(["inspect", str(engine)]) == 0
    assert "does NOT match" in capsys.readouterr().out
    (tmp_path / "m.engine.json").unlink()
    assert main(["inspect", str(engine)]) == 2
    assert "m.engine.json not found" in _one_error(capsys, "inspect")


# (6) the help names files as the tool writes them; the hints after a command work

def _help_texts() -> dict[str, str]:
    from sa_deploy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {"sa-deploy": parser.format_help(), **{name: p.format_help() for name, p in sub.choices.items()}}


def _follows_naming(name: str) -> bool:
    """Whether ``name`` is one sa-deploy writes (api.artifact_name / derived_path), or a user's own file that the
    examples then derive from: ``<model>_<lowering>.onnx``, ``<model>_<lowering>_<precision>.mlpackage``, then
    ``_fp16`` / ``_int8_<flavour>_<method>`` [``_fallback``] .onnx, ``_fp32`` / ``_fp16`` .xml (an INT8 file
    keeps its stem), ``.engine`` with the ONNX stem."""
    from sa_deploy.cli.coreml_export import PRECISIONS
    from sa_deploy.models.registry import list_models

    models, lowerings = list_models(), ("fold", "reshape-transpose", "none")
    chain = r"(?P<chain>(_fp16|_int8_(tensorrt|cpu)_(minmax|entropy|percentile))?(_fallback)?)"

    def onnx_stem(stem: str) -> re.Match | None:
        m = re.fullmatch(r"(?P<root>.+?)" + chain, stem)
        root = m.group("root")
        if any(root.startswith(f"{model}_") or root == model for model in models):
            return m if root in {f"{model}_{lo}" for model in models for lo in lowerings} else None
        # a user's own file: no precision or derivation words of its own (they would be ours, misspelled)
        return None if {"int8", "fp16", "fp32", "fallback"} & set(root.split("_")) else m

    stem, _, suffix = name.rpartition(".")
    if suffix == "onnx":
        return onnx_stem(stem) is not None
    if suffix in ("engine", "plan"):
        return onnx_stem(stem) is not None
    if suffix == "xml":
        m = onnx_stem(stem)
        if m is not None and "_int8_" in m.group("chain"):
            return True  # an INT8 file converts to <stem>.xml
        base, _, kind = stem.rpartition("_")
        m = onnx_stem(base)
        return kind in ("fp32", "fp16") and m is not None and "_int8_" not in m.group("chain")
    if suffix == "mlpackage":
        return stem in {f"{model}_{lo}_{p}" for model in models for lo in lowerings for p in PRECISIONS}
    return False


def test_help_examples_name_files_as_the_tool_writes_them():
    bad, seen = [], set()
    for command, text in _help_texts().items():
        for token in re.findall(r"[\w./*<>-]+\.(?:onnx|xml|mlpackage|engine|plan)\b", text):
            name = token.split("/")[-1]
            stem = name.rpartition(".")[0]
            if "*" in name or "<" in name or stem.isupper():  # globs, patterns and placeholders (FILE.onnx)
                continue
            seen.add(name)
            if not _follows_naming(name):
                bad.append(f"{command}: {token}")
    assert len(seen) >= 15 and "sa_resnet_cifar_fold_int8_tensorrt_entropy.onnx" in seen
    assert not bad, bad


def test_naming_check_catches_names_the_tool_never_writes():
    for name in ("sa_resnet_cifar_fold_int8.onnx", "sa_resnet50_fold_int8.onnx", "sa_resnet_cifar_fold_int8.engine",
                 "sa_resnet_cifar_fp16.onnx", "sa_resnet_cifar_fold_fp16.xml.onnx", "int8.onnx",
                 "sa_resnet_cifar_fold_int8_cpu_entropy_fp32.xml", "sa_resnet_cifar_fold.mlpackage"):
        assert not _follows_naming(name), name
    from sa_deploy.api import artifact_name, derived_path

    written = [artifact_name("sa_resnet_cifar", "fold", suffix=".onnx"),
               artifact_name("sa_resnet50", "reshape-transpose", "w8a8", suffix=".mlpackage"),
               derived_path("out/sa_resnet_cifar_fold.onnx", "int8", "cpu", "percentile").name,
               derived_path("out/sa_resnet_cifar_fold_int8_cpu_minmax.onnx", "fallback").name,
               derived_path("out/sa_resnet_cifar_fold_fp16.onnx", "fp32", suffix=".xml").name,
               derived_path("out/sa_resnet_cifar_fold_int8_cpu_entropy.onnx", "", suffix=".xml").name,
               "my_model.onnx", derived_path("my_model.onnx", "fp16").name]
    assert all(_follows_naming(n) for n in written), written


def test_quantize_hint_names_the_weights_the_file_holds(exported, tmp_path, capsys):
    """An export of the embedded weights: `--pretrained`, not `--checkpoint CKPT`."""
    assert main(["quantize", str(exported), "--calib", "embedded", "--num", "8", "--method", "minmax",
                 "--out", str(tmp_path / "q.onnx")]) == 0
    out = capsys.readouterr().out
    assert "--model sa_resnet_cifar --pretrained" in out and "CKPT" not in out, out
    import torch

    from sa_deploy.models import create_model
    from sa_deploy.models.random_weights import randomize

    torch.save(randomize(create_model("sa_resnet_cifar"), seed=3).state_dict(), tmp_path / "mine.pth")
    assert main(["export", "--model", "sa_resnet_cifar", "--checkpoint", str(tmp_path / "mine.pth"), "--no-parity",
                 "--no-simplify", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["quantize", str(tmp_path / "sa_resnet_cifar_fold.onnx"), "--calib", "embedded", "--num", "8",
                 "--method", "minmax"]) == 0
    assert "--model sa_resnet_cifar --checkpoint CKPT" in capsys.readouterr().out


def test_build_install_hint_works_from_a_checkout(exported, tmp_path, capsys, monkeypatch):
    """`pip install 'sa-deploy[tensorrt]'` does not work: sa-deploy is installed from a checkout."""
    assert "sa-deploy[tensorrt]" not in _help_texts()["build"]
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, installed or not
    assert main(["build", str(exported), "--precision", "fp16", "--no-lint", "--out", str(tmp_path / "r.engine")]) \
        == 2
    err = _one_error(capsys, "build")
    assert "pip install 'tensorrt>=10'" in err and "pip install -e '.[tensorrt]'" in err
    assert "sa-deploy[tensorrt]" not in err and not (tmp_path / "r.engine").exists()


# (9) bench writes where --out says and never replaces a file it did not write

def test_bench_writes_into_out_bench_not_the_projects_benchmarks(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "benchmarks" / "RESULTS.md"  # what a checkout has: sa-deploy's table + hand-written notes
    project.parent.mkdir()
    project.write_text("# sa-deploy benchmark: onnxruntime (CPU)\n\n## Findings (written by hand)\n")
    fast = ["--rounds", "1", "--iters", "1", "--batch", "1", "--runtimes", "onnxruntime"]
    assert main(["bench", str(exported), *fast]) == 0
    printed = capsys.readouterr().out
    assert "out/bench/RESULTS.md" in printed
    from sa_deploy.util.int8_kernels import cpu_int8_path

    assert f"int8 kernels: {cpu_int8_path().instructions} -> {cpu_int8_path().accumulation}" in printed
    assert sorted(p.name for p in (tmp_path / "out" / "bench").iterdir()) == ["RESULTS.md", "latency.png",
                                                                           "results.json"]
    assert project.read_text().endswith("written by hand)\n") and len(list(project.parent.iterdir())) == 1
    # pointed at it, bench refuses to replace what it did not write (the title alone does not make it its own)
    before = project.read_bytes()
    assert main(["bench", str(exported), *fast, "--out", "benchmarks"]) == 2
    assert "RESULTS.md" in _one_error(capsys, "bench") and project.read_bytes() == before
    assert len(list(project.parent.iterdir())) == 1


def test_bench_replaces_only_its_unchanged_files(exported, tmp_path, capsys):
    fast = ["--rounds", "1", "--iters", "1", "--batch", "1", "--runtimes", "onnxruntime", "--out", str(tmp_path)]
    assert main(["bench", str(exported), *fast]) == 0
    assert main(["bench", str(exported), *fast]) == 0  # its own files, unchanged: replaced
    md = tmp_path / "RESULTS.md"
    md.write_text(md.read_text() + "\nMy notes on these numbers.\n")
    edited = md.read_bytes()
    capsys.readouterr()
    assert main(["bench", str(exported), *fast]) == 2
    assert "changed since sa-deploy wrote it" in _one_error(capsys, "bench") and md.read_bytes() == edited


# (10) NaN/Inf weights in an input ONNX: one line naming the tensor

def _with_nan_in_first_conv(src: Path, dest: Path) -> str:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    name = next(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            w = numpy_helper.to_array(t).copy()
            w.flat[0] = np.nan
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, name))
    onnx.save(model, str(dest))
    return name


def test_quantize_and_fp16_refuse_nan_weights(exported, tmp_path, capsys):
    tensor = _with_nan_in_first_conv(exported, tmp_path / "nan.onnx")
    for argv in (["quantize", str(tmp_path / "nan.onnx"), "--calib", "embedded", "--num", "8", "--method", "minmax"],
                 ["fp16", str(tmp_path / "nan.onnx")]):
        assert main(argv) == 2, argv
        err = _one_error(capsys, argv[0])
        assert f"tensor {tensor}" in err and "NaN/Inf" in err and "internal error" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.onnx"]
