"""The one place that decides where images come from. No other module derives data paths.

Labeled data for a run (``resolve_labeled_data``), in this order:
1. what the user gave: ``--data DIR`` (``DIR/train`` for calibration, ``DIR/val`` for validation; with ``--labels``
   a flat ``DIR/val``, or ``DIR`` itself, plus a labels file), ``--val`` / ``--calib`` for each side;
2. ``$SA_DEPLOY_DATA`` (a folder like ``--data``, or ``embedded``);
3. the embedded sample shipped in the package (data.sample): real CIFAR-10 images, enough for calibration and an
   accuracy-drop check.
No other place is looked at: a folder that happens to sit next to the project or the working directory is never
picked up (a development checkout points ``$SA_DEPLOY_DATA`` at its CIFAR-10 copy instead).

One path given to a command (``validate --data``, ``quantize --calib``) is read by ``open_images``: a folder of
class sub-folders (or a flat folder: unlabeled), a flat folder plus a labels file (data.labels), an .npz, or
``embedded`` (the embedded sample's validation or calibration split); the Python API also passes arrays in memory
or a source. Whatever the layout, what comes back is a data.sources.Source: the one type calibration, evaluation
and sensitivity read. This module is the only one that tells layouts apart (by suffix, folder or type)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sa_deploy.data.sources import ArraySource, DataSourceError, ImageSource, NpzSource, Source
from sa_deploy.models.preprocessing import PreprocessConfig

DATA_ENV = "SA_DEPLOY_DATA"
EMBEDDED = "embedded"  # --data embedded, --calib embedded, SA_DEPLOY_DATA=embedded: the sample in the package


def default_data_dir() -> Path | None:
    """The image folder used when none is given: $SA_DEPLOY_DATA; None when it is unset or ``embedded`` (then
    labeled data comes from the embedded sample)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env and env != EMBEDDED else None


@dataclass(frozen=True)
class DataRef:
    """One set of images, not read yet. ``kind``: ``folder`` (class sub-folders, or flat = unlabeled),
    ``labeled-folder`` (flat folder + ``labels`` file), ``npz``, or ``embedded`` (``split`` of the sample)."""

    kind: str
    path: Path | None = None
    labels: Path | None = None
    split: str = "val"  # embedded: "val" or "calib"

    @property
    def embedded(self) -> bool:
        return self.kind == EMBEDDED

    @property
    def cli_value(self) -> str:
        """What to pass on the command line for these images (``--data`` / ``--calib``)."""
        return EMBEDDED if self.embedded else str(self.path)

    def __str__(self) -> str:
        if self.embedded:
            from sa_deploy.data.sample import SPLITS

            return f"the embedded sample ({SPLITS[self.split]} images)"
        return f"{self.path} (labels: {self.labels})" if self.labels else str(self.path)

    def check(self) -> None:
        """One clear error if the images (or the labels file) are not there; reads nothing else."""
        if self.embedded:
            from sa_deploy.data.sample import sample_path

            if not sample_path().is_file():
                raise DataSourceError(f"the embedded image sample is missing from this installation "
                                      f"({sample_path()}): reinstall sa-deploy, or pass --data DIR")
        elif self.kind == "npz" and not self.path.is_file():
            raise DataSourceError(f".npz file not found: {self.path}")
        elif self.kind != "npz" and not self.path.is_dir():
            raise DataSourceError(f"labeled images not found at {self.path} (pass a folder of images or of class "
                                  "sub-folders)")
        if self.labels is not None and not self.labels.is_file():
            raise DataSourceError(f"labels file not found: {self.labels}")

    def open(self, cfg: PreprocessConfig, num: int | None = None, seed: int = 0) -> Source:
        """The source of these images (data.sources.Source) preprocessed with ``cfg``; ``num``: a class-balanced
        sample (the first ``num`` of an .npz)."""
        self.check()
        if self.embedded:
            from sa_deploy.data.sample import EmbeddedSource

            return EmbeddedSource(self.split, cfg, num, seed)
        if self.kind == "npz":
            return NpzSource(self.path, cfg, num)
        if self.kind == "labeled-folder":
            from sa_deploy.data.labels import list_labeled_folder

            files = list_labeled_folder(self.path, self.labels, cfg.class_names)
            return ImageSource(self.path, cfg, num, seed, files=files, class_names=cfg.class_names,
                               labels_file=self.labels)
        return ImageSource(self.path, cfg, num, seed)


def data_ref(path: str | Path, labels: str | Path | None = None, split: str = "val") -> DataRef:
    """What a path given by the user is: ``embedded``, an .npz, a folder (+ a labels file)."""
    if str(path) == EMBEDDED:
        if labels is not None:
            raise DataSourceError("--labels describes an image folder; the embedded sample has its labels")
        return DataRef(EMBEDDED, split=split)
    p = Path(path)
    if p.suffix == ".npz":
        if labels is not None:
            raise DataSourceError(f"--labels describes an image folder; {p.name} is an .npz (put the labels in "
                                  "its 'labels' array)")
        return DataRef("npz", p)
    if labels is not None:
        return DataRef("labeled-folder", p, Path(labels))
    return DataRef("folder", p)


