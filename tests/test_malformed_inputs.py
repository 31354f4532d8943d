"""Issue 14's corpus: malformed or unusual inputs, each run through the CLI in-process, one by one.

Every input must end in: a non-zero exit (never the internal-error status 70), no traceback, exactly one
``sa-deploy ...: error:`` line (the last line on stderr), and the workspace unchanged: the case's output folder
(pre-filled with a user file and a user folder) and everything else (inputs, shared fixtures, the working
directory) exactly as before, nothing written, nothing deleted.

Inputs are generated here (one tiny export, one checkpoint, one tiny ML program per module; the rest are byte
mutations and crafted files); no downloaded data is used. The categories and how many inputs each has are printed
by ``test_corpus_size`` (and checked: at least 150 in all)."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import stat
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from helpers import tiny_mlpackage
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from sa_deploy.cli import main
from sa_deploy.models import create_model
from sa_deploy.models.preprocessing import CIFAR10_32

MODEL = ["--model", "sa_resnet_cifar"]


# --- the shared inputs ---------------------------------------------------------------------------------------------

class Workspace:
    """The corpus folder: shared fixtures under ``shared/``, one folder per case under ``cases/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shared = root / "shared"
        shared.mkdir()
        model = create_model("sa_resnet_cifar")
        self.state = model.state_dict()
        self.ck = shared / "good.pth"
        torch.save(self.state, self.ck)
        from sa_deploy.exporters.onnx import export_onnx

        self.onnx = shared / "good.onnx"
        export_onnx(model, self.onnx, "fold", simplify=False)
        rs = np.random.RandomState(0)
        self.images = rs.randint(0, 255, (4, 32, 32, 3), dtype=np.uint8)
        self.npz = shared / "val.npz"
        np.savez(self.npz, images=self.images, labels=np.arange(4))
        self.data = shared / "data"  # train/ and val/ class folders for `run`
        for split in ("train", "val"):
            (self.data / split / "a").mkdir(parents=True)
            for i in range(2):
                Image.fromarray(self.images[i]).save(self.data / split / "a" / f"{i}.png")
        self.mlpackage = tiny_mlpackage(shared / "tiny.mlpackage")
        self.ir = _ir(self.onnx, shared / "good.xml")
        (root / "cwd").mkdir()

    def case(self, cid: str) -> Path:
        """A fresh folder for one case, with an output folder holding what a user owns."""
        d = self.root / "cases" / cid
        (d / "out" / "user_dir").mkdir(parents=True)
        (d / "out" / "keep.txt").write_text("the user's file")
        (d / "out" / "user_dir" / "notes.txt").write_text("the user's folder")
        return d


def _ir(onnx_path: Path, xml: Path) -> Path | None:
    """The workspace's ONNX as an OpenVINO IR (sa-deploy's converter), or None without openvino."""
    try:
        from sa_deploy.backends.openvino.export import convert_onnx
        return convert_onnx(onnx_path, xml).path
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - MissingDependencyError is an SADeployError
        if "not installed" in str(exc):
            return None
        raise


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("corpus"))


# --- cases -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    category: str
    id: str
    build: Callable[[Workspace, Path], list[str]]  # (workspace, case folder) -> argv
    needs: str = ""  # "coreml": skipped without coremltools


CASES: list[Case] = []


def case(category: str, cid: str, needs: str = ""):
    def register(build):
        CASES.append(Case(category, cid, build, needs))
        return build
    return register


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# checkpoints: `export --checkpoint X` (loading fails before anything is exported) ----------------------------------

def _export(ck: Path, d: Path, *extra: str) -> list[str]:
    return ["export", *MODEL, "--checkpoint", str(ck), "--out", str(d / "out"), "--no-parity", *extra]


def _ck_case(cid: str, make: Callable[[Workspace, Path], object]) -> None:
    """A checkpoint built by ``make``: bytes/str written as is, a dict/list/tensor torch.save'd."""
    def build(w: Workspace, d: Path) -> list[str]:
        obj = make(w, d)
        path = d / "ck.pth"
        if isinstance(obj, Path):
            path = obj
        elif isinstance(obj, (bytes, str)):
            _write(path, obj)
        else:
            torch.save(obj, path)
        return _export(path, d)
    case("checkpoint", cid)(build)


def _with(w: Workspace, key_suffix: str, fn) -> dict:
    state = {k: v.clone() for k, v in w.state.items()}
    key = next(k for k in state if k.endswith(key_suffix))
    state[key] = fn(state[key])
    return state


