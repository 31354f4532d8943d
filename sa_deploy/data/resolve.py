"""The one place that decides where labeled images come from: an explicit path, $SA_DEPLOY_DATA, or the
development copy of CIFAR-10 in ../shared/data/cifar10. No other module derives data paths."""
from __future__ import annotations

import os
from pathlib import Path

from sa_deploy.errors import SADeployError

DATA_ENV = "SA_DEPLOY_DATA"


def default_data_dir() -> Path | None:
    """$SA_DEPLOY_DATA, else ../shared/data/cifar10 next to the project or the working directory."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    here = Path(__file__).resolve().parents[2]
    for base in (here, Path.cwd()):
        for cand in (base.parent / "shared" / "data" / "cifar10", base / "shared" / "data" / "cifar10"):
            if (cand / "val").is_dir():
                return cand
    return None


def resolve_labeled_dirs(data: str | Path | None = None, calib: str | Path | None = None,
                         val: str | Path | None = None) -> tuple[Path, Path]:
    """(calibration folder, validation folder): ``calib`` / ``val`` if given, else ``data``/train and
    ``data``/val, with ``data`` defaulting to default_data_dir(); one clear error if they are absent."""
    root = Path(data) if data else default_data_dir()
    calib_dir = Path(calib) if calib else (root / "train" if root else None)
    val_dir = Path(val) if val else (root / "val" if root else None)
    if calib_dir is None or val_dir is None or not val_dir.is_dir() or not calib_dir.is_dir():
        where = str(root) if root else "../shared/data/cifar10"
        raise SADeployError(f"labeled images not found at {where} (need train/ and val/ class folders): pass "
                            f"--data DIR or set {DATA_ENV}")
    return calib_dir, val_dir
