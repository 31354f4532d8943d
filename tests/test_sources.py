"""Calibration/evaluation sources: colour-mode conversion, user errors, corrupt-file skipping, reader adapter."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sa_deploy.calibration.reader import make_reader
from sa_deploy.cli import main
from sa_deploy.data.preprocess import to_rgb
from sa_deploy.data.resolve import open_images
from sa_deploy.data.sources import DataSourceError, ImageSource, NpzSource
from sa_deploy.models.preprocessing import CIFAR10_32


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_colour_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode != "I;16" else rgb.convert("L").convert("I;16")
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (32, 32)
    # round trip through a file, as the sources read it
    (tmp_path / "c0").mkdir()
    suffix = ".png" if mode not in ("CMYK",) else ".jpg"
    img.save(tmp_path / "c0" / f"x{suffix}")
    x, y = next(ImageSource(tmp_path, CIFAR10_32).batches(4))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and np.isfinite(x).all() and y.tolist() == [0]


def test_rgba_alpha_dropped_over_black():
    img = Image.new("RGBA", (4, 4), (200, 100, 50, 0))
    assert to_rgb(img).getpixel((0, 0)) == (200, 100, 50)  # PIL drops alpha; colour kept


def _write_images(folder, n, label_dirs=("a", "b")):
    rs = np.random.RandomState(1)
    for d in label_dirs:
        (folder / d).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rs.randint(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / d / f"{i}.jpg")


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    _write_images(tmp_path, 3)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "b" / "empty.png").write_bytes(b"")
    src = ImageSource(tmp_path, CIFAR10_32)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        assert len(src) == 6
    assert sorted(p.name for p in src.skipped) == ["broken.jpg", "empty.png"]
    labels = np.concatenate([y for _, y in src.batches(4)])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_only_corrupt_files_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(DataSourceError, match="could be read"):
        ImageSource(tmp_path, CIFAR10_32).load()


@pytest.fixture(scope="module")
def small_onnx(exported_cifar):
    return exported_cifar["fold"]  # the session's shared export (read only here: quantize writes to --out)


@pytest.mark.parametrize("layout", ["empty", "no-images", "empty-classes", "missing", "bad-npz"])
def test_source_user_errors_one_line_through_cli(tmp_path, capsys, layout, small_onnx):
    """quantize --calib on an unusable folder: one-line error, non-zero exit, no traceback, no output file."""
    onnx_path = small_onnx
    calib = tmp_path / "calib"
    if layout == "empty":
        calib.mkdir()
    elif layout == "no-images":
        calib.mkdir()
        (calib / "notes.txt").write_text("hello")
        (calib / "data.csv").write_text("1,2")
    elif layout == "empty-classes":
        (calib / "cat").mkdir(parents=True)
        (calib / "dog").mkdir()
    elif layout == "bad-npz":
        calib = tmp_path / "calib.npz"
        calib.write_bytes(b"PK not really")
    out = tmp_path / "q.onnx"
    rc = main(["quantize", str(onnx_path), "--calib", str(calib), "--out", str(out), "--method", "minmax"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("sa-deploy quantize: error:") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists()


def test_npz_source_and_reader_are_reiterable(tmp_path):
    rs = np.random.RandomState(0)
    np.savez(tmp_path / "d.npz", images=rs.randint(0, 255, (10, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(10) % 3)
    src = open_images(tmp_path / "d.npz", CIFAR10_32, num=7)
    assert isinstance(src, NpzSource) and len(src) == 7 and src.labeled
    first = [f["input"] for f in make_reader(src, "input", 3)]
    second = [f["input"] for f in make_reader(src, "input", 3)]  # a fresh reader starts from the beginning
    assert [a.shape[0] for a in first] == [3, 3, 1]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert len(make_reader(src, "input", 3)) == 3
    fp = src.fingerprint()
    assert fp == open_images(tmp_path / "d.npz", CIFAR10_32, num=7).fingerprint()
    assert fp != open_images(tmp_path / "d.npz", CIFAR10_32, num=6).fingerprint()


def test_every_source_has_the_same_interface(tmp_path):
    """load() reads once and caches; batches() serves normalized NCHW floats; len/labeled/fingerprint (issue 26)."""
    from sa_deploy.data.sample import EmbeddedSource
    from sa_deploy.data.sources import ArraySource, Source

    _write_images(tmp_path / "folder", 2)
    rs = np.random.RandomState(2)
    images = rs.randint(0, 255, (5, 40, 36, 3), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", images=images, labels=np.arange(5) % 2)
    np.savez(tmp_path / "in.npz", inputs=rs.randn(3, 3, 32, 32).astype(np.float32))
    sources = {"folder": open_images(tmp_path / "folder", CIFAR10_32),
               "npz images": open_images(tmp_path / "img.npz", CIFAR10_32),
               "npz inputs": open_images(tmp_path / "in.npz", CIFAR10_32),
               "embedded": EmbeddedSource("val", CIFAR10_32, num=6),
               "arrays": ArraySource([rs.randn(2, 3, 32, 32).astype(np.float32)])}
    for name, src in sources.items():
        assert isinstance(src, Source), name
        first = src.load()
        assert src.load() is first, name  # cached
        assert len(first[1]) == len(src) and first[1].dtype == np.int64, name
        x, y = next(src.batches(64))
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32) and len(x) == len(src), name
        assert src.labeled == (name not in ("npz inputs", "arrays")), name
        assert isinstance(src.fingerprint(), str) and src.skipped == [], name
    # an .npz of uint8 images is preprocessed exactly like the same images read from files
    from sa_deploy.data.preprocess import normalize, resize_crop

    want = normalize(np.stack([resize_crop(Image.fromarray(im), CIFAR10_32) for im in images]), CIFAR10_32)
    np.testing.assert_array_equal(sources["npz images"].load()[0], want)
