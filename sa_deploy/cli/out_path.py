"""The one ``--out`` rule of every command that writes artifacts (export, fp16, quantize, convert, build, run, bench):

1. a path ending in ``/`` is a folder to write into;
2. a path ending in a suffix the command writes as one file (``.onnx``, ``.xml``, ``.mlpackage``, ``.engine``) is
   that file;
3. an existing folder, or a new path without a suffix, is a folder to write into (the command's default file
   name(s) inside it);
4. anything else (another suffix, an existing file of another kind) is refused with one line saying which form to
   use. A command that writes several files (``run``, ``bench``, ``export`` of several lowerings or formats) takes
   a folder only.

Whether an existing file may be replaced is the writer's decision (only sa-deploy's own output; util.atomic).
No heavy import here: argparse runs this for ``--help`` and usage errors too."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sa_deploy.errors import OutputPathError

# every suffix sa-deploy writes an artifact or report under (a path ending in one names a file, never a folder)
ARTIFACT_SUFFIXES = (".onnx", ".xml", ".bin", ".mlpackage", ".engine", ".plan", ".json", ".md", ".html", ".png")
FOLDER_FORMS = "a folder (an existing one, a path ending in /, or a new name without a suffix)"


@dataclass(frozen=True)
class OutPath:
    """A resolved ``--out``: a file path, or a folder that the command's default file name(s) go into."""

    path: Path
    is_folder: bool

    def file(self, default_name: str) -> Path:
        """The file to write: the path itself, or ``default_name`` inside the folder."""
        return self.path / default_name if self.is_folder else self.path


def resolve_out(text: str | os.PathLike, file_suffixes: tuple[str, ...] = (), what: str = "") -> OutPath:
    """``--out TEXT`` by the rule above -> OutPath, or OutputPathError (one line, exit 2) saying which form to use.
    ``file_suffixes``: the suffixes this command writes as one file (empty: it takes a folder only); ``what``: what
    it writes, for the message (e.g. "RESULTS.md, results.json and latency.png")."""
    try:
        return _classify(os.fspath(text), file_suffixes, what)
    except ValueError as exc:
        raise OutputPathError(f"--out {os.fspath(text)}: {exc}") from None


def out_type(file_suffixes: tuple[str, ...] = (), what: str = "") -> Callable[[str], OutPath]:
    """argparse type applying the rule (usage errors are one line, before anything is imported or read)."""
    def parse(text: str) -> OutPath:
        try:
            return _classify(text, file_suffixes, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = "output path"
    return parse


def _classify(raw: str, file_suffixes: tuple[str, ...], what: str) -> OutPath:
    if not raw.strip():
        raise ValueError("an empty path; pass " + _forms(file_suffixes))
    path = Path(raw)
    _no_file_above(path)
    exists = path.exists() or path.is_symlink()
    if raw.endswith(("/", os.sep)):
        if exists and not path.is_dir():
            raise ValueError(f"{path} is a file, not a folder; pass " + _forms(file_suffixes))
        return OutPath(path, True)
    if path.suffix in file_suffixes:
        return OutPath(path, False)
    if path.is_dir():
        return OutPath(path, True)
    if not path.suffix and not exists:
        return OutPath(path, True)
    writes = f" ({what})" if what else ""
    if not file_suffixes:
        why = f"{path} is an existing file" if exists else f"{path.name} names a file"
        raise ValueError(f"{why}, and this command writes several files{writes}: pass {FOLDER_FORMS}")
    why = f"{path} is an existing file" if exists else f"{path.suffix!r} is not a suffix this command writes"
    raise ValueError(f"{why}{writes}; pass " + _forms(file_suffixes))


def _forms(file_suffixes: tuple[str, ...]) -> str:
    if not file_suffixes:
        return FOLDER_FORMS
    return f"a file ending in {' or '.join(file_suffixes)}, or {FOLDER_FORMS}"


def _no_file_above(path: Path) -> None:
    for parent in path.parents:
        if parent.is_dir():
            return
        if parent.exists() or parent.is_symlink():
            raise ValueError(f"{parent} is a file, not a folder (in {path})")
