"""Image sources for calibration, evaluation and training: an image folder (class sub-folders or flat), an .npz,
the embedded sample (data.sample) or arrays already in memory.

Every source has the same interface (``Source``): ``load()`` reads the images once and caches them, ``batches()``
serves normalized NCHW float32 inputs with their labels, ``len()``, ``labeled``, ``class_names``, ``skipped`` and
``fingerprint()``. Sources are re-iterable: each ``batches()`` call starts from the beginning (unlike onnxruntime's
stateful CalibrationDataReader, which is adapted on top of this in ``calibration.int8``)."""
from __future__ import annotations

import hashlib
import os
import random
import stat
import warnings
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from sa_deploy.data.preprocess import normalize, resize_crop
from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
MAX_NPZ_BYTES = 4 << 30  # what the arrays of one .npz may expand to (a zip of zeros compresses ~1000x)


class DataSourceError(SADeployError):
    """A calibration/evaluation source that cannot be used (missing, empty, no readable image)."""


@dataclass(frozen=True)
class LabeledFile:
    path: Path
    label: int  # -1 when the folder is flat (unlabeled)


def list_image_folder(root: str | Path) -> tuple[list[LabeledFile], tuple[str, ...]]:
    """Files of an image folder: ``root/<class>/*.jpg`` (labels = sorted class names) or flat ``root/*.jpg``."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"image folder not found: {root} (pass a directory of images or of class sub-folders)")
    class_dirs = sorted(p for p in _entries(root) if p.is_dir() and not p.name.startswith("."))
    files: list[LabeledFile] = []
    classes: tuple[str, ...] = ()
    if class_dirs:
        classes = tuple(d.name for d in class_dirs)
        for label, d in enumerate(class_dirs):
            # by name only: entries that are not regular files (FIFOs, broken links) are skipped, unopened, by _read
            files += [LabeledFile(p, label) for p in sorted(_entries(d)) if p.suffix.lower() in IMAGE_SUFFIXES]
    files += [LabeledFile(p, -1) for p in sorted(_entries(root))
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataSourceError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files, "
                              "directly or one sub-folder per class)")
    return files, classes


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise DataSourceError(f"cannot list {folder}: {exc.strerror or exc}") from None


def sample_stratified(files: list[LabeledFile], num: int | None, seed: int = 0) -> list[LabeledFile]:
    """Deterministic, class-balanced sample: shuffle each class with ``seed``, then take round-robin."""
    if num is None or num >= len(files):
        return list(files)
    by_label: dict[int, list[LabeledFile]] = {}
    for f in files:
        by_label.setdefault(f.label, []).append(f)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        queues.append(group)
    picked: list[LabeledFile] = []
    i = 0
    while len(picked) < num:
        for q in queues:
            if i < len(q) and len(picked) < num:
                picked.append(q[i])
        i += 1
    return picked


def _read(path: Path, cfg: PreprocessConfig) -> np.ndarray | None:
    """One image, resized and cropped; None when it cannot be used. Only regular files are opened (a FIFO would
    block, a broken or looping link has no content), under PIL's own decompression-bomb limit
    (Image.MAX_IMAGE_PIXELS: its warning is an error here), and an image whose resize would exceed that limit
    (an extreme aspect ratio) is not resized."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                limit = Image.MAX_IMAGE_PIXELS
                scale = cfg.resize / max(1, min(w, h))
                if limit and w * h * max(scale, 1.0) ** 2 > limit:
                    return None
                img.load()
                return resize_crop(img, cfg)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError, zlib.error,
            MemoryError):
        return None  # PIL's decoders raise all of these on damaged files


class Source(ABC):
    """What every source offers. ``load()`` reads (decodes, preprocesses) all its images once and caches them, so a
    caller can read a source up front (``sa-deploy run`` does, before it writes anything) and later calls cost
    nothing; ``batches()`` serves them as normalized NCHW float32 inputs and labels (-1 = unlabeled)."""

    class_names: tuple[str, ...] = ()
    skipped: list[Path]

    @abstractmethod
    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Reads the images now (once; cached) and returns them as the source holds them, with labels (N,) int64:
        (N,H,W,3) uint8 after resize/center-crop for decoded images (DecodedImages), (N,3,H,W) float32 inputs for
        arrays (ArraySource, NpzSource)."""

    @abstractmethod
    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(N,3,H,W) float32 normalized inputs and labels (N,) int64; restartable."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the exact data seen (and its preprocessing), for calibration caches."""

    def __len__(self) -> int:
        return len(self.load()[1])

    @property
    def labeled(self) -> bool:
        return bool((self.load()[1] >= 0).all())


class DecodedImages(Source):
    """Base of sources that decode images once (``load``: (N,H,W,3) uint8 + labels) and serve normalized batches."""

    cfg: PreprocessConfig

    @abstractmethod
    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images as (N,H,W,3) uint8 after resize/center-crop, and their labels (N,) int64; cached."""

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(N,3,H,W) float32 normalized inputs and labels; restartable."""
        images, labels = self.load()
        for i in range(0, len(images), batch_size):
            yield normalize(images[i:i + batch_size], self.cfg), labels[i:i + batch_size]


