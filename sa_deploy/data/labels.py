"""A flat folder of images plus a labels file (ImageNet's validation layout) -> labeled files.

Two formats, told apart by the first line:
- CSV with a header: ``filename,label`` (columns named ``filename`` / ``label``, else the first two columns);
- whitespace lines ``filename label`` as in ImageNet's ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``);
  blank lines and ``#`` comments are ignored.

A label is a class index (0-based) or a class name from the model's class list. File names are relative to the
folder. Every mistake is one DataSourceError naming the file and line; images in the folder that the labels file
does not list are skipped with one warning that counts them."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

from sa_deploy.data.sources import IMAGE_SUFFIXES, DataSourceError, LabeledFile


class LabelsError(DataSourceError):
    """A labels file that does not match its image folder or the model's classes."""


def _rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, file name, label text) for each entry of the labels file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LabelsError(f"labels file {path} is not UTF-8 text") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    rows: list[tuple[int, str, str]] = []
    if "," in first:  # CSV with a header
        reader = csv.reader(lines)
        header = [h.strip().lower() for h in next(reader)]
        if len(header) < 2:
            raise LabelsError(f"{path.name}: the CSV header needs two columns, `filename,label`")
        name_col = header.index("filename") if "filename" in header else 0
        label_col = header.index("label") if "label" in header else 1
        if name_col == label_col:
            raise LabelsError(f"{path.name}: the CSV header needs two columns, `filename,label`")
        for row in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) <= max(name_col, label_col):
                raise LabelsError(f"{path.name} line {lineno}: expected `filename,label`, got {','.join(row)!r}")
            rows.append((lineno, row[name_col].strip(), row[label_col].strip()))
        return rows
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.rsplit(None, 1)  # the label is the last field; a file name may hold spaces
        if len(parts) != 2:
            raise LabelsError(f"{path.name} line {lineno}: expected `filename label`, got {s!r}")
        rows.append((lineno, parts[0], parts[1]))
    return rows


def _label_index(text: str, class_names: tuple[str, ...], where: str) -> int:
    if text.lstrip("-").isdigit():
        label = int(text)
        if label < 0 or (class_names and label >= len(class_names)):
            rng = f"0..{len(class_names) - 1}" if class_names else "0 or more"
            raise LabelsError(f"{where}: label {label} is out of range (class indices are {rng})")
        return label
    if text in class_names:
        return class_names.index(text)
    if not class_names:
        raise LabelsError(f"{where}: label {text!r} is not a class index, and the model has no class names "
                          "(use 0-based class indices)")
    shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
    raise LabelsError(f"{where}: unknown class name {text!r} (the model's classes: {shown}; or a 0-based index)")


def read_labels(labels_file: str | Path, class_names: tuple[str, ...] = ()) -> dict[str, int]:
    """File name -> class index, from a labels file (formats in the module docstring)."""
    path = Path(labels_file)
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    out: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for lineno, name, text in _rows(path):
        where = f"{path.name} line {lineno}"
        if not name:
            raise LabelsError(f"{where}: empty file name")
        key = Path(name).as_posix()
        if key in first_line:
            raise LabelsError(f"{where}: {name} is listed twice (also on line {first_line[key]})")
        first_line[key] = lineno
        out[key] = _label_index(text, class_names, where)
    if not out:
        raise LabelsError(f"labels file {path} lists no images")
    return out


def list_labeled_folder(root: str | Path, labels_file: str | Path,
                        class_names: tuple[str, ...] = ()) -> list[LabeledFile]:
    """The images of ``root`` that ``labels_file`` lists, with their labels, in the labels file's order.

    A listed image that is absent is an error; an image in ``root`` that is not listed is skipped (one warning
    with the count)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"image folder not found: {root}")
    labels = read_labels(labels_file, class_names)
    resolved_root = root.resolve()
    missing, files = [], []
    for name, label in labels.items():
        p = root / name
        if resolved_root not in (p.resolve(), *p.resolve().parents):
            raise LabelsError(f"{Path(labels_file).name}: {name} points outside {root}")
        if not p.is_file():
            missing.append(name)
        files.append(LabeledFile(p, label))
    if missing:
        raise LabelsError(f"{len(missing)} image(s) listed in {Path(labels_file).name} are not in {root}, "
                          f"e.g. {missing[0]}")
    listed = {f.path.resolve() for f in files}
    unlisted = sorted(p.name for p in root.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in listed)
    if unlisted:
        warnings.warn(f"{len(unlisted)} image(s) in {root} are not listed in {Path(labels_file).name} and are "
                      f"skipped, e.g. {unlisted[0]}", stacklevel=2)
    return files