def _nan(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = float("nan")
    return t


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/sa_deploy_corpus_pwned",))


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned > /tmp/sa_deploy_corpus_pwned')",))


_ck_case("empty", lambda w, d: b"")
_ck_case("text", lambda w, d: "epoch: 90\nbest_acc: 77.8\n")
_ck_case("json", lambda w, d: json.dumps({"state_dict": {}}))
_ck_case("png", lambda w, d: b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
_ck_case("random-bytes", lambda w, d: np.random.RandomState(1).bytes(4096))
for _frac in (0.01, 0.1, 0.5, 0.9, 0.999):
    _ck_case(f"truncated-{_frac}", lambda w, d, f=_frac: w.ck.read_bytes()[:int(len(w.ck.read_bytes()) * f)])
_ck_case("zip-middle-zeroed", lambda w, d: (lambda b: b[:len(b) // 3] + b"\0" * 4096 + b[len(b) // 3 + 4096:])(
    w.ck.read_bytes()))
_ck_case("folder", lambda w, d: (d / "ck_dir.pth").mkdir() or d / "ck_dir.pth")
_ck_case("missing", lambda w, d: d / "nowhere.pth")
_ck_case("fifo", lambda w, d: os.mkfifo(d / "fifo.pth") or d / "fifo.pth")
_ck_case("broken-symlink", lambda w, d: os.symlink(d / "nowhere.pth", d / "link.pth") or d / "link.pth")
_ck_case("symlink-loop", lambda w, d: os.symlink(d / "loop.pth", d / "loop.pth") or d / "loop.pth")
_ck_case("a-list", lambda w, d: [torch.zeros(3)])
_ck_case("a-tensor", lambda w, d: torch.zeros(3))
_ck_case("no-tensors", lambda w, d: {"epoch": 3, "best_acc": 1.0})
_ck_case("state-dict-is-list", lambda w, d: {"state_dict": [torch.zeros(3)]})
_ck_case("int-keys", lambda w, d: {i: v for i, v in enumerate(w.state.values())})
_ck_case("tuple-keys", lambda w, d: {(k, 0): v for k, v in w.state.items()})
_ck_case("nan-weight", lambda w, d: _with(w, "conv1.weight", _nan))
_ck_case("inf-bias", lambda w, d: _with(w, "fc.bias", lambda t: t.fill_(float("inf"))))
_ck_case("neg-inf-running-var", lambda w, d: _with(w, "bn1.running_var", lambda t: t.fill_(float("-inf"))))
_ck_case("nan-float64", lambda w, d: _with(w, "fc.weight", lambda t: _nan(t.double())))
_ck_case("complex-weight", lambda w, d: _with(w, "conv1.weight", lambda t: t.to(torch.complex64)))
_ck_case("bool-weight", lambda w, d: _with(w, "conv1.weight", lambda t: t.bool()))
_ck_case("int-weight", lambda w, d: _with(w, "conv1.weight", lambda t: t.int()))
_ck_case("float-counter", lambda w, d: _with(w, "bn1.num_batches_tracked", lambda t: t.float()))
_ck_case("sparse-weight", lambda w, d: _with(w, "fc.weight", lambda t: t.to_sparse()))
_ck_case("quantized-weight", lambda w, d: _with(w, "fc.weight", lambda t: torch.quantize_per_tensor(
    t, 0.1, 0, torch.qint8)))
_ck_case("shape-mismatch-classes", lambda w, d: create_model("sa_resnet_cifar", num_classes=100).state_dict())
_ck_case("shape-mismatch-one", lambda w, d: _with(w, "conv1.weight", lambda t: t[:, :2].clone()))
_ck_case("missing-keys", lambda w, d: dict(list(w.state.items())[: len(w.state) // 2]))
_ck_case("unexpected-keys", lambda w, d: {**w.state, "extra.weight": torch.zeros(2)})
_ck_case("other-architecture", lambda w, d: create_model("sa_mobilenetv2_cifar").state_dict())
_ck_case("pickled-os-system", lambda w, d: {"state_dict": {}, "payload": _Evil()})
_ck_case("pickled-eval", lambda w, d: pickle.dumps({"state_dict": _EvalPayload()}))
_ck_case("legacy-pickle-object", lambda w, d: pickle.dumps({"state_dict": {"w": _Evil()}}, protocol=2))
_ck_case("safetensors", lambda w, d: struct.pack("<Q", 20) + b'{"w":{"dtype":"F32"}}' + b"\0" * 16)
_ck_case("onnx-file", lambda w, d: w.onnx)
_ck_case("npz-file", lambda w, d: w.npz)
_ck_case("nested-model-dict", lambda w, d: {"model": {"state_dict": w.state}})
case("checkpoint", "nan-allowed-fails-parity")(  # --allow-nonfinite loads it; NaN logits fail parity (exit 3)
    lambda w, d: ["export", *MODEL, "--checkpoint", str(torch.save(_with(w, "conv1.weight", _nan), d / "n.pth")
                                                        or d / "n.pth"), "--allow-nonfinite", "--out",
                  str(d / "out")])
case("checkpoint", "validate-with-nan-checkpoint")(
    lambda w, d: ["validate", *MODEL, "--checkpoint", str(torch.save(_with(w, "fc.bias", _nan), d / "n.pth")
                                                          or d / "n.pth"), "--data", str(w.npz), "--artifacts",
                  str(w.onnx), "--no-progress"])


# ONNX files ---------------------------------------------------------------------------------------------------------

def _graph_model(nodes, inputs, outputs, inits=(), opset=17, meta=None) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])


def _tiny(inp=X, meta=None, w_shape=(10, 3, 32, 32), opset=17) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.zeros(w_shape, np.float32), "w")
    return _graph_model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                         helper.make_node("Flatten", ["c"], ["y"], name="flat")], [inp], [Y], [w], opset, meta)


def _external(location: str, length: int = 4 * 10 * 3 * 32 * 32) -> onnx.ModelProto:
    m = _tiny()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return m


def _meta(w: Workspace, **changes: str | None) -> onnx.ModelProto:
    """The good export with its sa_deploy.* metadata changed (None: removed)."""
    m = onnx.load(str(w.onnx))
    props = {p.key: p.value for p in m.metadata_props}
    for k, v in changes.items():
        if v is None:
            props.pop(f"sa_deploy.{k}", None)
        else:
            props[f"sa_deploy.{k}"] = v
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    return m


def _onnx_case(cid: str, make, commands=("inspect", "lint")) -> None:
    """One ONNX input (bytes, a ModelProto, or a path ``make`` created), run through each of ``commands``."""
    for command in commands:
        def build(w: Workspace, d: Path, make=make, command=command) -> list[str]:
            obj = make(w, d)
            path = d / "model.onnx"
            if isinstance(obj, Path):
                path = obj
            elif isinstance(obj, onnx.ModelProto):
                _write(path, obj.SerializeToString())
            else:
                _write(path, obj)
            return {
                "inspect": ["inspect", str(path)],
                "lint": ["lint", "--target", "tensorrt", str(path)],
                "fp16": ["fp16", str(path), "--out", str(d / "out" / "m_fp16.onnx")],
                "quantize": ["quantize", str(path), "--calib", str(w.npz), "--method", "minmax",
                             "--out", str(d / "out" / "m_int8.onnx")],
                "bench": ["bench", str(path), "--rounds", "1", "--iters", "1", "--batch", "1",
                          "--out", str(d / "out")],
                "validate": ["validate", *MODEL, "--pretrained", "--data", str(w.npz), "--artifacts", str(path),
                             "--no-progress"],
                "validate-reference": ["validate", "--reference", str(path), "--data", str(w.npz), "--artifacts",
                                       str(w.onnx), "--no-progress"],
            }[command]
        case("onnx", f"{cid}[{command}]")(build)


_onnx_case("empty", lambda w, d: b"", ("inspect", "lint", "fp16", "bench"))
_onnx_case("text", lambda w, d: "ir_version: 8\n", ("inspect", "lint", "quantize"))
_onnx_case("random-bytes", lambda w, d: np.random.RandomState(2).bytes(2048))
for _frac in (0.01, 0.1, 0.5, 0.9, 0.999):
    _onnx_case(f"truncated-{_frac}", lambda w, d, f=_frac: w.onnx.read_bytes()[:int(w.onnx.stat().st_size * f)])
_onnx_case("header-garbage", lambda w, d: b"\xff" * 16 + w.onnx.read_bytes()[16:])
_onnx_case("cycle", lambda w, d: _graph_model(
    [helper.make_node("Relu", ["b"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["b"], name="r2"),
     helper.make_node("Add", ["x", "b"], ["y"], name="add")], [X], [helper.make_tensor_value_info(
         "y", TensorProto.FLOAT, ["N", 3, 32, 32])]), ("inspect", "lint", "bench"))
_onnx_case("no-inputs", lambda w, d: _graph_model(
    [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.zeros((1, 10), np.float32)))],
    [], [Y]))
_onnx_case("no-outputs", lambda w, d: _graph_model([helper.make_node("Relu", ["x"], ["r"])], [X], []))
def _no_data() -> onnx.TensorProto:
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([10, 3, 32, 32])
    return t


def _without_opset(m: onnx.ModelProto) -> onnx.ModelProto:
    del m.opset_import[:]
    return m


_onnx_case("initializer-without-data", lambda w, d: _graph_model(
    [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["y"])], [X], [Y],
    [_no_data()]))
_onnx_case("opset-99", lambda w, d: _tiny(opset=99), ("inspect", "lint", "bench"))
_onnx_case("no-opset", lambda w, d: _without_opset(_tiny()))
_onnx_case("unknown-op", lambda w, d: _graph_model([helper.make_node("NoSuchOp", ["x"], ["y"])], [X], [Y]))
_onnx_case("undefined-tensor", lambda w, d: _graph_model([helper.make_node("Add", ["x", "ghost"], ["y"])], [X],
                                                         [Y]))
_onnx_case("duplicate-output-name", lambda w, d: _graph_model(
    [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["x"], ["r"]),
     helper.make_node("Flatten", ["r"], ["y"])], [X], [Y]))
_onnx_case("no-ir-version", lambda w, d: (lambda m: m.ClearField("ir_version") or m)(_tiny()))
_onnx_case("tensor-proto-not-model", lambda w, d: numpy_helper.from_array(np.zeros(64, np.float32)).
           SerializeToString())
_onnx_case("external-absolute", lambda w, d: _external("/etc/passwd"), ("inspect", "lint", "bench"))
_onnx_case("external-dotdot", lambda w, d: _external("../../outside.bin"))
_onnx_case("external-missing", lambda w, d: _external("weights.bin"))
_onnx_case("external-truncated", lambda w, d: _write(d / "weights.bin", b"\0" * 100) and _external("weights.bin"))
_onnx_case("external-fifo", lambda w, d: os.mkfifo(d / "weights.bin") or _external("weights.bin"))
_onnx_case("a-folder", lambda w, d: (d / "dir.onnx").mkdir() or d / "dir.onnx", ("inspect", "fp16"))
_onnx_case("a-fifo", lambda w, d: os.mkfifo(d / "fifo.onnx") or d / "fifo.onnx", ("inspect", "lint", "bench"))
_onnx_case("broken-symlink", lambda w, d: os.symlink(d / "none.onnx", d / "l.onnx") or d / "l.onnx")
_onnx_case("missing", lambda w, d: d / "none.onnx", ("inspect", "quantize"))
_onnx_case("checkpoint-file", lambda w, d: w.ck, ("inspect", "fp16"))
_onnx_case("npz-file", lambda w, d: w.npz)
# the file is valid ONNX, but not an image model sa-deploy can feed
_onnx_case("dynamic-size-no-metadata", lambda w, d: _tiny(helper.make_tensor_value_info(
    "x", TensorProto.FLOAT, ["N", 3, "H", "W"])), ("bench", "quantize"))