class ImageSource(DecodedImages):
    """Labeled (or flat) image folder, preprocessed with the model's own config.

    Unreadable files are skipped and counted (``skipped``) with one warning; if none is readable it is an error.
    """

    def __init__(self, root: str | Path, cfg: PreprocessConfig, num: int | None = None, seed: int = 0,
                 files: list[LabeledFile] | None = None, class_names: tuple[str, ...] = ()) -> None:
        """``files`` (with ``class_names``): an explicit listing of ``root`` (e.g. from a labels file, see
        data.labels) instead of its class sub-folders."""
        if files is None:
            all_files, self.class_names = list_image_folder(root)
            self._labeled = bool(self.class_names)
        else:
            all_files, self.class_names = list(files), tuple(class_names)
            self._labeled = bool(all_files) and all(f.label >= 0 for f in all_files)
        self.root = Path(root)
        self.cfg = cfg
        self.files = sample_stratified(all_files, num, seed)
        self.seed = seed
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.load()[0])

    @property
    def labeled(self) -> bool:
        return self._labeled

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images as (N,H,W,3) uint8 and their labels (N,) int64; decoded once, then cached."""
        if self._cache is None:
            images, labels = [], []
            files = self.files
            if progress:
                from tqdm import tqdm
                files = tqdm(files, desc=f"reading {self.root.name}", unit="img", leave=False)
            for f in files:
                arr = _read(f.path, self.cfg)
                if arr is None:
                    self.skipped.append(f.path)
                    continue
                images.append(arr)
                labels.append(f.label)
            if self.skipped:
                warnings.warn(f"skipped {len(self.skipped)} unreadable image(s) in {self.root}, "
                              f"e.g. {self.skipped[0].name}", stacklevel=2)
            if not images:
                raise DataSourceError(f"none of the {len(self.files)} image files in {self.root} could be read")
            self._cache = (np.stack(images), np.asarray(labels, dtype=np.int64))
        return self._cache

    def fingerprint(self) -> str:
        """Identifies the exact data seen (file names, sizes, mtimes, preprocessing) for calibration caches."""
        h = hashlib.sha256(self.cfg.to_json().encode())
        for f in self.files:
            try:
                st = f.path.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # a broken or looping link: identified by its name alone
                size, mtime = -1, -1
            # file names as bytes: names that are not valid UTF-8 (surrogate-escaped) hash too
            h.update(os.fsencode(f.path.relative_to(self.root)) + f"|{size}|{mtime}|{f.label}".encode())
        return h.hexdigest()[:16]


class ArraySource(Source):
    """Already-preprocessed NCHW float32 inputs held in memory, with labels (-1 = unlabeled); the base of NpzSource
    and what generated inputs for ImageNet-size models are wrapped in. ``load()`` returns them as they are."""

    def __init__(self, batches: list[np.ndarray], labels: np.ndarray | None = None) -> None:
        if not batches:
            raise DataSourceError("no calibration batches given")
        inputs = np.concatenate([np.asarray(b, np.float32) for b in batches])
        self._cache: tuple[np.ndarray, np.ndarray] | None = (inputs, _labels_or_unlabeled(labels, len(inputs)))
        self.class_names: tuple[str, ...] = ()
        self.skipped: list[Path] = []

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The inputs (N,3,H,W) float32 and labels (N,) int64."""
        assert self._cache is not None
        return self._cache

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        inputs, labels = self.load()
        for i in range(0, len(inputs), batch_size):
            yield inputs[i:i + batch_size], labels[i:i + batch_size]

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.load()[0]).tobytes()).hexdigest()[:16]


def _labels_or_unlabeled(labels: np.ndarray | None, count: int) -> np.ndarray:
    return np.asarray(labels, np.int64) if labels is not None else np.full(count, -1, np.int64)


