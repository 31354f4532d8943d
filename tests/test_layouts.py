"""One image-source type, every layout (issue 27, item 5): the same real images (40 validation and 16 calibration
images of the embedded CIFAR-10 sample) written in every documented layout -- class folders (PNG), a flat folder +
CSV labels, a flat folder + whitespace ``val.txt``, an .npz of uint8 ``images``, an .npz of float ``inputs``,
``embedded`` (the same images picked from the sample with ``--num``), and arrays in memory (the Python API) -- and
every command that reads images run on each: ``validate``, ``quantize --calib``, ``run --val/--calib``,
``export --format coreml --precision w8a8 --calib`` and the INT8 sensitivity (SQNR) of ``run`` and the API.
The numbers must agree between layouts holding the same images. Calibration reads no labels: its layouts are class
folders, a flat folder, the two .npz, ``embedded`` and arrays.

How the layouts hold the images: class-major order (label, then the sample's order) everywhere, which is the order
class folders are read in; ``embedded`` serves the same set round-robin over the classes. The ``inputs`` .npz is
made with sa-deploy's own normalization (data.preprocess.normalize), so it holds bit for bit the floats the other
layouts serve. A user's own float preprocessing (torchvision's ToTensor + Normalize, say) computes the same formula
in another order and may differ in the last bit: its fingerprint would differ (it hashes the inputs) and a range
could move by an ulp, though top-1 would almost always agree; that is why the fingerprint is not promised equal for
an ``inputs`` .npz made elsewhere."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from sa_deploy import api
from sa_deploy.cli import main
from sa_deploy.data.preprocess import normalize
from sa_deploy.data.resolve import open_images
from sa_deploy.data.sample import EmbeddedSource, load_split
from sa_deploy.data.sources import ArraySource, ImageSource, NpzSource, Source
from sa_deploy.models import create_model

NUM = {"val": 40, "calib": 16}
FILE_LAYOUTS = ("classes", "flat-csv", "flat-txt", "npz-images", "npz-inputs")  # the same order of images
LAYOUTS = FILE_LAYOUTS + ("embedded",)  # the same images, round-robin over the classes
# calibration reads no labels (`quantize` and `export` take no --labels): a flat folder is read as it is
CALIB_LAYOUTS = ("classes", "flat", "npz-images", "npz-inputs", "embedded")


@dataclass
class Split:
    """One set of images (``val`` or ``calib``) in every layout."""

    name: str
    root: Path
    images: np.ndarray  # (N,32,32,3) uint8, class-major
    labels: np.ndarray

    def args(self, layout: str, flag: str) -> list[str]:
        """The command-line arguments that pass this set in ``layout`` as ``flag`` (--data, --calib, --val)."""
        r = self.root
        return {"classes": [flag, str(r / "classes")],
                "flat-csv": [flag, str(r / "flat"), "--labels", str(r / "labels.csv")],
                "flat-txt": [flag, str(r / "flat"), "--labels", str(r / "val.txt")],
                "flat": [flag, str(r / "flat")],  # no labels file: unlabeled (calibration)
                "npz-images": [flag, str(r / "images.npz")],
                "npz-inputs": [flag, str(r / "inputs.npz")],
                "embedded": [flag, "embedded"]}[layout]

    def source(self, layout: str, cfg) -> Source:
        """The source the resolver opens for ``layout`` (what the commands read)."""
        args = self.args(layout, "--data")
        labels = args[3] if len(args) == 4 else None
        return open_images(args[1], cfg, num=NUM[self.name], labels=labels, split=self.name)


@pytest.fixture(scope="module")
def cfg():
    return create_model("sa_resnet_cifar").preprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory, cfg) -> dict[str, Split]:
    """The embedded sample's class-balanced subsets (what ``--num`` picks from ``embedded``), written losslessly
    in every file layout."""
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for split, num in NUM.items():
        images, labels, names, classes = load_split(split)
        index = {name: i for i, name in enumerate(names)}
        picked = [index[f.path.as_posix()] for f in EmbeddedSource(split, cfg, num=num).files]
        picked = sorted(picked, key=lambda i: labels[i])  # class-major: the order class folders are read in
        x, y = images[picked], labels[picked]
        d = root / split
        (d / "flat").mkdir(parents=True)
        for i, (im, label) in enumerate(zip(x, y)):
            (d / "classes" / classes[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(d / "classes" / classes[label] / f"{i:03d}.png")
            Image.fromarray(im).save(d / "flat" / f"{i:03d}.png")
        (d / "labels.csv").write_text("filename,label\n" + "".join(f"{i:03d}.png,{classes[label]}\n"
                                                                   for i, label in enumerate(y)))
        (d / "val.txt").write_text("".join(f"{i:03d}.png {label}\n" for i, label in enumerate(y)))
        np.savez(d / "images.npz", images=x, labels=y)
        np.savez(d / "inputs.npz", inputs=normalize(x, cfg), labels=y)
        out[split] = Split(split, d, x, y)
    return out


@pytest.fixture(scope="module")
def fp32(request, tmp_path_factory) -> Path:
    """The embedded sa_resnet_cifar as ``sa-deploy export --pretrained`` writes it (the session's export where the
    conftest shares one; read only here)."""
    try:
        return request.getfixturevalue("exported_cifar")["fold"]
    except pytest.FixtureLookupError:
        out = tmp_path_factory.mktemp("fp32")
        assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--out", str(out)]) == 0
        return out / "sa_resnet_cifar_fold.onnx"


@pytest.fixture(scope="module")
def int8(fp32, tmp_path_factory) -> Path:
    """An INT8 (cpu flavour) file to validate and to measure sensitivity on, calibrated once."""
    out = tmp_path_factory.mktemp("int8") / "int8_cpu.onnx"
    return api.quantize(fp32, "embedded", out, method="minmax", flavour="cpu", num=NUM["calib"]).path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], exact: bool) -> bool:
    if a.keys() != b.keys():
        return False
    if exact:
        return all(np.array_equal(a[k], b[k]) for k in a)
    return all(np.allclose(a[k], b[k], rtol=1e-6, atol=0) for k in a)


# --- the sources -------------------------------------------------------------------------------------------------

def test_every_layout_is_one_source_type_serving_the_same_inputs(data, cfg):
    """The resolver returns a Source for every layout; the same images give the same inputs, labels and
    fingerprint whatever the layout (embedded: the same set in another order)."""
    for split in data.values():
        want_x = normalize(split.images, cfg)
        arrays = {"arrays uint8": (split.images, split.labels),
                  "arrays dict inputs": {"inputs": normalize(split.images, cfg), "labels": split.labels},
                  "arrays uint8 unlabeled": split.images}
        sources = {layout: split.source(layout, cfg) for layout in LAYOUTS}
        sources["flat unlabeled"] = open_images(split.root / "flat", cfg, split=split.name)
        sources.update({name: open_images(a, cfg, split=split.name) for name, a in arrays.items()})
        fingerprints = {}
        for name, src in sources.items():
            assert isinstance(src, Source), name
            assert len(src) == len(split.labels) and src.skipped == [], name
            assert src.labeled == ("unlabeled" not in name), name
            assert str(src) and "object at 0x" not in str(src), name
            x, y = (np.concatenate(parts) for parts in zip(*src.batches(7)))
            assert x.dtype == np.float32 and x.shape == want_x.shape, name
            if name == "embedded":  # the same images, round-robin over the classes
                order = np.lexsort((np.arange(len(y)), y))
                x, y = x[order], y[order]
            np.testing.assert_array_equal(x, want_x, err_msg=name)
            if src.labeled:
                np.testing.assert_array_equal(y, split.labels, err_msg=name)
                if not name.startswith("arrays") and not name.startswith("npz"):
                    assert src.class_names == cfg.class_names, name
            fingerprints[name] = src.fingerprint()
        # the fingerprint hashes the inputs served, in order: equal for every layout holding these pixels
        assert len({fp for n, fp in fingerprints.items() if n != "embedded"}) == 1, fingerprints
        assert fingerprints["embedded"] != fingerprints["classes"]  # same images, other order
    assert isinstance(data["val"].source("classes", cfg), ImageSource)
    assert isinstance(data["val"].source("npz-images", cfg), NpzSource)
    assert isinstance(open_images(data["val"].images, cfg), ArraySource)


def test_arrays_are_checked_like_an_npz(cfg):
    from sa_deploy.data.sources import DataSourceError

    with pytest.raises(DataSourceError, match="'images' has shape"):
        open_images(np.zeros((2, 3, 32, 32), np.uint8), cfg)
    with pytest.raises(DataSourceError, match="'labels' has shape"):
        open_images((np.zeros((2, 32, 32, 3), np.uint8), np.arange(3)), cfg)
    with pytest.raises(DataSourceError, match="cannot read images from a list"):
        open_images([1, 2, 3], cfg)
    assert len(open_images(np.zeros((5, 32, 32, 3), np.uint8), cfg, num=3)) == 3


# --- the commands ------------------------------------------------------------------------------------------------

def test_quantize_on_every_layout(data, fp32, tmp_path, capsys):
    """`quantize --calib X`: the same calibration fingerprint and the same ranges (every Q/DQ scale and zero point)
    from every layout; ranges cached for one layout are reused for another holding the same pixels."""
    results, tensors = {}, {}
    for layout in CALIB_LAYOUTS:
        out = tmp_path / f"{layout}.onnx"
        capsys.readouterr()
        assert main(["quantize", str(fp32), *data["calib"].args(layout, "--calib"), "--num", "16",
                     "--method", "minmax", "--flavour", "cpu", "--out", str(out), "--json"]) == 0, layout
        results[layout] = json.loads(capsys.readouterr().out)
        tensors[layout] = _initializers(out)
    arrays = api.quantize(fp32, data["calib"].images, tmp_path / "arrays.onnx", method="minmax", flavour="cpu",
                          num=16)
    results["arrays"], tensors["arrays"] = arrays.to_dict(), _initializers(arrays.path)
    assert {r["num_calibration"] for r in results.values()} == {16}
    same_order = {k: r["data_fingerprint"] for k, r in results.items() if k != "embedded"}
    assert len(set(same_order.values())) == 1, same_order
    for layout, t in tensors.items():
        # minmax ranges do not depend on the order; embedded's images come in another order within the batch
        assert _same_arrays(t, tensors["classes"], exact=layout != "embedded"), layout
    # one layout's cached ranges serve another holding the same pixels
    cache = tmp_path / "cache"
    first = api.quantize(fp32, data["calib"].root / "classes", tmp_path / "c1.onnx", method="minmax",
                         flavour="cpu", num=16, cache_dir=cache)
    second = api.quantize(fp32, data["calib"].root / "inputs.npz", tmp_path / "c2.onnx", method="minmax",
                          flavour="cpu", num=16, cache_dir=cache)
    assert not first.cache_hit and second.cache_hit


def test_validate_on_every_layout(data, fp32, int8, tmp_path, cfg):
    """`validate --data X`: the same top-1/top-5 for the reference and every artifact, the same parity. The FP32
    ONNX file is the reference (onnxruntime: a PyTorch reference costs seconds per layout here; test_data compares
    --model on class folders and a flat folder)."""
    rows = {}
    for layout in LAYOUTS:
        out = tmp_path / f"{layout}.json"
        assert main(["validate", "--reference", str(fp32), *data["val"].args(layout, "--data"), "--num", "40",
                     "--artifacts", str(fp32), str(int8), "--max-drop", "100", "--no-progress",
                     "--json", str(out)]) == 0, layout
        rows[layout] = json.loads(out.read_text())
    for name, arrays in (("arrays", (data["val"].images, data["val"].labels)),
                         ("arrays inputs", {"inputs": normalize(data["val"].images, cfg),
                                            "labels": data["val"].labels})):
        rows[name] = api.validate(fp32, arrays, [fp32, int8], max_drop=100, progress=False).to_dict()

    def numbers(report: dict) -> list:
        return [(r["name"], r["num_images"], r["top1"], r["top5"]) for r in [report["reference"], *report["results"]]]

    def cosines(report: dict) -> list[float]:
        return [r["parity"]["cosine"] for r in report["results"]]

    want = numbers(rows["classes"])
    assert want[0][1] == 40 and len(want) == 3 and want[0][2] > 50  # the trained model on real images
    for layout, report in rows.items():
        assert numbers(report) == want, layout
        np.testing.assert_allclose(cosines(report), cosines(rows["classes"]), rtol=1e-9, err_msg=layout)


# `run` pairs one validation layout with one calibration layout: every layout is read on both sides in five runs
RUNS = [("classes", "npz-images"), ("flat-csv", "npz-inputs"), ("flat-txt", "classes"), ("npz-images", "flat"),
        ("npz-inputs", "embedded")]


def test_run_on_every_layout(data, tmp_path, capsys):
    """`run --val X --calib Y`: every run reads the same images, so the reports agree: PyTorch's and each
    artifact's top-1, parity, and the INT8 sensitivity (SQNR per tensor)."""
    (tmp_path / "plan.yaml").write_text("lowerings: [fold]\nfp16: false\nint8_flavours: [tensorrt]\n"
                                        "int8_method: minmax\nlatency_iters: 1\nsensitivity: true\n")
    reports = {}
    for val, calib in RUNS:
        out = tmp_path / f"{val}__{calib}"
        rc = main(["run", *data["val"].args(val, "--val"), *data["calib"].args(calib, "--calib"),
                   "--val-num", "40", "--calib-num", "16", "--out", str(out), "--config", str(tmp_path / "plan.yaml"),
                   "--no-coreml", "--no-openvino", "--no-tensorrt", "--max-drop", "100"])
        err = capsys.readouterr().err
        assert rc == 0 and "Traceback" not in err, (val, calib, err[-2000:])
        reports[(val, calib)] = json.loads((out / "report.json").read_text())
    first = reports[RUNS[0]]
    rows = {a["name"]: a for a in first["artifacts"]}
    assert set(rows) == {"onnx-fold-fp32", "onnx-int8-tensorrt"} and first["sensitivity"]
    for key, report in reports.items():
        assert report["passed"] and report["data"]["val_images"] == 40 and report["data"]["calib_images"] == 16, key
        assert report["reference"]["top1"] == first["reference"]["top1"], key
        for a in report["artifacts"]:
            assert a["status"] == "ok", (key, a["name"], a["reason"])
            assert a["top1"] == rows[a["name"]]["top1"], (key, a["name"])
            assert a["cosine"] == pytest.approx(rows[a["name"]]["cosine"], rel=1e-9), (key, a["name"])
        if key[1] != "embedded":  # embedded: the probe draws 16 of its 512 images with seed+1, not these 16
            got = [(s["tensor"], s["sqnr_db"]) for s in report["sensitivity"]]
            want = [(s["tensor"], s["sqnr_db"]) for s in first["sensitivity"]]
            assert [t for t, _ in got] == [t for t, _ in want], key
            np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-9, err_msg=str(key))