_onnx_case("two-inputs", lambda w, d: _graph_model([helper.make_node("Add", ["x", "x2"], ["s"]),
                                                    helper.make_node("Flatten", ["s"], ["y"])],
                                                   [X, helper.make_tensor_value_info("x2", TensorProto.FLOAT,
                                                                                     ["N", 3, 32, 32])], [Y]),
           ("bench", "validate", "quantize", "validate-reference"))
_onnx_case("int64-input", lambda w, d: _graph_model(
    [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["f"], ["y"])],
    [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 3, 32, 32])], [Y]),
           ("bench", "validate", "quantize", "fp16"))
_onnx_case("rank-3-input", lambda w, d: _graph_model([helper.make_node("Flatten", ["x"], ["y"])], [
    helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32])], [Y]), ("bench", "quantize"))
_onnx_case("rank-2-input", lambda w, d: _graph_model([helper.make_node("Identity", ["x"], ["y"])], [
    helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])], [Y]), ("quantize", "fp16", "bench"))
_onnx_case("non-square-input", lambda w, d: _tiny(helper.make_tensor_value_info(
    "x", TensorProto.FLOAT, ["N", 3, 32, 16]), w_shape=(10, 3, 32, 16)), ("bench",))
_onnx_case("one-channel-input", lambda w, d: _tiny(helper.make_tensor_value_info(
    "x", TensorProto.FLOAT, ["N", 1, 32, 32]), w_shape=(10, 1, 32, 32)), ("bench", "validate", "quantize"))
_onnx_case("sequence-input", lambda w, d: _graph_model(
    [helper.make_node("SequenceAt", ["x", "i"], ["t"]), helper.make_node("Flatten", ["t"], ["y"])],
    [helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, None)], [Y],
    [numpy_helper.from_array(np.array(0, np.int64), "i")]), ("bench",))
_onnx_case("other-input-size", lambda w, d: _tiny(helper.make_tensor_value_info(
    "x", TensorProto.FLOAT, ["N", 3, 64, 64]), w_shape=(10, 3, 64, 64)), ("validate",))
_onnx_case("100-classes", lambda w, d: _graph_model(
    [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["y"])], [X],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 100])],
    [numpy_helper.from_array(np.zeros((100, 3, 32, 32), np.float32), "w")]), ("validate",))
# sa-deploy's metadata damaged
_onnx_case("preprocess-not-json", lambda w, d: _meta(w, preprocess="{input_size: 32"), ("fp16", "quantize"))
_onnx_case("preprocess-no-resize", lambda w, d: _meta(w, preprocess=json.dumps(
    {k: v for k, v in CIFAR10_32.to_dict().items() if k != "resize"})), ("fp16", "quantize"))
for _key, _val in (("input_size", 0), ("input_size", -32), ("input_size", 100000), ("input_size", "32"),
                   ("mean", [0.5]), ("std", [0.0, 1.0, 1.0]), ("interpolation", "lanczos9")):
    _onnx_case(f"preprocess-{_key}={_val}", lambda w, d, k=_key, v=_val: _meta(w, preprocess=json.dumps(
        {**CIFAR10_32.to_dict(), k: v})), ("quantize",))
_onnx_case("preprocess-a-list", lambda w, d: _meta(w, preprocess="[1, 2, 3]"), ("fp16",))
_onnx_case("no-sa-deploy-metadata", lambda w, d: _meta(w, preprocess=None), ("quantize",))
_onnx_case("int8-reference", lambda w, d: _meta(w, precision="int8"), ("validate-reference",))
_onnx_case("already-fp16", lambda w, d: _meta(w, precision="fp16"), ("fp16", "quantize"))
_onnx_case("metadata-size-differs", lambda w, d: _meta(w, preprocess=json.dumps(
    {**CIFAR10_32.to_dict(), "input_size": 64, "resize": 64})), ("quantize",))
def _nonfinite(w: Workspace, value: float, op: str = "Conv", which: int = 1) -> onnx.ModelProto:
    """The good export with one value of the first ``op`` node's input ``which`` (an initializer) set to ``value``."""
    m = onnx.load(str(w.onnx))
    name = next(n.input[which] for n in m.graph.node if n.op_type == op)
    for i, t in enumerate(m.graph.initializer):
        if t.name == name:
            a = numpy_helper.to_array(t).copy()
            a.flat[0] = value
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, name))
    return m


_onnx_case("nan-first-conv-weight", lambda w, d: _nonfinite(w, np.nan), ("quantize", "fp16"))
_onnx_case("inf-first-conv-weight", lambda w, d: _nonfinite(w, np.inf), ("quantize", "fp16"))
_onnx_case("nan-classifier-weight", lambda w, d: _nonfinite(w, -np.nan, "Gemm"), ("quantize",))
_onnx_case("dynamic-size-damaged-metadata", lambda w, d: _tiny(helper.make_tensor_value_info(
    "x", TensorProto.FLOAT, ["N", 3, "H", "W"]), meta={"sa_deploy.preprocess": "{"}), ("bench",))


# image folders and .npz: `quantize --calib X` / `validate --data X` ------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (PIL reads the size from the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _png_bytes(w: Workspace) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(w.images[0]).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(w: Workspace) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(w.images[0]).save(buf, "JPEG")
    return buf.getvalue()


def _data_case(cid: str, make, commands=("quantize", "validate")) -> None:
    """A data input (a folder or an .npz that ``make`` fills and returns) through each of ``commands``."""
    for command in commands:
        def build(w: Workspace, d: Path, make=make, command=command) -> list[str]:
            data = make(w, d)
            if command == "quantize":
                return ["quantize", str(w.onnx), "--calib", str(data), "--method", "minmax",
                        "--out", str(d / "out" / "q.onnx")]
            return ["validate", *MODEL, "--pretrained", "--data", str(data), "--artifacts", str(w.onnx),
                    "--no-progress", "--json", str(d / "out" / "v.json")]
        case("data", f"{cid}[{command}]")(build)


def _folder(d: Path, files: dict, klass: str = "cat") -> Path:
    """A labeled image folder ``d/data/<klass>/`` with ``files`` (bytes, or a function that makes the path)."""
    root = d / "data"
    (root / klass).mkdir(parents=True)
    for name, content in files.items():
        p = root / klass / (os.fsdecode(name) if isinstance(name, bytes) else name)
        if callable(content):
            content(p)
        else:
            p.write_bytes(content)
    return root


_data_case("only-fifo", lambda w, d: _folder(d, {"x.png": lambda p: os.mkfifo(p)}))
_data_case("only-broken-symlink", lambda w, d: _folder(d, {"x.png": lambda p: os.symlink(p.parent / "no.png", p)}))
_data_case("only-symlink-loop", lambda w, d: _folder(d, {"x.png": lambda p: os.symlink(p, p)}))
_data_case("non-utf8-name", lambda w, d: _folder(d, {b"\xff\xfe.png": b"not an image"}))
_data_case("decompression-bomb", lambda w, d: _folder(d, {"bomb.png": _png_header(60000, 60000)}))
_data_case("bomb-after-resize", lambda w, d: _folder(d, {"wide.png": _png_header(1, 3_000_000)}))
_data_case("truncated-png", lambda w, d: _folder(d, {"t.png": _png_bytes(w)[:60]}))
_data_case("truncated-jpeg", lambda w, d: _folder(d, {"t.jpg": _jpeg_bytes(w)[:200]}))
_data_case("empty-jpeg", lambda w, d: _folder(d, {"e.jpg": b""}))
_data_case("text-as-png", lambda w, d: _folder(d, {"t.png": b"hello, not a picture"}))
_data_case("gif-garbage", lambda w, d: _folder(d, {"g.gif": b"GIF89a" + b"\xff" * 40}))
_data_case("folder-named-png", lambda w, d: _folder(d, {"sub.png": lambda p: p.mkdir()}))
_data_case("everything-bad", lambda w, d: _folder(d, {
    "f.png": lambda p: os.mkfifo(p), "l.png": lambda p: os.symlink(p.parent / "no.png", p),
    "b.png": _png_header(60000, 60000), "e.jpg": b"", b"\xff.png": b"x"}))
