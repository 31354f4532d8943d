"""Image sources for calibration, evaluation and training: an image folder (class sub-folders or flat) or an .npz.

Sources are re-iterable: each ``batches()`` call starts from the beginning (unlike onnxruntime's stateful
CalibrationDataReader, which is adapted on top of this in ``calibration.int8``)."""
from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from sa_deploy.data.preprocess import normalize, resize_crop
from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


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
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[LabeledFile] = []
    classes: tuple[str, ...] = ()
    if class_dirs:
        classes = tuple(d.name for d in class_dirs)
        for label, d in enumerate(class_dirs):
            files += [LabeledFile(p, label) for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    files += [LabeledFile(p, -1) for p in sorted(root.iterdir())
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataSourceError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files, "
                              "directly or one sub-folder per class)")
    return files, classes


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
    try:
        with Image.open(path) as img:
            img.load()
            return resize_crop(img, cfg)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


class ImageSource:
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

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(N,3,H,W) float32 normalized inputs and labels; restartable."""
        images, labels = self.load()
        for i in range(0, len(images), batch_size):
            yield normalize(images[i:i + batch_size], self.cfg), labels[i:i + batch_size]

    def fingerprint(self) -> str:
        """Identifies the exact data seen (file names, sizes, mtimes, preprocessing) for calibration caches."""
        h = hashlib.sha256(self.cfg.to_json().encode())
        for f in self.files:
            st = f.path.stat()
            h.update(f"{f.path.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}|{f.label}".encode())
        return h.hexdigest()[:16]


class ArraySource:
    """Already-preprocessed NCHW float32 inputs held in memory, with labels (-1 = unlabeled); the base of NpzSource
    and what generated inputs for ImageNet-size models are wrapped in."""

    def __init__(self, batches: list[np.ndarray], labels: np.ndarray | None = None) -> None:
        if not batches:
            raise DataSourceError("no calibration batches given")
        self._set(np.concatenate([np.asarray(b, np.float32) for b in batches]), labels)
        self.class_names: tuple[str, ...] = ()

    def _set(self, inputs: np.ndarray, labels: np.ndarray | None) -> None:
        self._inputs = inputs
        self._labels = (np.asarray(labels, np.int64) if labels is not None else np.full(len(inputs), -1, np.int64))
        self.skipped: list[Path] = []

    @property
    def labeled(self) -> bool:
        return bool((self._labels >= 0).all())

    def __len__(self) -> int:
        return len(self._inputs)

    def batches(self, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(self._inputs), batch_size):
            yield self._inputs[i:i + batch_size], self._labels[i:i + batch_size]

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self._inputs).tobytes()).hexdigest()[:16]


class NpzSource(ArraySource):
    """Arrays from an .npz: ``images`` (N,H,W,3) uint8 (preprocessed here) or ``inputs`` (N,3,H,W float32)
    (used as they are); optional ``labels`` (N,)."""

    def __init__(self, path: str | Path, cfg: PreprocessConfig, num: int | None = None) -> None:
        self.root = Path(path)
        self.cfg = cfg
        try:
            with np.load(self.root, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"cannot read {self.root} as .npz without pickles: {exc}") from None
        if "inputs" in arrays:
            x = arrays["inputs"].astype(np.float32)
            want = (3, cfg.input_size, cfg.input_size)
            if x.ndim != 4 or x.shape[1:] != want:
                raise DataSourceError(f"{self.root}: 'inputs' has shape {x.shape}, expected (N, {want[0]}, "
                                      f"{want[1]}, {want[2]})")
        elif "images" in arrays:
            imgs = arrays["images"]
            if imgs.ndim != 4 or imgs.shape[-1] != 3:
                raise DataSourceError(f"{self.root}: 'images' has shape {imgs.shape}, expected (N, H, W, 3) uint8")
            crops = [resize_crop(Image.fromarray(im.astype(np.uint8)), cfg) for im in imgs]
            x = normalize(np.stack(crops), cfg)
        else:
            raise DataSourceError(f"{self.root} has neither 'images' (N,H,W,3 uint8) nor 'inputs' (N,3,H,W float32)")
        n = len(x) if num is None else min(num, len(x))
        if n == 0:
            raise DataSourceError(f"{self.root} holds no samples")
        labels = arrays.get("labels")
        self._set(x[:n], labels[:n] if labels is not None else None)
        self.class_names = tuple(cfg.class_names) if labels is not None else ()

    def fingerprint(self) -> str:
        # the preprocessing is part of what was calibrated on
        h = hashlib.sha256(self.cfg.to_json().encode())
        h.update(np.ascontiguousarray(self._inputs).tobytes())
        h.update(self._labels.tobytes())
        return h.hexdigest()[:16]