def test_sensitivity_from_arrays(data, fp32, int8, cfg):
    """The INT8 sensitivity (api.sensitivity, what `run` reports; the file layouts are compared through `run`
    above) from arrays in memory is that of the same images in class folders."""
    want = [(r.tensor, r.sqnr_db) for r in api.sensitivity(fp32, int8, data["calib"].root / "classes", num=16)]
    got = [(r.tensor, r.sqnr_db) for r in api.sensitivity(fp32, int8, data["calib"].images, num=16)]
    assert want and [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-9)


def test_coreml_w8a8_calibrates_on_the_same_inputs_from_every_layout(data, cfg, tmp_path):
    """`export --format coreml --precision w8a8 --calib X`: what the export calibrates on (api._batches, the
    command's own path) is bit for bit the same from every calibration layout, so the calibration (deterministic
    on the same inputs) is too; the export itself runs once, on PNG class folders: one W8A8 conversion costs ~15 s
    on 2 cores, five would be most of this module's time."""
    pytest.importorskip("coremltools")
    want = api._batches(str(data["calib"].root / "classes"), cfg, 16)
    assert sum(len(x) for x in want) == 16
    for layout in CALIB_LAYOUTS[1:-1]:
        got = api._batches(data["calib"].args(layout, "--calib")[1], cfg, 16)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want)), layout
    out = tmp_path / "coreml"
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--format", "coreml", "--precision", "w8a8",
                 *data["calib"].args("classes", "--calib"), "--calib-num", "16", "--out", str(out)]) == 0
    assert (out / "sa_resnet_cifar_fold_w8a8.mlpackage" / "Manifest.json").is_file()
