"""Deploy config carried inside every artifact (ONNX metadata_props, CoreML user metadata, TensorRT sidecar)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import onnx

from sa_deploy import __version__
from sa_deploy.errors import SADeployError
from sa_deploy.models.deploy_config import DeployConfig
from sa_deploy.models.preprocessing import PreprocessConfig

PREFIX = "sa_deploy."


def deploy_config(deploy: DeployConfig, lowering: str, precision: str,
                  extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata every artifact carries: the model, where it came from (registry name + checkpoint hash, or the
    user's module class), its preprocessing, lowering, precision and tool versions."""
    import torch

    user_module = deploy.source.startswith("module ")
    cfg = {
        "model": deploy.name,
        "model_source": deploy.source or f"registry {deploy.name}",
        "lowering": lowering,
        "precision": precision,
        "preprocess": deploy.preprocess.to_json(),
        "checkpoint_sha256": deploy.checkpoint_sha256 or ("none (in-memory module)" if user_module
                                                          else "none (random init)"),
        "sa_deploy_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "onnx_version": onnx.__version__,
    }
    cfg.update({k: str(v) for k, v in (extra or {}).items()})
    return cfg


def weights_sha256(model) -> str:
    """SHA-256 of a module's state_dict (names and values, in order): which weights an artifact holds when they
    came from no file (a module the user built and trained)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def set_onnx_metadata(model: onnx.ModelProto, config: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key in sorted(config):
        model.metadata_props.add(key=PREFIX + key, value=str(config[key]))


def read_onnx_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def preprocess_from_metadata(meta: dict[str, str], where: str = "the model") -> PreprocessConfig | None:
    """The PreprocessConfig in ``sa_deploy.preprocess`` (None when absent); a damaged one is a one-line error."""
    raw = meta.get("preprocess")
    if not raw:
        return None
    try:
        return PreprocessConfig.from_dict(json.loads(raw))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise SADeployError(f"{where} has damaged sa_deploy.preprocess metadata ({exc}); re-export it with "
                            "`sa-deploy export`") from None


def derived_metadata(source_meta: dict[str, str], source: Path, preprocess: PreprocessConfig | None,
                     source_sha256: str | None = None) -> dict[str, str]:
    """What a file converted from ``source`` (INT8, FP16) says about its origin beyond the source's own metadata:
    the model name (the source's, else its file stem), the preprocessing it was resolved with (when given; a file
    sa-deploy did not write has none of its own), and the source file's SHA-256."""
    from sa_deploy.util.hashing import file_sha256

    out = {"model": source_meta.get("model") or Path(source).stem,
           "source_onnx_sha256": source_sha256 or file_sha256(source)}
    if preprocess is not None:
        out["preprocess"] = preprocess.to_json()
    return out


def is_sa_deploy_onnx(path: Path) -> bool:
    """Whether an existing file is an ONNX model sa-deploy wrote (and may overwrite): its producer is sa-deploy
    (exports) or it carries ``sa_deploy.*`` metadata (every FP16 / INT8 file made from an export)."""
    if not path.is_file():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return model.producer_name == "sa-deploy" or any(p.key.startswith(PREFIX) for p in model.metadata_props)
