"""Atomic, non-destructive writes: an artifact appears complete or not at all (temp file in the same folder, then
rename), and nothing the user did not ask to overwrite is replaced or deleted.

Rules, checked before anything is written (``check_writable``) and again just before the rename:
- an existing folder at the destination is an error; it is never deleted. The one exception is a folder artifact
  (an .mlpackage) that ``owned`` recognises as sa-deploy's own output: it is moved aside, replaced, then removed;
- an existing file (or symlink) is replaced only when ``owned(path)`` is true. Each writer passes the predicate
  for its format: the file carries sa-deploy's signature (ONNX producer / ``sa_deploy.*`` metadata, a JSON
  ``sa_deploy_version`` first key, a Markdown/HTML title, a PNG ``Software`` chunk; see ``starts_with`` /
  ``png_software``). Without a predicate nothing existing is replaced;
- an ancestor of the destination that is a file is an error (not a traceback from mkdir);
- folders created for the destination are removed again (when empty) if the write fails.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sa_deploy.errors import OutputPathError

Owned = Callable[[Path], bool]
HEAD_BYTES = 4096


def _missing_parents(dest: Path) -> list[Path]:
    """Ancestors of ``dest`` that do not exist yet (deepest first); an ancestor that is a file is an error."""
    missing = []
    for parent in dest.parents:
        if parent.is_dir():
            break
        if parent.exists() or parent.is_symlink():
            raise OutputPathError(f"cannot write {dest}: {parent} is a file, not a folder (pass another --out)")
        missing.append(parent)
    return missing


def check_writable(dest: str | Path, owned: Owned | None = None) -> Path:
    """Raise OutputPathError unless writing ``dest`` would create it or replace a file sa-deploy wrote."""
    dest = Path(dest)
    _missing_parents(dest)
    if dest.is_dir() and not dest.is_symlink():
        if owned is None or not owned(dest):
            raise OutputPathError(f"{dest} is an existing folder; sa-deploy writes a file there and never replaces "
                                  "a folder (pass a file path, or remove the folder yourself)")
    elif dest.exists() or dest.is_symlink():
        if owned is None or not owned(dest):
            raise OutputPathError(f"{dest} exists and was not written by sa-deploy; refusing to overwrite it "
                                  "(pass another path, or remove the file yourself)")
    return dest


@contextmanager
def atomic_path(dest: str | Path, owned: Owned | None = None) -> Iterator[Path]:
    """Yields a temp path next to ``dest``; on success it is renamed onto ``dest``, on error removed.
    Works for files and for directories (e.g. an .mlpackage). ``owned``: see the module doc."""
    dest = check_writable(dest, owned)
    created = _missing_parents(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)) / dest.name
    except OSError as exc:
        _remove_empty(created)
        raise OutputPathError(f"cannot write {dest}: {exc.strerror or exc}") from None
    ok = False
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            raise OutputPathError(f"nothing was written for {dest}")
        check_writable(dest, owned)  # the destination may have appeared meanwhile
        _replace(tmp, dest)
        ok = True
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
        if not ok:
            _remove_empty(created)


def _replace(tmp: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():  # an owned folder artifact: move it aside, put the new one in place
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, old / dest.name)
        try:
            os.replace(tmp, dest)
        except BaseException:
            os.replace(old / dest.name, dest)
            raise
        finally:
            if dest.exists():
                shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, dest)


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return


def write_bytes_atomic(dest: str | Path, data: bytes, owned: Owned | None = None) -> Path:
    with atomic_path(dest, owned) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


# --- signatures: how a writer recognises its own earlier output --------------------------------------------------

def head_bytes(path: Path, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a regular file (b"" for anything else: folders, FIFOs, broken links)."""
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return b""
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def starts_with(*prefixes: bytes) -> Owned:
    """A predicate: the file is a regular file starting with one of ``prefixes``."""
    return lambda path: any(head_bytes(path, max(len(p) for p in prefixes)).startswith(p) for p in prefixes)


def png_software(path: Path) -> str | None:
    """The ``Software`` text chunk of a PNG file (matplotlib writes it before the image data): None for a file that
    is not a PNG, "" for a PNG without one."""
    head = head_bytes(path)
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos = 8
    while pos + 8 <= len(head):
        length, kind = int.from_bytes(head[pos:pos + 4], "big"), head[pos + 4:pos + 8]
        data = head[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and data.startswith(b"Software\x00"):
            return data[9:].decode("latin-1")
        if kind == b"IDAT":
            break
        pos += 12 + length
    return ""


def any_regular_file(path: Path) -> bool:
    """For paths the user named as both input and output (e.g. a cache file read and then updated)."""
    return path.is_file()
