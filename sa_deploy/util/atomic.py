"""Atomic writes: an artifact appears complete or not at all (temp file in the same folder, then rename)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yields a temp path next to ``dest``; on success it is renamed onto ``dest``, on error removed.
    Works for files and for directories (e.g. an .mlpackage)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent)) / dest.name
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_bytes_atomic(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)
