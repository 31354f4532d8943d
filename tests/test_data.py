"""Where images come from: the one resolver, the embedded sample (and its card and rebuild script), and flat folders
of images with a labels file -- on real images (the embedded sample), so every check runs on a clean clone."""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import re
import sys
import warnings

import numpy as np
import pytest
from helpers import ROOT
from PIL import Image

import sa_deploy.data.resolve as resolve
from sa_deploy.cli import main
from sa_deploy.data.labels import LabelsError, list_labeled_folder, read_labels
from sa_deploy.data.resolve import EMBEDDED, data_ref, resolve_labeled_data
from sa_deploy.data.sample import EmbeddedSource, load_split, read_card, sample_path
from sa_deploy.data.sources import DataSourceError, ImageSource
from sa_deploy.models.preprocessing import CIFAR10_32, CIFAR10_CLASSES, IMAGENET_224

NUM = 120  # images written to folders (the first 120 of the sample's validation split: 12 per class)


@pytest.fixture
def no_default_data(monkeypatch):
    """As on a clean clone: no $SA_DEPLOY_DATA."""
    monkeypatch.delenv(resolve.DATA_ENV, raising=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The first NUM validation images of the sample written losslessly (PNG) as class folders and as one flat
    folder with labels files (CSV with class names, whitespace lines with indices as in ImageNet's val.txt)."""
    root = tmp_path_factory.mktemp("layouts")
    images, labels, names, classes = load_split("val")
    flat = root / "flat"
    flat.mkdir()
    csv_lines, txt_lines = ["filename,label"], []
    for i in range(NUM):
        cls = classes[labels[i]]
        (root / "classes" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(root / "classes" / cls / f"{i:04d}.png")
        name = f"img_{i:04d}.png"
        Image.fromarray(images[i]).save(flat / name)
        csv_lines.append(f"{name},{cls}")
        txt_lines.append(f"{name} {labels[i]}")
    (root / "labels.csv").write_text("\n".join(csv_lines) + "\n")
    (root / "val.txt").write_text("\n".join(txt_lines) + "\n")
    return root


@pytest.fixture(scope="module")
def onnx_model(exported_cifar):
    return exported_cifar["fold"]  # the session's shared export (read only here)


# --- the embedded sample -----------------------------------------------------------------------------------------

def test_sample_matches_its_card():
    card = read_card()
    path = sample_path()
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and card["bytes"] == path.stat().st_size
    assert path.stat().st_size <= 5e6  # the wheel grows by at most 5 MB
    seen = set()
    for split, minimum, folder in (("val", 1000, "val/"), ("calib", 256, "train/")):
        images, labels, names, classes = load_split(split)
        assert images.dtype == np.uint8 and images.shape == (len(labels), 32, 32, 3) and len(labels) >= minimum
        assert classes == CIFAR10_CLASSES == tuple(card["class_names"])
        counts = np.bincount(labels, minlength=10)
        assert counts.max() - counts.min() <= 1, counts  # class-balanced
        assert card["splits"][split]["images"] == len(labels)
        assert list(card["splits"][split]["per_class"].values()) == counts.tolist()
        assert all(n.startswith(folder) and n.split("/")[1] == classes[y] for n, y in zip(names, labels))
        assert len(set(names)) == len(names) and not seen & set(names)
        seen |= set(names)
        # every prefix is class-balanced (round-robin order), so --num / --val-num subsets stay balanced
        assert np.bincount(labels[:100], minlength=10).tolist() == [10] * 10
    assert card["seed"] == 0 and "build_embedded_sample.py" in card["command"]


def test_wheel_carries_the_sample():
    text = (ROOT / "pyproject.toml").read_text()
    line = re.search(r"\[tool\.setuptools\.package-data\]\s*\nsa_deploy = \[(.*)\]", text).group(1)
    globs = re.findall(r'"([^"]+)"', line)
    for f in sample_path().parent.iterdir():
        rel = f.relative_to(ROOT / "sa_deploy").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


@pytest.mark.parametrize("cfg", [CIFAR10_32, IMAGENET_224], ids=["32x32", "224x224"])
def test_sample_goes_through_the_image_preprocessing(folders, cfg):
    """The same pixels as the image files they came from, through the same resize/crop/normalize."""
    from_files = ImageSource(folders / "flat", cfg, files=list_labeled_folder(folders / "flat",
                                                                              folders / "val.txt"))
    embedded = EmbeddedSource("val", cfg)
    a, b = from_files.load(), embedded.load()
    assert a[0].shape == (NUM, cfg.input_size, cfg.input_size, 3)
    assert np.array_equal(a[0], b[0][:NUM]) and np.array_equal(a[1], b[1][:NUM])
    assert np.array_equal(next(from_files.batches(8))[0], next(embedded.batches(8))[0])


def test_embedded_subsets_are_seeded_and_balanced():
    a = EmbeddedSource("calib", CIFAR10_32, num=64, seed=1)
    assert len(a) == 64 and np.bincount(a.load()[1], minlength=10).max() <= 7
    assert a.fingerprint() == EmbeddedSource("calib", CIFAR10_32, num=64, seed=1).fingerprint()
    assert a.fingerprint() != EmbeddedSource("calib", CIFAR10_32, num=64, seed=2).fingerprint()
    assert a.fingerprint() != EmbeddedSource("calib", CIFAR10_32, num=63, seed=1).fingerprint()


def test_rebuild_script_is_deterministic(tmp_path, folders):
    """scripts/build_embedded_sample.py on a CIFAR-like folder: class-balanced, seeded, byte-identical rebuilds,
    the source pixels unchanged, file names and counts on the card."""
    spec = importlib.util.spec_from_file_location("build_sample", ROOT / "scripts" / "build_embedded_sample.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = tmp_path / "cifar"
    for split in ("train", "val"):
        for cls in sorted(p.name for p in (folders / "classes").iterdir()):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((folders / "classes" / cls).iterdir()):
                (data / split / cls / f.name).write_bytes(f.read_bytes())
    cards = [script.build(data, tmp_path / f"out{i}", 40, 30, 0, "cmd") for i in range(2)]
    blobs = [(tmp_path / f"out{i}" / "cifar10_sample.npz").read_bytes() for i in range(2)]
    assert blobs[0] == blobs[1] and cards[0] == cards[1]
    assert cards[0]["splits"]["val"]["images"] == 40 and cards[0]["splits"]["calib"]["images"] == 30
    assert set(cards[0]["splits"]["val"]["per_class"].values()) == {4}
    with np.load(tmp_path / "out0" / "cifar10_sample.npz") as z:
        for img, name in zip(z["val_images"], z["val_files"]):
            assert np.array_equal(img, np.asarray(Image.open(data / str(name))))
        assert z["calib_files"][0].startswith("train/")
    assert cards[0]["sha256"] == hashlib.sha256(blobs[0]).hexdigest()


# --- the resolver ------------------------------------------------------------------------------------------------

def test_nothing_configured_resolves_to_the_embedded_sample(no_default_data):
    data = resolve_labeled_data()
    assert data.embedded and data.val == data_ref(EMBEDDED, split="val")
    assert data.describe() == "embedded sample: 1000 validation / 512 calibration images"
    assert "$SA_DEPLOY_DATA unset" in data.origin


def test_resolution_order(no_default_data, monkeypatch, folders):
    # the embedded sample, then $SA_DEPLOY_DATA, then what is given, win in turn
    dev = folders / "dev"
    for sub in ("train", "val"):
        (dev / sub).mkdir(parents=True, exist_ok=True)
        (dev / sub / "x.png").write_bytes((folders / "flat" / "img_0000.png").read_bytes())
    assert resolve_labeled_data().embedded and resolve.default_data_dir() is None
    monkeypatch.setenv(resolve.DATA_ENV, str(dev))
    data = resolve_labeled_data()
    assert data.val.path == dev / "val" and data.calib.path == dev / "train" and data.origin == "$SA_DEPLOY_DATA"
    assert resolve.default_data_dir() == dev
    monkeypatch.setenv(resolve.DATA_ENV, EMBEDDED)
    assert resolve_labeled_data().embedded and resolve.default_data_dir() is None
    monkeypatch.setenv(resolve.DATA_ENV, str(folders / "nowhere"))
    with pytest.raises(DataSourceError, match="labeled images not found at .*nowhere"):
        resolve_labeled_data()
    given = resolve_labeled_data(str(dev), val=str(folders / "classes"))
    assert given.val.path == folders / "classes" and given.calib.path == dev / "train" and given.origin == "given"
    assert "validation images from" in given.describe()


def test_flat_data_folder_with_labels(no_default_data, folders):
    data = resolve_labeled_data(val=str(folders / "flat"), labels=str(folders / "labels.csv"))
    assert data.val.kind == "labeled-folder" and data.calib.embedded  # what is not given comes from the default
    with pytest.raises(DataSourceError, match="no train/ folder"):
        resolve_labeled_data(str(folders / "flat"), labels=str(folders / "labels.csv"))
    with pytest.raises(DataSourceError, match="--labels FILE describes"):
        resolve_labeled_data(labels=str(folders / "labels.csv"))
    with pytest.raises(DataSourceError, match="labels file not found"):
        resolve_labeled_data(val=str(folders / "flat"), labels=str(folders / "missing.csv"))


def test_no_other_module_derives_data_paths():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "sa_deploy").rglob("*.py")
                 if p.name != "resolve.py" and re.search(r"""['"]shared['"]|/\s*['"]cifar10['"]""", p.read_text())]
    assert not offenders


def test_bench_calibration_uses_the_resolver(monkeypatch):
    from sa_deploy.bench.variants import calibration_batches
    from sa_deploy.models import create_model

    monkeypatch.setenv(resolve.DATA_ENV, EMBEDDED)
    batches, note = calibration_batches(create_model("sa_resnet_cifar"), num=24, batch=8)
    assert note == "24 CIFAR-10 training images (embedded sample)" and [len(b) for b in batches] == [8, 8, 8]
    want = EmbeddedSource("calib", CIFAR10_32, num=24).batches(8)
    assert all(np.array_equal(a, b) for a, (b, _) in zip(batches, want))


# --- labels files ------------------------------------------------------------------------------------------------

def test_labels_formats(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("\ufefflabel,filename\n3,b.png\ncat,c d.png\n\n")  # BOM, columns by header name, a space
    assert read_labels(csv, CIFAR10_CLASSES) == {"b.png": 3, "c d.png": 3}
    txt = tmp_path / "val.txt"
    txt.write_text("# ImageNet style\nILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n")
    assert read_labels(txt) == {"ILSVRC2012_val_00000001.JPEG": 65, "ILSVRC2012_val_00000002.JPEG": 970}


@pytest.mark.parametrize("content, match", [
    ("filename,label\na.png,10\n", "line 2: label 10 is out of range"),
    ("filename,label\na.png,-1\n", "line 2: label -1 is out of range"),
    ("filename,label\na.png,zebra\n", "line 2: unknown class name 'zebra'"),
    ("a.png 1\nb.png 2\na.png 1\n", "line 3: a.png is listed twice \\(also on line 1\\)"),
    ("a.png\n", "line 1: expected `filename label`"),
    ("filename,label\na.png\n", "line 2: expected `filename,label`"),
    ("filename,label\n", "lists no images"),
])
def test_labels_file_errors(tmp_path, content, match):
    f = tmp_path / "labels.txt"
    f.write_text(content)
    with pytest.raises(LabelsError, match=match):
        read_labels(f, CIFAR10_CLASSES)


def test_class_names_need_a_class_list(tmp_path):
    f = tmp_path / "val.txt"
    f.write_text("a.JPEG n01440764\n")
    with pytest.raises(LabelsError, match="not a class index, and the model has no class names"):
        read_labels(f, ())


def test_listed_absent_and_unlisted_images(tmp_path, folders):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"img_{i:04d}.png").write_bytes((folders / "flat" / f"img_{i:04d}.png").read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\nimg_0000.png,cat\nimg_0009.png,dog\n")
    with pytest.raises(LabelsError, match=r"1 image\(s\) listed in labels.csv are not in .*, e.g. img_0009.png"):
        list_labeled_folder(flat, labels, CIFAR10_CLASSES)
    labels.write_text("filename,label\nimg_0000.png,cat\n")
    with pytest.warns(UserWarning, match=r"2 image\(s\) in .* are not listed in labels.csv and are skipped") as rec:
        files = list_labeled_folder(flat, labels, CIFAR10_CLASSES)
    assert len(rec) == 1 and [(f.path.name, f.label) for f in files] == [("img_0000.png", 3)]
    labels.write_text("filename,label\n../x.png,cat\n")
    with pytest.raises(LabelsError, match="points outside"):
        list_labeled_folder(flat, labels, CIFAR10_CLASSES)


def test_validate_flat_folder_same_top1_as_class_folders(folders, onnx_model, tmp_path):
    """The acceptance check: `sa-deploy validate --data FLATDIR --labels FILE` = the same images in class
    folders, for both labels formats."""
    reports = {}
    for name, extra in (("classes", ["--data", str(folders / "classes")]),
                        ("csv", ["--data", str(folders / "flat"), "--labels", str(folders / "labels.csv")]),
                        ("txt", ["--data", str(folders / "flat"), "--labels", str(folders / "val.txt")])):
        out = tmp_path / f"{name}.json"
        assert main(["validate", "--model", "sa_resnet_cifar", "--pretrained", *extra, "--artifacts",
                     str(onnx_model), "--json", str(out), "--no-progress", "--threads", "1"]) == 0
        reports[name] = json.loads(out.read_text())
    tops = {k: (r["reference"]["top1"], r["reference"]["top5"], r["results"][0]["top1"]) for k, r in reports.items()}
    assert tops["classes"] == tops["csv"] == tops["txt"], tops
    assert reports["csv"]["reference"]["num_images"] == NUM and tops["csv"][0] > 50


@pytest.mark.parametrize("case, match", [
    ("missing-labels", "labels file not found"),
    ("absent", "listed in bad.csv are not in"),
    ("out-of-range", "label 12 is out of range"),
    ("unknown-name", "unknown class name 'zebra'"),
    ("duplicate", "is listed twice"),
])
def test_validate_labels_errors_are_one_line(folders, onnx_model, tmp_path, capsys, case, match):
    bad = tmp_path / "bad.csv"
    rows = {"absent": "nope.png,cat", "out-of-range": "img_0000.png,12", "unknown-name": "img_0000.png,zebra",
            "duplicate": "img_0000.png,cat\nimg_0000.png,dog"}
    if case in rows:
        bad.write_text(f"filename,label\n{rows[case]}\n")
    rc = main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", str(folders / "flat"),
               "--labels", str(bad), "--artifacts", str(onnx_model), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("sa-deploy validate: error: ") and "\n" not in err, err
    assert re.search(match, err), err


def test_validate_unlisted_images_warn_once_in_one_line(folders, onnx_model, tmp_path, capsys):
    labels = tmp_path / "some.csv"
    labels.write_text("filename,label\n" + "".join(f"img_{i:04d}.png,{i % 10}\n" for i in range(20)))
    with warnings.catch_warnings():  # shown as outside pytest (which records warnings instead of printing them)
        warnings.simplefilter("default")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))
        assert main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", str(folders / "flat"),
                     "--labels", str(labels), "--artifacts", str(onnx_model), "--no-progress"]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if "not listed" in ln]
    assert lines == [f"sa-deploy validate: warning: {NUM - 20} image(s) in {folders / 'flat'} are not listed in "
                     "some.csv and are skipped, e.g. img_0020.png"], captured.err
    assert "accuracy on 20 images" in captured.out


