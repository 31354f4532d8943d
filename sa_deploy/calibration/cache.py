"""Calibration range cache: tensor ranges (onnxruntime ``TensorsData``) as JSON, keyed by what produced them.

Key = sha256 of the (pre-processed) FP32 model file + data fingerprint + method + calibrator options. Ranges are
flavour-independent (activation symmetry/type is applied when scales are computed from ranges), and are collected
for every float tensor, so one entry serves both flavours and any set of float-kept nodes. A file whose stored key
does not match is ignored (stale), never trusted by name alone."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sa_deploy.util.atomic import starts_with, write_bytes_atomic

CACHE_VERSION = 1


@dataclass(frozen=True)
class RangeKey:
    model_sha256: str
    data_fingerprint: str
    method: str
    options: str = "{}"  # calibrator options as sorted JSON
    version: int = CACHE_VERSION

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RangeCache:
    """A folder of ``ranges-<digest>.json`` files written with onnxruntime's own encoder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path_for(self, key: RangeKey) -> Path:
        return self.folder / f"ranges-{key.method}-{key.digest()}.json"

    def lookup(self, key: RangeKey) -> Path | None:
        """The cached ranges file for ``key``, or None when absent, unreadable or written for another key."""
        path = self.path_for(key)
        try:
            stored = json.loads(path.read_text()).get("sa_deploy_key")
        except (OSError, ValueError, AttributeError):
            return None
        return path if stored == key.to_dict() else None

    def store(self, key: RangeKey, tensors_data: Any) -> Path:
        from onnxruntime.quantization.calibrate import CalibrationCacheEncoder

        # the key first: it is also the signature by which a later store recognises (and may replace) the file
        payload = {"sa_deploy_key": key.to_dict(), **tensors_data.to_dict()}
        payload["smooth_quant"] = False  # quantize_static checks this flag when it loads a cache
        return write_bytes_atomic(self.path_for(key), json.dumps(payload, cls=CalibrationCacheEncoder).encode(),
                                  owned=starts_with(b'{"sa_deploy_key"'))