_data_case("empty-folder", lambda w, d: (d / "data").mkdir() or d / "data")
_data_case("no-images", lambda w, d: _write(d / "data" / "notes.txt", "hi").parent)
_data_case("empty-classes", lambda w, d: [(d / "data" / c).mkdir(parents=True) for c in "ab"] and d / "data")
_data_case("missing-folder", lambda w, d: d / "nowhere")
_data_case("a-file", lambda w, d: _write(d / "image.png", _png_bytes(w)))
_data_case("flat-unlabeled", lambda w, d: _write(d / "data" / "x.png", _png_bytes(w)).parent, ("validate",))
_data_case("too-many-classes", lambda w, d: [_write(d / "data" / f"c{i:02d}" / "x.png", _png_bytes(w))
                                              for i in range(12)] and d / "data", ("validate",))


def _npz(d: Path, **arrays) -> Path:
    path = d / "d.npz"
    np.savez(path, **arrays)
    return path


def _bomb_npz(d: Path) -> Path:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                                "shape": (10**7, 32, 32, 3)})
    with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", buf.getvalue() + b"\0" * 4096)
    return d / "bomb.npz"


def _damaged_member(w: Workspace, d: Path) -> Path:
    with zipfile.ZipFile(d / "c.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", (lambda b: b[:len(b) // 2])(_npy(w.images)))
    return d / "c.npz"


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


_data_case("npz-empty-file", lambda w, d: _write(d / "e.npz", b""))
_data_case("npz-text", lambda w, d: _write(d / "t.npz", "images=1"))
_data_case("npz-truncated", lambda w, d: _write(d / "t.npz", w.npz.read_bytes()[:300]))
_data_case("npz-no-arrays", lambda w, d: _npz(d))
_data_case("npz-only-labels", lambda w, d: _npz(d, labels=np.arange(4)))
_data_case("npz-labels-longer", lambda w, d: _npz(d, images=w.images, labels=np.arange(6)))
_data_case("npz-labels-shorter", lambda w, d: _npz(d, images=w.images, labels=np.arange(2)))
_data_case("npz-labels-2d", lambda w, d: _npz(d, images=w.images, labels=np.zeros((4, 2), np.int64)))
_data_case("npz-labels-negative", lambda w, d: _npz(d, images=w.images, labels=-np.arange(1, 5)))
_data_case("npz-labels-fractional", lambda w, d: _npz(d, images=w.images, labels=np.array([0.5, 1, 2, 3])))
_data_case("npz-labels-over-classes", lambda w, d: _npz(d, images=w.images, labels=np.arange(4) + 10))
_data_case("npz-labels-strings", lambda w, d: _npz(d, images=w.images, labels=np.array(list("abcd"))))
_data_case("npz-images-float", lambda w, d: _npz(d, images=w.images.astype(np.float32) / 255))
_data_case("npz-images-2-channels", lambda w, d: _npz(d, images=w.images[..., :2]))
_data_case("npz-images-3d", lambda w, d: _npz(d, images=w.images[0]))
_data_case("npz-images-none", lambda w, d: _npz(d, images=w.images[:0]))
_data_case("npz-images-zero-height", lambda w, d: _npz(d, images=np.zeros((2, 0, 32, 3), np.uint8)))
_data_case("npz-images-int16-out-of-range", lambda w, d: _npz(d, images=w.images.astype(np.int16) * 4))
_data_case("npz-images-objects", lambda w, d: _npz(d, images=np.array([1, "a"], dtype=object)))
_data_case("npz-inputs-nan", lambda w, d: _npz(d, inputs=np.full((2, 3, 32, 32), np.nan, np.float32)))
_data_case("npz-inputs-complex", lambda w, d: _npz(d, inputs=np.zeros((2, 3, 32, 32), np.complex64)))
_data_case("npz-inputs-wrong-size", lambda w, d: _npz(d, inputs=np.zeros((2, 3, 16, 16), np.float32)))
_data_case("npz-decompression-bomb", lambda w, d: _bomb_npz(d))
_data_case("npz-damaged-member", _damaged_member)
_data_case("npy-named-npz", lambda w, d: _write(d / "a.npz", _npy(w.images)))
_data_case("npz-a-folder", lambda w, d: (d / "f.npz").mkdir() or d / "f.npz")
_data_case("npz-fifo", lambda w, d: os.mkfifo(d / "f.npz") or d / "f.npz")


# flags and configs ------------------------------------------------------------------------------------------------

def _flags(cid: str, argv: Callable[[Workspace, Path], list[str]]) -> None:
    case("flags", cid)(argv)


def _o(d: Path) -> str:
    return str(d / "out")


for _v in ("0", "7", "100000", "abc", "-32"):
    _flags(f"export --input-size {_v}", lambda w, d, v=_v: ["export", *MODEL, "--input-size", v, "--out", _o(d)])
for _v in ("0", "-1", "abc", "1e9"):
    _flags(f"export --num-classes {_v}", lambda w, d, v=_v: ["export", *MODEL, "--num-classes", v, "--out", _o(d)])
_flags("export --lowering bogus", lambda w, d: ["export", *MODEL, "--lowering", "bogus", "--out", _o(d)])
_flags("export --format tflite", lambda w, d: ["export", *MODEL, "--format", "tflite", "--out", _o(d)])
_flags("export --precision fp8", lambda w, d: ["export", *MODEL, "--format", "coreml", "--precision", "fp8"])
_flags("export --target iOS99", lambda w, d: ["export", *MODEL, "--format", "coreml", "--target", "iOS99"])
_flags("export --calib-num 0", lambda w, d: ["export", *MODEL, "--format", "coreml", "--calib-num", "0"])
_flags("export unknown model", lambda w, d: ["export", "--model", "resnet9000", "--out", _o(d)])
_flags("export no --model", lambda w, d: ["export", "--out", _o(d)])
_flags("export --pretrained without weights", lambda w, d: ["export", "--model", "sa_resnet50", "--pretrained",
                                                            "--out", _o(d)])
_flags("export --pretrained and --checkpoint", lambda w, d: ["export", *MODEL, "--pretrained", "--checkpoint",
                                                             str(w.ck), "--out", _o(d)])
_flags("export --out is a file", lambda w, d: ["export", *MODEL, "--out", str(d / "out" / "keep.txt")])
_flags("export --out under a file", lambda w, d: ["export", *MODEL, "--out", str(d / "out" / "keep.txt" / "x")])
_flags("export output name is an existing folder", lambda w, d: (
    _write(d / "out" / "sa_resnet_cifar_fold.onnx" / "inside.txt", "user data") and
    ["export", *MODEL, "--pretrained", "--out", _o(d)]))
_flags("export output name is a user file", lambda w, d: (
    _write(d / "out" / "sa_resnet_cifar_fold.onnx", "the user's own file") and
    ["export", *MODEL, "--pretrained", "--out", _o(d)]))
_flags("export w8a8 without --calib", lambda w, d: ["export", *MODEL, "--format", "coreml", "--precision", "w8a8",
                                                    "--out", _o(d)])
for _v in ("0", "-1", "5000", "abc"):
    _flags(f"validate --batch-size {_v}", lambda w, d, v=_v: ["validate", *MODEL, "--data", str(w.npz),
                                                             "--artifacts", str(w.onnx), "--batch-size", v])
for _v in ("-2", "0", "99999"):
    _flags(f"validate --threads {_v}", lambda w, d, v=_v: ["validate", *MODEL, "--data", str(w.npz),
                                                          "--artifacts", str(w.onnx), "--threads", v])
for _v in ("nan", "inf", "abc"):
    _flags(f"validate --max-drop {_v}", lambda w, d, v=_v: ["validate", *MODEL, "--data", str(w.npz),
                                                           "--artifacts", str(w.onnx), "--max-drop", v])
_flags("validate --num 0", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts", str(w.onnx),
                                         "--num", "0"])
_flags("validate --json is a folder", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts",
                                                    str(w.onnx), "--json", str(d / "out" / "user_dir")])
_flags("validate --json under a file", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts",
                                                     str(w.onnx), "--json", str(d / "out" / "keep.txt" / "v.json")])