def test_validate_and_quantize_read_the_embedded_sample(onnx_model, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(onnx_model), "--calib", "embedded", "--num", "32", "--method", "minmax",
                 "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_calibration"] == 32
    assert main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", "embedded", "--num", "100",
                 "--artifacts", str(out), "--json", str(tmp_path / "v.json"), "--no-progress", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["reference"]["num_images"] == 100


def test_labels_outside_the_model_are_a_one_line_error(onnx_model, tmp_path, capsys):
    """Where no class list can check a label (an .npz, a model without class names), scoring does."""
    images = load_split("val")[0][:8]
    np.savez(tmp_path / "d.npz", images=images, labels=np.full(8, 10))
    rc = main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", str(tmp_path / "d.npz"),
               "--artifacts", str(onnx_model), "--no-progress"])
    err = capsys.readouterr().err.strip()
    # the .npz reader refuses it first, naming the file (the scoring check is the fallback for other sources)
    assert rc == 2 and "\n" not in err and err.startswith("sa-deploy validate: error: "), err
    assert "d.npz" in err and "holds class 10" in err and "10 classes" in err, err


def test_no_development_folder_is_looked_for(no_default_data, monkeypatch, folders, tmp_path):
    """A CIFAR-10 copy in ../shared/data/cifar10 (beside the project or the working directory) exists only in
    development: the package neither looks for it nor names it (issue 26); only --data and $SA_DEPLOY_DATA count."""
    for base in (tmp_path / "shared", tmp_path / "work" / "shared"):
        for sub in ("train", "val"):
            d = base / "data" / "cifar10" / sub / "airplane"
            d.mkdir(parents=True)
            (d / "x.png").write_bytes((folders / "flat" / "img_0000.png").read_bytes())
    (tmp_path / "work").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "work")
    data = resolve_labeled_data()
    assert data.embedded and data.origin == "no --data given, $SA_DEPLOY_DATA unset"
    assert resolve.default_data_dir() is None
    assert not hasattr(resolve, "development_copy")
    resolver = [ROOT / "sa_deploy" / "plan.py", *(ROOT / "sa_deploy" / "data").rglob("*.py")]
    assert not [p for p in resolver if re.search(r"""shared/data|['"]shared['"]""", p.read_text())]
