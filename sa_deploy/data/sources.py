"""Image sources for calibration, evaluation and training: the one type every layout implements (``Source``).

Layouts (data.resolve.open_images decides which one a path or object is, nowhere else): class folders and a flat
folder (``ImageSource``; with a labels file, data.labels lists its files), an .npz (``NpzSource``), arrays in memory
(``ArraySource``: the Python API's layout, and generated inputs) and the embedded sample (data.sample.EmbeddedSource).

Every source has the same interface (``Source``): ``load()`` reads the images once and caches them, ``batches()``
serves normalized NCHW float32 inputs with their labels, ``len()``, ``labeled``, ``class_names``, ``skipped``,
``fingerprint()`` (a hash of exactly the inputs ``batches()`` serves: the same pixels under the same preprocessing
give the same fingerprint in every layout) and a human ``str()``. Sources are re-iterable: each ``batches()`` call
starts from the beginning (unlike onnxruntime's stateful CalibrationDataReader, which is adapted on top of this in
``calibration.reader``)."""
from __future__ import annotations

import hashlib
import random
import stat
import warnings
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

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
    """The one image-source type: what calibration (calibration.reader, calibration.int8), evaluation
    (validate.accuracy), sensitivity and ``sa-deploy run`` read, whatever the layout.

    ``load()`` reads (decodes, preprocesses) all its images once and caches them, so a caller can read a source up
    front (``sa-deploy run`` does, before it writes anything) and later calls cost nothing; ``batches()`` serves them
    as normalized NCHW float32 inputs and labels (-1 = unlabeled); ``labeled``: every sample has a label;
    ``class_names``: the names of the label indices where the layout knows them; ``skipped``: files that could not
    be read; ``fingerprint()``: identifies the inputs served; ``str()``: what the images are, for people."""

    class_names: tuple[str, ...] = ()
    skipped: list[Path]

    @abstractmethod
    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Reads the images now (once; cached) and returns them as the source holds them, with labels (N,) int64:
        (N,H,W,3) uint8 after resize/center-crop for decoded images (DecodedImages), (N,3,H,W) float32 inputs for
        arrays (ArraySource, NpzSource)."""

    @abstractmethod
    def __str__(self) -> str:
        """What these images are (where from, how many), for messages and reports; reads no image."""

    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        """What ``load()`` returns, without its user-facing side effects (warnings); for ``fingerprint()``."""
        return self.load()

    def _inputs(self, held: np.ndarray) -> np.ndarray:
        """Model inputs (N,3,H,W) float32 from a slice of what the source holds (``load()[0]``)."""
        return held

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(N,3,H,W) float32 normalized inputs and labels (N,) int64; restartable."""
        held, labels = self.load()
        for i in range(0, len(held), batch_size):
            yield self._inputs(held[i:i + batch_size]), labels[i:i + batch_size]

    def fingerprint(self) -> str:
        """Identifies the exact inputs served (for calibration caches and the INT8 file's metadata): a hash of the
        float32 inputs ``batches()`` serves, in order, so the preprocessing is part of it and the layout is not
        (class folders, a flat folder, an .npz or arrays holding the same pixels in the same order agree). Labels
        are not part of it: calibration does not read them. Reads the images (once; cached)."""
        held, _ = self._held()
        h = hashlib.sha256(f"sa-deploy inputs float32 NCHW x{len(held)}".encode())
        for i in range(0, len(held), 256):
            h.update(np.ascontiguousarray(self._inputs(held[i:i + 256]), dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.load()[1])

    @property
    def labeled(self) -> bool:
        return bool((self.load()[1] >= 0).all())


class DecodedImages(Source):
    """Base of sources that decode images once (``load``: (N,H,W,3) uint8 + labels) and serve them normalized with
    the model's config ``cfg``."""

    cfg: PreprocessConfig

    @abstractmethod
    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images as (N,H,W,3) uint8 after resize/center-crop, and their labels (N,) int64; cached."""

    def _inputs(self, held: np.ndarray) -> np.ndarray:
        return normalize(held, self.cfg)


class ImageSource(DecodedImages):
    """Labeled (or flat) image folder, preprocessed with the model's own config.

    Unreadable files are skipped and counted (``skipped``) with one warning; if none is readable it is an error.
    """

    def __init__(self, root: str | Path, cfg: PreprocessConfig, num: int | None = None, seed: int = 0,
                 files: list[LabeledFile] | None = None, class_names: tuple[str, ...] = (),
                 labels_file: str | Path | None = None) -> None:
        """``files`` (with ``class_names``): an explicit listing of ``root`` (e.g. from ``labels_file``, see
        data.labels) instead of its class sub-folders."""
        if files is None:
            all_files, self.class_names = list_image_folder(root)
            self._labeled = bool(self.class_names)
        else:
            all_files, self.class_names = list(files), tuple(class_names)
            self._labeled = bool(all_files) and all(f.label >= 0 for f in all_files)
        self.root = Path(root)
        self.labels_file = Path(labels_file) if labels_file is not None else None
        self.cfg = cfg
        self.files = sample_stratified(all_files, num, seed)
        self.seed = seed
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._warned = False
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.load()[0])

    def __str__(self) -> str:
        if self.labels_file is not None:
            how = f"labels from {self.labels_file}"
        elif self._labeled:
            how = f"{len(self.class_names)} class folders"
        else:
            how = "flat, unlabeled"
        return f"{self.root} ({len(self.files)} image files, {how})"

    @property
    def labeled(self) -> bool:
        return self._labeled

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images as (N,H,W,3) uint8 and their labels (N,) int64; decoded once, then cached. The first call
        warns once when files were skipped."""
        data = self._decode(progress)
        if self.skipped and not self._warned:
            self._warned = True
            warnings.warn(f"skipped {len(self.skipped)} unreadable image(s) in {self.root}, "
                          f"e.g. {self.skipped[0].name}", stacklevel=2)
        return data

    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        return self._decode()

    def _decode(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            images, labels, skipped = [], [], []
            files = self.files
            if progress:
                from tqdm import tqdm
                files = tqdm(files, desc=f"reading {self.root.name}", unit="img", leave=False)
            for f in files:
                arr = _read(f.path, self.cfg)
                if arr is None:
                    skipped.append(f.path)
                    continue
                images.append(arr)
                labels.append(f.label)
            self.skipped = skipped
            if not images:
                self._warned = True
                if skipped:
                    warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {self.root}, "
                                  f"e.g. {skipped[0].name}", stacklevel=3)
                raise DataSourceError(f"none of the {len(self.files)} image files in {self.root} could be read")
            self._cache = (np.stack(images), np.asarray(labels, dtype=np.int64))
        return self._cache


def _labels_or_unlabeled(labels: np.ndarray | None, count: int) -> np.ndarray:
    return np.asarray(labels, np.int64) if labels is not None else np.full(count, -1, np.int64)


class ArraySource(Source):
    """Samples held as arrays: the Python API's ``arrays`` layout, generated inputs, and the base of NpzSource.

    ``inputs`` (N,3,H,W) float: model inputs, used as they are; or ``images`` (N,H,W,3) uint8 pixels: resized,
    center-cropped and normalized with the model's config on ``load()``, exactly as image files are; optional
    ``labels`` (N,) (-1 = unlabeled). ``ArraySource(batches, labels)``: input batches as they are;
    ``ArraySource.from_arrays({"images"|"inputs": x, "labels": y}, cfg, num)``: checked as an .npz's arrays are.
    ``load()`` returns (N,3,H,W) float32 inputs."""

    def __init__(self, batches: list[np.ndarray], labels: np.ndarray | None = None) -> None:
        if not batches:
            raise DataSourceError("no calibration batches given")
        inputs = np.concatenate([np.asarray(b, np.float32) for b in batches])
        self._set("arrays", None, "inputs", inputs, None if labels is None else np.asarray(labels, np.int64))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], cfg: PreprocessConfig, num: int | None = None,
                    where: str = "arrays") -> ArraySource:
        """A source over ``arrays`` (keys as in an .npz: ``images`` or ``inputs``, optional ``labels``), checked
        like an .npz (one DataSourceError naming ``where``); the first ``num`` samples."""
        self = cls.__new__(cls)
        self._set(where, cfg, *_check_arrays({k: np.asarray(v) for k, v in arrays.items()}, cfg, where, num))
        return self

    def _set(self, where: str, cfg: PreprocessConfig | None, key: str, x: np.ndarray,
             labels: np.ndarray | None) -> None:
        self.where = where
        self.cfg = cfg
        self.skipped: list[Path] = []
        self._key = key
        self._raw = x
        self._raw_labels = _labels_or_unlabeled(labels, len(x))
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self.class_names: tuple[str, ...] = tuple(cfg.class_names) if cfg is not None and labels is not None \
            else ()

    def __len__(self) -> int:
        return len(self._raw)

    def __str__(self) -> str:
        what = "uint8 images" if self._key == "images" else "float inputs"
        return f"{self.where} ({len(self)} {what}, {'labeled' if self.labeled else 'unlabeled'})"

    @property
    def labeled(self) -> bool:
        return bool((self._raw_labels >= 0).all())

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The samples as (N,3,H,W) float32 inputs (``images`` resized, center-cropped and normalized with the
        model's config; ``inputs`` as they are) and labels (N,) int64; computed once, then cached."""
        if self._cache is None:
            x = self._raw
            if self._key == "images":
                assert self.cfg is not None
                crops = [resize_crop(Image.fromarray(im.astype(np.uint8)), self.cfg) for im in x]
                x = normalize(np.stack(crops), self.cfg)
            self._cache = (np.ascontiguousarray(x, dtype=np.float32), self._raw_labels)
        return self._cache


class NpzSource(ArraySource):
    """Arrays from an .npz: ``images`` (N,H,W,3) uint8 (preprocessed here) or ``inputs`` (N,3,H,W float32)
    (used as they are); optional ``labels`` (N,). The file is read and checked when the source is made (a bad
    .npz is an error there); ``load()`` preprocesses the first ``num`` samples once and caches them."""

    def __init__(self, path: str | Path, cfg: PreprocessConfig, num: int | None = None) -> None:
        self.root = Path(path)
        self._set(str(self.root), cfg, *_check_arrays(read_npz(self.root), cfg, str(self.root), num))


def _check_arrays(arrays: Mapping[str, np.ndarray], cfg: PreprocessConfig, where: str,
                  num: int | None) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(key, the first ``num`` samples, their labels or None) of an .npz's (or the API's) arrays, each checked:
    one DataSourceError naming ``where`` and the array."""
    if "inputs" in arrays:
        x = arrays["inputs"]
        want = (3, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or x.shape[1:] != want:
            raise DataSourceError(f"{where}: 'inputs' has shape {x.shape}, expected (N, {want[0]}, "
                                  f"{want[1]}, {want[2]})")
        if x.dtype.kind not in "fiu":
            raise DataSourceError(f"{where}: 'inputs' has dtype {x.dtype}, expected float32")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataSourceError(f"{where}: 'inputs' holds NaN/Inf values")
        key = "inputs"
    elif "images" in arrays:
        x = arrays["images"]
        if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape[1:3]:
            raise DataSourceError(f"{where}: 'images' has shape {x.shape}, expected (N, H, W, 3) uint8")
        if x.dtype != np.uint8 and not (x.dtype.kind in "iu" and x.size and x.min() >= 0 and x.max() <= 255):
            raise DataSourceError(f"{where}: 'images' has dtype {x.dtype}" + (
                " with values outside 0..255" if x.dtype.kind in "iu" else "") + "; expected uint8 pixels "
                "(preprocessed floats go under 'inputs', shape (N, 3, H, W))")
        key = "images"
    else:
        raise DataSourceError(f"{where} has neither 'images' (N,H,W,3 uint8) nor 'inputs' (N,3,H,W float32)")
    n = len(x) if num is None else min(num, len(x))
    if n == 0:
        raise DataSourceError(f"{where} holds no samples")
    labels = arrays.get("labels")
    if labels is not None:
        labels = _check_labels(where, labels, len(x), len(cfg.class_names))[:n]
    return key, x[:n], labels


def _check_labels(path: Path | str, labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
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