_flags("validate --json is a user file", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts",
                                                       str(w.onnx), "--json", str(d / "out" / "keep.txt")])
_flags("validate --auto-fallback without --calib", lambda w, d: ["validate", *MODEL, "--data", str(w.npz),
                                                                 "--artifacts", str(w.onnx), "--auto-fallback"])
_flags("validate missing artifact", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts",
                                                  str(d / "none.onnx")])
_flags("validate artifact of unknown kind", lambda w, d: ["validate", *MODEL, "--data", str(w.npz), "--artifacts",
                                                          str(d / "out" / "keep.txt")])
_flags("quantize --num 0", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--num", "0"])
_flags("quantize --method bogus", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--method", "x"])
_flags("quantize --flavour bogus", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--flavour", "x"])
_flags("quantize without --calib", lambda w, d: ["quantize", str(w.onnx), "--out", str(d / "out" / "q.onnx")])
_flags("quantize --out has another suffix", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--out",
                                                           str(d / "out" / "q.txt")])
_flags("quantize --out folder: the default name is a user folder", lambda w, d: (
    _write(d / "out" / "good_int8_tensorrt_minmax.onnx" / "x.txt", "mine") and
    ["quantize", str(w.onnx), "--calib", str(w.npz), "--method", "minmax", "--out", _o(d)]))
_flags("quantize --out under a file", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--out",
                                                    str(d / "out" / "keep.txt" / "q.onnx")])
_flags("quantize --out is a user file", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--out",
                                                      str(d / "out" / "keep.txt")])
_flags("quantize --exclude-nodes unknown", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz), "--method",
                                                         "minmax", "--exclude-nodes", "no/such/node", "--out",
                                                         str(d / "out" / "q.onnx")])
_flags("quantize --cache-dir is a file", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz),
                                                       "--cache-dir", str(d / "out" / "keep.txt")])
_flags("fp16 --out folder: the default name is a user file", lambda w, d: (
    _write(d / "out" / "good_fp16.onnx", "the user's own file") and ["fp16", str(w.onnx), "--out", _o(d)]))
_flags("fp16 --out folder ending in / is a file", lambda w, d: ["fp16", str(w.onnx), "--out",
                                                               str(d / "out" / "keep.txt") + "/"])
_flags("fp16 --out an existing file with no suffix", lambda w, d: (
    _write(d / "out" / "plain", "mine") and ["fp16", str(w.onnx), "--out", str(d / "out" / "plain")]))
_flags("export --out has another suffix", lambda w, d: ["export", *MODEL, "--out", str(d / "out" / "m.pt")])
_flags("export --out .onnx for coreml", lambda w, d: ["export", *MODEL, "--format", "coreml", "--out",
                                                      str(d / "out" / "m.onnx")])
_flags("export two lowerings into one file", lambda w, d: ["export", *MODEL, "--lowering", "fold", "none",
                                                           "--out", str(d / "out" / "m.onnx")])
_flags("export two formats into one file", lambda w, d: ["export", *MODEL, "--format", "onnx", "coreml",
                                                         "--out", str(d / "out" / "m.mlpackage")])
_flags("export two lowerings: the second name is a user file", lambda w, d: (
    _write(d / "out" / "sa_resnet_cifar_none.onnx", "mine") and
    ["export", *MODEL, "--lowering", "fold", "none", "--no-parity", "--out", _o(d)]))
_flags("run --out names a file", lambda w, d: ["run", "--data", str(w.data), "--out", str(d / "out" / "r.json")])
_flags("convert --out names an ONNX file", lambda w, d: ["convert", str(w.onnx), "--out", str(d / "out" / "m.onnx")])
_flags("build --out names an ONNX file", lambda w, d: ["build", str(w.onnx), "--precision", "fp16", "--out",
                                                       str(d / "out" / "m.onnx")])
_flags("bench --out names RESULTS.md", lambda w, d: ["bench", str(w.onnx), "--out", str(d / "out" / "RESULTS.md")])
_flags("bench RESULTS.md edited since sa-deploy wrote it", lambda w, d: (
    _write(d / "out" / "RESULTS.md", "# sa-deploy benchmark: onnxruntime (CPU)\n\nmy findings\n") and
    _write(d / "out" / "results.json", '{"sa_deploy_version": "0.1.0", "rows": []}') and
    ["bench", str(w.onnx), "--rounds", "1", "--iters", "1", "--batch", "1", "--out", _o(d)]))
case("flags", "bench an .mlpackage", needs="coreml")(lambda w, d: ["bench", str(w.mlpackage), "--out", _o(d)])
case("flags", "bench an OpenVINO IR", needs="openvino")(lambda w, d: ["bench", str(w.ir), "--out", _o(d)])
case("flags", "inspect an IR with preprocessing flags", needs="openvino")(lambda w, d: [
    "inspect", str(w.ir), "--mean", "0", "0", "0", "--std", "1", "1", "1"])
_flags("fp16 --out is a user file", lambda w, d: ["fp16", str(w.onnx), "--out", str(d / "out" / "keep.txt")])
_flags("fp16 --out is the input", lambda w, d: ["fp16", str(shutil.copy(w.onnx, d / "out" / "m.onnx")), "--out",
                                                str(d / "out" / "m.onnx")])
# preprocessing flags (quantize / validate / inspect on the sa-deploy export: each flag replaces a metadata field)
for _flag, _vals in (("--mean", ["0.5", "0.5"]), ("--mean", ["nan", "0", "0"]), ("--mean", ["a", "b", "c"]),
                     ("--std", ["0", "1", "1"]), ("--std", ["-1", "1", "1"]), ("--std", ["inf", "1", "1"]),
                     ("--input-size", ["4"]), ("--input-size", ["2048"]), ("--resize", ["0"]),
                     ("--interpolation", ["lanczos"])):
    _flags(f"quantize {_flag} {' '.join(_vals)}", lambda w, d, f=_flag, v=_vals: [
        "quantize", str(w.onnx), "--calib", str(w.npz), "--out", str(d / "out" / "q.onnx"), f, *v])
_flags("quantize --resize below --input-size", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz),
                                                             "--input-size", "64", "--resize", "32"])
_flags("quantize --resize below the metadata's input size", lambda w, d: ["quantize", str(w.onnx), "--calib",
                                                                          str(w.npz), "--resize", "16"])
_flags("quantize --input-size other than the graph's", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz),
                                                                     "--input-size", "64"])
for _cid, _text in (("empty", b""), ("blank lines only", b"\n\n"), ("duplicates", b"cat\ndog\ncat\n"),
                    ("blank line inside", b"cat\n\ndog\n"), ("not UTF-8", b"cat\n\xff\xfe\n"),
                    ("3 names for 10 classes", b"cat\ndog\nbird\n")):
    _flags(f"quantize --class-names {_cid}", lambda w, d, t=_text: [
        "quantize", str(w.onnx), "--calib", str(w.npz), "--class-names", str(_write(d / "names.txt", t))])
_flags("quantize --class-names missing", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz),
                                                       "--class-names", str(d / "none.txt")])