class NpzSource(ArraySource):
    """Arrays from an .npz: ``images`` (N,H,W,3) uint8 (preprocessed here) or ``inputs`` (N,3,H,W float32)
    (used as they are); optional ``labels`` (N,). The file is read and checked when the source is made (a bad
    .npz is an error there); ``load()`` preprocesses the first ``num`` samples once and caches them."""

    def __init__(self, path: str | Path, cfg: PreprocessConfig, num: int | None = None) -> None:
        self.root = Path(path)
        self.cfg = cfg
        self.skipped = []
        arrays = read_npz(self.root)
        if "inputs" in arrays:
            x = arrays["inputs"]
            want = (3, cfg.input_size, cfg.input_size)
            if x.ndim != 4 or x.shape[1:] != want:
                raise DataSourceError(f"{self.root}: 'inputs' has shape {x.shape}, expected (N, {want[0]}, "
                                      f"{want[1]}, {want[2]})")
            if x.dtype.kind not in "fiu":
                raise DataSourceError(f"{self.root}: 'inputs' has dtype {x.dtype}, expected float32")
            x = x.astype(np.float32)
            if not np.isfinite(x).all():
                raise DataSourceError(f"{self.root}: 'inputs' holds NaN/Inf values")
            self._key = "inputs"
        elif "images" in arrays:
            x = arrays["images"]
            if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape[1:3]:
                raise DataSourceError(f"{self.root}: 'images' has shape {x.shape}, expected (N, H, W, 3) uint8")
            if x.dtype != np.uint8 and not (x.dtype.kind in "iu" and x.size and x.min() >= 0 and x.max() <= 255):
                raise DataSourceError(f"{self.root}: 'images' has dtype {x.dtype}" + (
                    " with values outside 0..255" if x.dtype.kind in "iu" else "") + "; expected uint8 pixels "
                    "(preprocessed floats go under 'inputs', shape (N, 3, H, W))")
            self._key = "images"
        else:
            raise DataSourceError(f"{self.root} has neither 'images' (N,H,W,3 uint8) nor 'inputs' (N,3,H,W float32)")
        n = len(x) if num is None else min(num, len(x))
        if n == 0:
            raise DataSourceError(f"{self.root} holds no samples")
        labels = arrays.get("labels")
        if labels is not None:
            labels = _check_labels(self.root, labels, len(x), len(cfg.class_names))[:n]
        self._raw = x[:n]
        self._raw_labels = _labels_or_unlabeled(labels, n)
        self._cache = None
        self.class_names = tuple(cfg.class_names) if labels is not None else ()

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def labeled(self) -> bool:
        return bool((self._raw_labels >= 0).all())

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The samples as (N,3,H,W) float32 inputs (``images`` resized, center-cropped and normalized with the
        model's config; ``inputs`` as they are) and labels (N,) int64; computed once, then cached."""
        if self._cache is None:
            x = self._raw
            if self._key == "images":
                crops = [resize_crop(Image.fromarray(im.astype(np.uint8)), self.cfg) for im in x]
                x = normalize(np.stack(crops), self.cfg)
            self._cache = (x, self._raw_labels)
        return self._cache

    def fingerprint(self) -> str:
        # the preprocessing is part of what was calibrated on
        h = hashlib.sha256(self.cfg.to_json().encode())
        h.update(self._key.encode())
        h.update(np.ascontiguousarray(self._raw).tobytes())
        h.update(self._raw_labels.tobytes())
        return h.hexdigest()[:16]


def _check_labels(path: Path, labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """Labels of an .npz: one non-negative integer per sample (and below the class count when it is known)."""
    if labels.ndim != 1 or len(labels) != count:
        raise DataSourceError(f"{path}: 'labels' has shape {labels.shape}, expected ({count},): one label per "
                              "sample")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.isfinite(labels).all()
                                              and (labels == np.round(labels)).all()):
        raise DataSourceError(f"{path}: 'labels' has dtype {labels.dtype}; expected integer class indices")
    if count and labels.min() < 0:
        raise DataSourceError(f"{path}: 'labels' holds negative values ({int(labels.min())})")
    if count and num_classes and labels.max() >= num_classes:
        raise DataSourceError(f"{path}: 'labels' holds class {int(labels.max())}, the model has {num_classes} "
                              "classes")
    return labels.astype(np.int64)


def read_npz(path: Path, keys: tuple[str, ...] = ("images", "inputs", "labels")) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz, checked before any is loaded: a zip whose members' .npy headers declare
    plain dtypes (no objects: no pickles) and no more data than the member holds, MAX_NPZ_BYTES in all (a
    decompression bomb is refused unread)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataSourceError(f"cannot read {path} as an .npz (zip of .npy arrays): {type(exc).__name__}") from None
    total = 0
    with zf:
        members = {n[:-4]: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy") and n[:-4] in keys}
        for key, info in members.items():
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    reader = {(1, 0): np.lib.format.read_array_header_1_0,
                              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if reader is None:
                        raise ValueError(f".npy format {version} is not supported")
                    shape, _, dtype = reader(f)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataSourceError(f"{path}: array '{key}' is damaged ({str(exc)[:100]})") from None
            if dtype.hasobject:
                raise DataSourceError(f"{path}: array '{key}' holds Python objects; sa-deploy reads .npz without "
                                      "pickles (save numeric arrays)")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                raise DataSourceError(f"{path}: array '{key}' declares {nbytes} bytes but holds {info.file_size} "
                                      "(truncated or damaged)")
            total += nbytes
        if total > MAX_NPZ_BYTES:
            raise DataSourceError(f"{path}: its arrays expand to {total / 2**30:.1f} GiB, more than the "
                                  f"{MAX_NPZ_BYTES / 2**30:.0f} GiB sa-deploy reads from one .npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in members}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataSourceError(f"cannot read {path} as .npz without pickles: {str(exc)[:120]}") from None