def open_images(data: Any, cfg: PreprocessConfig, num: int | None = None, seed: int = 0,
                labels: str | Path | None = None, split: str = "val") -> Source:
    """The source of ``data``, whatever its layout:
    - a path or ``embedded`` (see data_ref; ``split`` picks the embedded sample's validation or calibration
      images; ``labels``: the labels file of a flat folder);
    - arrays in memory (the Python API): ``images`` (N,H,W,3) uint8 or ``inputs`` (N,3,H,W) float as one array,
      an ``(array, labels)`` pair, or a mapping with the keys of an .npz (``images``/``inputs``, ``labels``);
      the first ``num`` samples, checked like an .npz;
    - a data.sources.Source, returned as it is."""
    if isinstance(data, (str, Path)):
        return data_ref(data, labels, split).open(cfg, num, seed)
    if labels is not None:
        raise DataSourceError("--labels needs an image folder as the data")
    if isinstance(data, Source):
        return data
    arrays = _as_arrays(data)
    if arrays is None:
        raise DataSourceError(f"cannot read images from a {type(data).__name__}: pass an image folder, an .npz, "
                              "`embedded`, arrays (uint8 images N,H,W,3 or float inputs N,3,H,W, optionally with "
                              "labels) or a data.sources.Source")
    return ArraySource.from_arrays(arrays, cfg, num)


def _as_arrays(data: Any) -> dict[str, Any] | None:
    """The .npz-style arrays of an in-memory ``data`` (see open_images), or None when it is not arrays."""
    if isinstance(data, Mapping):
        return dict(data) if {"images", "inputs"} & set(data) else None
    labels = None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        data, labels = data
    if not isinstance(data, np.ndarray):
        return None
    key = "inputs" if data.dtype.kind == "f" else "images"  # floats are model inputs, integers pixels
    return {key: data, **({"labels": np.asarray(labels)} if labels is not None else {})}


@dataclass(frozen=True)
class LabeledData:
    """Where a run's images come from: calibration and validation sets, and why (``origin``)."""

    val: DataRef
    calib: DataRef
    origin: str

    @property
    def embedded(self) -> bool:
        return self.val.embedded and self.calib.embedded

    def describe(self, num_val: int | None = None, num_calib: int | None = None) -> str:
        """E.g. 'embedded sample: 1000 validation / 512 calibration images' (counts default to the whole sets
        where known)."""
        if self.embedded:
            from sa_deploy.data.sample import split_size

            num_val = split_size("val") if num_val is None else num_val
            num_calib = split_size("calib") if num_calib is None else num_calib
            return f"embedded sample: {num_val} validation / {num_calib} calibration images"
        val = f"{num_val} validation images" if num_val is not None else "validation images"
        calib = f"{num_calib} calibration images" if num_calib is not None else "calibration images"
        return f"{val} from {self.val} / {calib} from {self.calib}"


def resolve_labeled_data(data: str | Path | None = None, calib: str | Path | None = None,
                         val: str | Path | None = None, labels: str | Path | None = None) -> LabeledData:
    """Calibration and validation images for a run (order in the module docstring); one clear error when
    something given is not there. Nothing is read here."""
    if labels is not None and not (data or val):
        raise DataSourceError("--labels FILE describes the images of --data DIR (or --val DIR): pass one")
    if data:
        root, origin = str(data), "given"
    elif calib and val:
        root, origin = None, "given"
    elif os.environ.get(DATA_ENV):
        root, origin = os.environ[DATA_ENV], f"${DATA_ENV}"
    else:
        root, origin = EMBEDDED, f"no --data given, ${DATA_ENV} unset"
    base_val = base_calib = None
    if root == EMBEDDED:
        base_val, base_calib = DataRef(EMBEDDED, split="val"), DataRef(EMBEDDED, split="calib")
    elif root is not None:
        r = Path(root)
        if not r.is_dir():
            raise DataSourceError(f"labeled images not found at {r}: pass --data DIR (with train/ and val/ image "
                                  f"folders) or set {DATA_ENV} (`{EMBEDDED}`: the sample inside sa-deploy)")
        if (r / "val").is_dir():
            base_val = data_ref(r / "val", labels)
        elif labels is not None:  # a flat folder of images with its labels file
            base_val = data_ref(r, labels)
        if (r / "train").is_dir():
            base_calib = data_ref(r / "train", split="calib")
    val_ref = data_ref(val, labels, "val") if val else base_val
    calib_ref = data_ref(calib, None, "calib") if calib else base_calib
    if val_ref is None:
        raise DataSourceError(f"labeled images not found at {root}: no val/ folder (pass --val DIR, or --labels "
                              "FILE for a flat folder of images)")
    if calib_ref is None:
        raise DataSourceError(f"labeled images not found at {root}: no train/ folder for calibration (pass "
                              "--calib DIR)")
    val_ref.check()
    calib_ref.check()
    return LabeledData(val_ref, calib_ref, origin)