_flags("quantize --class-names is a folder", lambda w, d: ["quantize", str(w.onnx), "--calib", str(w.npz),
                                                           "--class-names", _o(d)])
_flags("fp16 --mean without --std on a foreign file", lambda w, d: [
    "fp16", str(_write(d / "f.onnx", _meta(w, preprocess=None, model=None).SerializeToString())), "--mean", "0", "0",
    "0", "--out", str(d / "out" / "f16.onnx")])
_flags("inspect --std 0", lambda w, d: ["inspect", str(w.onnx), "--std", "0", "1", "1"])
_flags("validate --model and --reference", lambda w, d: ["validate", *MODEL, "--reference", str(w.onnx), "--data",
                                                         str(w.npz), "--artifacts", str(w.onnx)])
_flags("validate neither --model nor --reference", lambda w, d: ["validate", "--data", str(w.npz), "--artifacts",
                                                                 str(w.onnx)])
_flags("validate --reference with --checkpoint", lambda w, d: ["validate", "--reference", str(w.onnx),
                                                               "--checkpoint", str(w.ck), "--data", str(w.npz),
                                                               "--artifacts", str(w.onnx)])
_flags("validate --reference not .onnx", lambda w, d: ["validate", "--reference", str(w.ck), "--data", str(w.npz),
                                                       "--artifacts", str(w.onnx)])
_flags("validate --reference missing", lambda w, d: ["validate", "--reference", str(d / "none.onnx"), "--data",
                                                     str(w.npz), "--artifacts", str(w.onnx)])
_flags("bench --input-size other than the graph's", lambda w, d: ["bench", str(w.onnx), "--input-size", "64",
                                                                  "--out", _o(d)])
_flags("bench --batch 0", lambda w, d: ["bench", str(w.onnx), "--batch", "0", "--out", _o(d)])
_flags("bench --rounds 0", lambda w, d: ["bench", str(w.onnx), "--rounds", "0", "--out", _o(d)])
_flags("bench --iters -1", lambda w, d: ["bench", str(w.onnx), "--iters", "-1", "--out", _o(d)])
_flags("bench --threads 0", lambda w, d: ["bench", str(w.onnx), "--threads", "0", "--out", _o(d)])
_flags("bench --out is a file", lambda w, d: ["bench", str(w.onnx), "--out", str(d / "out" / "keep.txt")])
_flags("bench RESULTS.md is the user's", lambda w, d: (_write(d / "out" / "RESULTS.md", "# my notes\n") and
                                                       ["bench", str(w.onnx), "--rounds", "1", "--iters", "1",
                                                        "--batch", "1", "--out", _o(d)]))
_flags("lint --max-batch 0", lambda w, d: ["lint", str(w.onnx), "--max-batch", "0"])
_flags("lint --target openvino", lambda w, d: ["lint", str(w.onnx), "--target", "openvino"])
_flags("build --opt-level 9", lambda w, d: ["build", str(w.onnx), "--precision", "fp16", "--opt-level", "9"])
_flags("build --min-batch 0", lambda w, d: ["build", str(w.onnx), "--precision", "fp16", "--min-batch", "0"])
_flags("build --workspace-mb 0", lambda w, d: ["build", str(w.onnx), "--precision", "fp16", "--workspace-mb", "0"])
_flags("build --precision fp64", lambda w, d: ["build", str(w.onnx), "--precision", "fp64"])
_flags("unknown command", lambda w, d: ["deploy-everything"])
_flags("unknown flag", lambda w, d: ["inspect", str(w.onnx), "--frobnicate"])
for _v in ("0", "-5", "abc"):
    _flags(f"run --calib-num {_v}", lambda w, d, v=_v: ["run", "--data", str(w.data), "--out", _o(d),
                                                        "--calib-num", v])
_flags("run --val-num 0", lambda w, d: ["run", "--data", str(w.data), "--out", _o(d), "--val-num", "0"])
_flags("run --max-drop nan", lambda w, d: ["run", "--data", str(w.data), "--out", _o(d), "--max-drop", "nan"])
_flags("run --out is a file", lambda w, d: ["run", "--data", str(w.data), "--out", str(d / "out" / "keep.txt")])
_flags("run report.md is the user's", lambda w, d: (_write(d / "out" / "report.md", "# my report\n") and
                                                    ["run", "--data", str(w.data), "--out", _o(d), "--no-coreml"]))
_flags("run artifact name is a user folder", lambda w, d: (
    _write(d / "out" / "sa_resnet_cifar_fold_fp16.onnx" / "x.txt", "mine") and
    ["run", "--data", str(w.data), "--out", _o(d), "--no-coreml"]))
_flags("run missing data", lambda w, d: ["run", "--data", str(d / "nowhere"), "--out", _o(d)])
_flags("run unlabeled val", lambda w, d: (_write(d / "data" / "train" / "a" / "x.png", _png_bytes(w)) and
                                          _write(d / "data" / "val" / "x.png", _png_bytes(w)) and
                                          ["run", "--data", str(d / "data"), "--out", _o(d), "--no-coreml"]))
_flags("run unreadable val", lambda w, d: (_write(d / "data" / "train" / "a" / "x.png", _png_bytes(w)) and
                                           _write(d / "data" / "val" / "a" / "x.png", b"broken") and
                                           ["run", "--data", str(d / "data"), "--out", _o(d), "--no-coreml"]))

# YAML configs for `run`: wrong types, bad values, code-running tags, damaged files
_YAML = {
    "calib_num: abc": "calib_num: abc", "lowerings: 5": "lowerings: 5", "fp16: yes-please": "fp16: yes-please",
    "threads: 1.5": "threads: 1.5", "seed: -1": "seed: -1", "latency_iters: 0": "latency_iters: 0",
    "latency_batch: 0": "latency_batch: 0", "val_num: 0": "val_num: 0", "calib_num: true": "calib_num: true",
    "int8_max_drop: .nan": "int8_max_drop: .nan", "int8_max_drop: x": "int8_max_drop: x",
    "int8_flavours: [bogus]": "int8_flavours: [bogus]", "int8_method: nope": "int8_method: nope",
    "coreml_precisions: [fp8]": "coreml_precisions: [fp8]", "lowerings: []": "lowerings: []",
    "lowerings twice": "lowerings: [fold, fold]", "lowerings: [[fold]]": "lowerings: [[fold]]",
    "unknown key": "frobnicate: 1", "int key": "1: 2", "top-level list": "- model: x",
    "top-level scalar": "just a string", "model: resnet9000": "model: resnet9000",
    "checkpoint missing": "checkpoint: /nonexistent/ck.pth", "out: 5": "out: 5",
    "python tag": "model: !!python/object/apply:os.system ['echo pwned > /tmp/sa_deploy_corpus_pwned']",
    "python name tag": "model: !!python/name:os.system", "binary tag": "model: !!binary aGVsbG8=",
    "anchor bomb": "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nlowerings: [*b, *b, *b]",
    "invalid yaml": "model: [unclosed", "tabs": "model:\tx\n\tlowerings: 1",
}
for _name, _text in _YAML.items():  # (--out on the command line would win over a bad `out:`)
    case("flags", f"run --config ({_name})")(lambda w, d, t=_text: [
        "run", "--config", str(_write(d / "plan.yaml", t)), "--data", str(w.data)] + (
            [] if t.startswith("out:") else ["--out", _o(d)]))
case("flags", "run --config not UTF-8")(lambda w, d: ["run", "--config", str(_write(d / "plan.yaml", b"\xff\xfe\x00m")),
                                                      "--data", str(w.data), "--out", _o(d)])
case("flags", "run --config is a folder")(lambda w, d: ["run", "--config", _o(d), "--data", str(w.data)])
case("flags", "run --config missing")(lambda w, d: ["run", "--config", str(d / "none.yaml"), "--out", _o(d)])
case("flags", "run --config out is a file")(lambda w, d: [
    "run", "--config", str(_write(d / "plan.yaml", f"out: {d / 'out' / 'keep.txt'}")), "--data", str(w.data)])


