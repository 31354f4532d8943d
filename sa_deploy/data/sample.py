"""The embedded sample: real CIFAR-10 images shipped inside the package (sa_deploy/data/embedded/), so that the
main job and the tests run where no image folder exists. What the files are and how they were chosen: the card
next to them (``cifar10_sample.card.json``), rebuilt with ``scripts/build_embedded_sample.py``.

The .npz holds, per split (``val`` from CIFAR-10's test split, ``calib`` from its training split):
``<split>_images`` (N,32,32,3) uint8 RGB, ``<split>_labels`` (N,) and ``<split>_files`` (the source file names),
plus ``class_names``. Images go through the same preprocessing as image files (data.preprocess: resize,
center-crop, normalize with the model's PreprocessConfig), so a 224x224 model can read them too."""
from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from sa_deploy.data.preprocess import resize_crop
from sa_deploy.data.sources import DataSourceError, DecodedImages, LabeledFile, sample_stratified
from sa_deploy.models.preprocessing import PreprocessConfig

SAMPLE_NAME = "cifar10_sample"
SPLITS = {"val": "validation", "calib": "calibration"}


def sample_dir() -> Path:
    return Path(str(resources.files("sa_deploy") / "data" / "embedded"))


def sample_path() -> Path:
    return sample_dir() / f"{SAMPLE_NAME}.npz"


def card_path() -> Path:
    return sample_dir() / f"{SAMPLE_NAME}.card.json"


def read_card() -> dict:
    return json.loads(card_path().read_text())


@functools.lru_cache(maxsize=2)
def _arrays(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataSourceError(f"the embedded image sample is missing from this installation ({p}): reinstall "
                              "sa-deploy, or pass --data DIR")
    with np.load(p, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_split(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(images (N,32,32,3) uint8, labels (N,) int64, source file names, class names) of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    a = _arrays(str(sample_path()))
    return (a[f"{split}_images"], a[f"{split}_labels"].astype(np.int64), tuple(a[f"{split}_files"].tolist()),
            tuple(a["class_names"].tolist()))


def split_size(split: str) -> int:
    return len(load_split(split)[1])


class EmbeddedSource(DecodedImages):
    """One split of the embedded sample as a labeled source (data.sources.Source, like a folder of class
    sub-folders): ``num`` picks a class-balanced subset with ``seed`` (sources.sample_stratified), all images by
    default; its fingerprint is that of the same images in any other layout (sources.Source.fingerprint)."""

    def __init__(self, split: str, cfg: PreprocessConfig, num: int | None = None, seed: int = 0) -> None:
        images, labels, names, self.class_names = load_split(split)
        self.split = split
        self.root = sample_path()
        self.cfg = cfg
        self.seed = seed
        index = {name: i for i, name in enumerate(names)}
        listing = [LabeledFile(Path(name), int(label)) for name, label in zip(names, labels)]
        self.files = sample_stratified(listing, num, seed)
        self._index = [index[f.path.as_posix()] for f in self.files]
        self._images, self._labels = images, labels
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self._index)

    def __str__(self) -> str:
        return f"embedded sample ({SPLITS[self.split]}, {len(self)} images)"

    @property
    def labeled(self) -> bool:
        return True

    def load(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(N,H,W,3) uint8 after resize/center-crop with the model's config, and labels (N,) int64; cached."""
        if self._cache is None:
            crops = [resize_crop(Image.fromarray(self._images[i]), self.cfg) for i in self._index]
            self._cache = (np.stack(crops), self._labels[self._index])
        return self._cache
