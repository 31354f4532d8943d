"""The one naming scheme of the files sa-deploy writes (api, pipeline and the CLI all name files through it)."""
from __future__ import annotations

from pathlib import Path


def artifact_name(*parts: str, suffix: str) -> str:
    """Parts joined by '_': ``<model>_<lowering>[_<precision>...]<suffix>`` for exports,
    ``<source stem>_<derivation>...<suffix>`` for files converted from another artifact."""
    return "_".join(p for p in parts if p) + suffix


def derived_path(source: str | Path, *parts: str, suffix: str | None = None) -> Path:
    """Where a file converted from ``source`` goes by default: beside it, named after it."""
    source = Path(source)
    return source.with_name(artifact_name(source.stem, *parts, suffix=suffix or source.suffix))