# .mlpackages: `validate --artifacts X.mlpackage` ------------------------------------------------------------------

_W = "Data/com.apple.CoreML/weights/weight.bin"
_S = "Data/com.apple.CoreML/model.mlmodel"


def _ml_case(cid: str, damage: Callable[[Path], object], commands=("validate", "inspect")) -> None:
    for command in commands:
        def build(w: Workspace, d: Path, command=command) -> list[str]:
            pkg = d / "m.mlpackage"
            shutil.copytree(w.mlpackage, pkg)
            damage(pkg)
            if command == "inspect":
                return ["inspect", str(pkg)]
            return ["validate", *MODEL, "--pretrained", "--data", str(w.npz), "--artifacts", str(pkg),
                    "--no-progress"]
        case("mlpackage", cid if command == "validate" else f"{cid}[{command}]", needs="coreml")(build)


def _rewrite(path: Path, fn: Callable[[bytes], bytes]) -> None:
    path.write_bytes(fn(path.read_bytes()))


def _manifest(pkg: Path, value: object) -> None:
    (pkg / "Manifest.json").write_text(json.dumps(value))


def _spec(pkg: Path, fn: Callable[[object], object]) -> None:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((pkg / _S).read_bytes())
    fn(spec)
    (pkg / _S).write_bytes(spec.SerializeToString())


def _replace_with(path: Path, make: Callable[[Path], object]) -> None:
    path.unlink()
    make(path)


def _blob_offset(spec, offset: int) -> None:
    fn = spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
            op.attributes["val"].blobFileValue.offset = offset


def _blob_file(spec, name: str) -> None:
    fn = spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
            op.attributes["val"].blobFileValue.fileName = name


_ml_case("weights-truncated", lambda p: _rewrite(p / _W, lambda b: b[:1000]))
_ml_case("weights-truncated-in-data", lambda p: _rewrite(p / _W, lambda b: b[:len(b) // 2]))
_ml_case("weights-empty", lambda p: _rewrite(p / _W, lambda b: b""))
_ml_case("weights-sentinel-zeroed", lambda p: _rewrite(p / _W, lambda b: b[:64] + b"\0" * 8 + b[72:]))
_ml_case("weights-size-inflated", lambda p: _rewrite(p / _W, lambda b: b[:72] + struct.pack("<Q", 1 << 40)
                                                     + b[80:]))
_ml_case("weights-missing", lambda p: (p / _W).unlink())
_ml_case("weights-fifo", lambda p: _replace_with(p / _W, os.mkfifo))
_ml_case("weights-a-folder", lambda p: _replace_with(p / _W, Path.mkdir))
_ml_case("blob-offset-huge", lambda p: _spec(p, lambda s: _blob_offset(s, 1 << 40)))
_ml_case("blob-offset-misaligned", lambda p: _spec(p, lambda s: _blob_offset(s, 100)))
_ml_case("blob-other-file", lambda p: _spec(p, lambda s: _blob_file(s, "@model_path/weights/other.bin")))
_ml_case("spec-garbage", lambda p: _rewrite(p / _S, lambda b: b"\xff" * 100))
_ml_case("spec-truncated", lambda p: _rewrite(p / _S, lambda b: b[:len(b) // 2]))
_ml_case("spec-empty", lambda p: _rewrite(p / _S, lambda b: b""))
_ml_case("spec-missing", lambda p: (p / _S).unlink())
_ml_case("spec-fifo", lambda p: _replace_with(p / _S, os.mkfifo))
_ml_case("spec-not-ml-program", lambda p: _spec(p, lambda s: (s.ClearField("mlProgram"),
                                                               s.neuralNetwork.SetInParent())))
_ml_case("spec-no-main", lambda p: _spec(p, _rename_main))
_ml_case("spec-no-inputs", lambda p: _spec(p, lambda s: s.description.ClearField("input")))
_ml_case("spec-unknown-dtype", lambda p: _spec(p, lambda s: _set_dtype(s, 9999)))
_ml_case("damaged-preprocess-metadata", lambda p: _spec(p, lambda s: s.description.metadata.userDefined.update(
    {"sa_deploy.preprocess": "{not json"})), commands=("validate",))  # inspect shows it, marked damaged
_ml_case("manifest-not-json", lambda p: (p / "Manifest.json").write_text("{not json"))
_ml_case("manifest-wrong-keys", lambda p: _manifest(p, {"a": 1}))
_ml_case("manifest-root-unknown", lambda p: _manifest(p, {"rootModelIdentifier": "x", "itemInfoEntries": {}}))
_ml_case("manifest-path-number", lambda p: _manifest(p, {"rootModelIdentifier": "x",
                                                         "itemInfoEntries": {"x": {"path": 5}}}))
_ml_case("manifest-absolute-path", lambda p: _manifest(p, {"rootModelIdentifier": "x",
                                                           "itemInfoEntries": {"x": {"path": "/dev/zero"}}}))
_ml_case("manifest-dotdot", lambda p: _manifest(p, {"rootModelIdentifier": "x", "itemInfoEntries": {
    "x": {"path": "../../../../etc/passwd"}}}))
_ml_case("manifest-a-list", lambda p: _manifest(p, [1, 2]))
_ml_case("manifest-fifo", lambda p: _replace_with(p / "Manifest.json", os.mkfifo))
_ml_case("manifest-missing", lambda p: (p / "Manifest.json").unlink())
_ml_case("manifest-not-utf8", lambda p: (p / "Manifest.json").write_bytes(b"\xff\xfe{"))
_ml_case("package-is-a-file", lambda p: shutil.rmtree(p) or p.write_bytes(b"not a package"))
_ml_case("package-empty-folder", lambda p: shutil.rmtree(p) or p.mkdir())
_ml_case("package-symlink-loop", lambda p: shutil.rmtree(p) or os.symlink(p, p))


# OpenVINO IRs: `validate --artifacts X.xml` and `inspect X.xml` -----------------------------------------------------

def _ov_case(cid: str, damage: Callable[[Path, Path], object], commands=("validate", "inspect")) -> None:
    """A copy of the workspace's IR (m.xml + m.bin) damaged by ``damage(xml, bin)``, run through ``commands``."""
    for command in commands:
        def build(w: Workspace, d: Path, damage=damage, command=command) -> list[str]:
            xml, bin_ = d / "m.xml", d / "m.bin"
            shutil.copy(w.ir, xml)
            shutil.copy(w.ir.with_suffix(".bin"), bin_)
            damage(xml, bin_)
            return {"validate": ["validate", *MODEL, "--pretrained", "--data", str(w.npz), "--artifacts", str(xml),
                                 "--no-progress"],
                    "inspect": ["inspect", str(xml)]}[command]
        case("openvino", f"{cid}[{command}]", needs="openvino")(build)


def _xml(fn: Callable[[str], str]) -> Callable[[Path, Path], None]:
    return lambda xml, _: xml.write_text(fn(xml.read_text()))


def _first_const_attr(text: str, attr: str, value: str) -> str:
    return re.sub(rf'(type="Const".*?<data [^>]*?){attr}="[^"]*"', rf'\g<1>{attr}="{value}"', text, count=1,
                  flags=re.S)


_ov_case("xml-empty", _xml(lambda t: ""))
_ov_case("xml-truncated", _xml(lambda t: t[:len(t) // 2]))
_ov_case("xml-garbage", lambda xml, _: xml.write_bytes(os.urandom(4096)))
_ov_case("xml-not-utf8", lambda xml, _: xml.write_bytes(b"\xff\xfe<net version=\"11\">"))
_ov_case("xml-html", _xml(lambda t: "<html><body>not an IR</body></html>"))
_ov_case("xml-an-onnx-file", lambda xml, _: xml.write_bytes(
    helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()))
_ov_case("ir-version-999", _xml(lambda t: t.replace('version="11"', 'version="999"', 1)))
_ov_case("ir-version-missing", _xml(lambda t: t.replace(' version="11"', "", 1)))
_ov_case("unknown-op", _xml(lambda t: re.sub(r'type="(Sigmoid|Relu)"', 'type="Frobnicate"', t, count=1)))
_ov_case("no-edges", _xml(lambda t: re.sub(r"<edges>.*</edges>", "<edges></edges>", t, flags=re.S)))
_ov_case("no-layers", _xml(lambda t: re.sub(r"<layers>.*</edges>", "<layers></layers><edges></edges>", t,
                                            flags=re.S)))
_ov_case("const-offset-past-bin", _xml(lambda t: _first_const_attr(t, "offset", "999999999")))
_ov_case("const-size-huge", _xml(lambda t: _first_const_attr(t, "size", str(1 << 40))))
_ov_case("const-offset-negative", _xml(lambda t: _first_const_attr(t, "offset", "-8")))
_ov_case("input-int32", _xml(lambda t: t.replace('element_type="f32" />', 'element_type="i32" />', 1)),
         commands=("validate",))
_ov_case("input-one-channel", _xml(lambda t: t.replace('shape="?,3,32,32"', 'shape="?,1,32,32"', 1)),
         commands=("validate",))
_ov_case("input-64x64", _xml(lambda t: t.replace('shape="?,3,32,32"', 'shape="?,3,64,64"', 1)),
         commands=("validate",))
_ov_case("bin-missing", lambda _, b: b.unlink())
_ov_case("bin-empty", lambda _, b: b.write_bytes(b""))
_ov_case("bin-truncated", lambda _, b: b.write_bytes(b.read_bytes()[:100]))
_ov_case("bin-a-folder", lambda _, b: b.unlink() or b.mkdir())
_ov_case("bin-fifo", lambda _, b: _replace_with(b, os.mkfifo))
_ov_case("xml-fifo", lambda x, _: _replace_with(x, os.mkfifo))
_ov_case("xml-a-folder", lambda x, _: x.unlink() or x.mkdir())
_ov_case("xml-dangling-link", lambda x, _: x.unlink() or os.symlink(x.with_name("gone.xml"), x))


# TensorRT engines: `inspect X.engine` (without TensorRT, what can be read is the sidecar) -------------------------

def _engine_case(cid: str, damage: Callable[[Path, Path], object]) -> None:
    def build(w: Workspace, d: Path) -> list[str]:
        from sa_deploy.backends.trt.sidecar import Profile, make_sidecar, sidecar_path, write_engine
        from sa_deploy.util.hashing import bytes_sha256

        engine, data = d / "m.engine", b"engine bytes"
        write_engine(engine, data, make_sidecar(
            deploy_config={"model": "sa_resnet_cifar"}, trt_version="10.3.0", gpu={"name": "GPU"},
            precision="fp16", typing="strongly-typed", profile=Profile("input", (3, 32, 32)), onnx_sha256="0" * 64,
            onnx_path="m.onnx", engine_sha256=bytes_sha256(data), build_seconds=1.0))
        damage(engine, sidecar_path(engine))
        return ["inspect", str(engine)]
    case("engine", cid)(build)


def _sidecar(fn: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def damage(_: Path, side: Path) -> None:
        data = json.loads(side.read_text())
        fn(data)
        side.write_text(json.dumps(data))
    return damage


_engine_case("sidecar-missing", lambda e, s: s.unlink())
_engine_case("sidecar-empty", lambda e, s: s.write_text(""))
_engine_case("sidecar-not-json", lambda e, s: s.write_text("{not json"))
_engine_case("sidecar-not-utf8", lambda e, s: s.write_bytes(b"\xff\xfe{"))
_engine_case("sidecar-a-list", lambda e, s: s.write_text("[1, 2]"))
_engine_case("sidecar-missing-keys", lambda e, s: s.write_text('{"sa_deploy_version": "0.1.0"}'))
_engine_case("sidecar-profile-a-string", _sidecar(lambda j: j.update(profile="x")))
_engine_case("sidecar-profile-without-max", _sidecar(lambda j: j["profile"].pop("max")))
_engine_case("sidecar-deploy-config-a-list", _sidecar(lambda j: j.update(deploy_config=[1, 2])))
_engine_case("sidecar-a-folder", lambda e, s: s.unlink() or s.mkdir())
_engine_case("sidecar-fifo", lambda e, s: _replace_with(s, os.mkfifo))
_engine_case("engine-missing", lambda e, s: e.unlink())
_engine_case("engine-a-folder", lambda e, s: e.unlink() or e.mkdir())
_engine_case("engine-fifo", lambda e, s: _replace_with(e, os.mkfifo))
_engine_case("engine-broken-symlink", lambda e, s: e.unlink() or os.symlink(e.with_name("gone.engine"), e))


def _rename_main(spec) -> None:
    spec.mlProgram.functions["other"].CopyFrom(spec.mlProgram.functions["main"])
    del spec.mlProgram.functions["main"]


def _set_dtype(spec, code: int) -> None:
    fn = spec.mlProgram.functions["main"]
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "const":
            op.attributes["val"].type.tensorType.dataType = code
            return


# --- the checks ---------------------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed, nothing opened): kind, size, mtime, link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            key = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[key] = ("file", st.st_size, st.st_mtime_ns)
            else:
                out[key] = ("dir" if stat.S_ISDIR(st.st_mode) else "other", stat.S_IFMT(st.st_mode))
    return out


def _diff(before: dict, after: dict) -> list[str]:
    return ([f"deleted {k}" for k in before if k not in after] + [f"created {k}" for k in after if k not in before]
            + [f"changed {k}" for k in before if k in after and before[k] != after[k]])


@pytest.mark.filterwarnings("ignore::UserWarning")  # 'skipped N unreadable images'; building a quantized tensor
@pytest.mark.parametrize("c", CASES, ids=[f"{c.category}:{c.id}" for c in CASES])
def test_malformed_input(c: Case, ws: Workspace, capsys, monkeypatch):
    if c.needs == "coreml" and ws.mlpackage is None:
        pytest.skip("coremltools is not installed")
    if c.needs == "openvino" and ws.ir is None:
        pytest.skip("openvino is not installed")
    monkeypatch.chdir(ws.root / "cwd")  # a relative default path would show up in the snapshot
    argv = c.build(ws, ws.case(f"{c.category}-{c.id}".replace("/", "_").replace(" ", "_")))
    capsys.readouterr()
    before = snapshot(ws.root)
    rc = main(argv)
    captured = capsys.readouterr()
    after = snapshot(ws.root)
    lines = [ln for ln in captured.err.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    assert rc not in (0, 70), (rc, argv, captured.err[-2000:])
    assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("sa-deploy"), lines[-5:]
    assert not _diff(before, after), _diff(before, after)
    assert not os.path.exists("/tmp/sa_deploy_corpus_pwned")


def test_corpus_size():
    """At least 150 distinct malformed inputs (an input run through two commands counts once), in seven
    categories; the per-category counts are printed for the issue's note."""
    distinct = Counter(c.category for c in {(c.category, c.id.split("[")[0]): c for c in CASES}.values())
    runs = Counter(c.category for c in CASES)
    print({k: (distinct[k], runs[k]) for k in runs})
    assert set(distinct) == {"checkpoint", "onnx", "data", "flags", "mlpackage", "openvino", "engine"}
    assert sum(distinct.values()) >= 150 and min(v for k, v in distinct.items() if k != "engine") >= 20
    assert distinct["engine"] >= 15


def test_controls(ws: Workspace, capsys):
    """The unmutated inputs work, so each case above fails because of its mutation."""
    assert main(["inspect", str(ws.onnx)]) == 0
    assert main(["lint", "--target", "tensorrt", str(ws.onnx)]) == 0
    create_model("sa_resnet_cifar", checkpoint=ws.ck)
    if ws.ir is not None:
        assert main(["inspect", str(ws.ir)]) == 0
    if ws.mlpackage is not None:
        from sa_deploy.backends.coreml.mil_reader import check_mlpackage

        check_mlpackage(ws.mlpackage)
