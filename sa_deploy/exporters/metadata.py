"""The deploy metadata every artifact carries (models.deploy_metadata.DeployMetadata): what a new artifact records
(``deploy_metadata``, ``derive``), and its reader/writer for the ONNX container (``metadata_props``, keys
``sa_deploy.*``). Every ONNX metadata read goes through ``read_deploy_metadata`` (a file that enters: the checked
loader) or ``onnx_metadata`` (a model already loaded). The other containers' readers/writers live with them:
backends/openvino (rt_info), backends/coreml (user metadata), backends/trt/sidecar (the engine's JSON sidecar)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import onnx

from sa_deploy import __version__
from sa_deploy.models.deploy_config import DeployConfig
from sa_deploy.models.deploy_metadata import PREFIX, DeployMetadata, parse_preprocess
from sa_deploy.models.preprocessing import PreprocessConfig

__all__ = ["PREFIX", "DeployMetadata", "deploy_metadata", "deploy_config", "derive", "derived_metadata",
           "onnx_metadata", "read_deploy_metadata", "write_onnx_metadata", "read_onnx_metadata", "set_onnx_metadata",
           "preprocess_from_metadata", "weights_sha256", "is_sa_deploy_onnx"]


def deploy_metadata(deploy: DeployConfig, lowering: str, precision: str,
                    extra: dict[str, Any] | None = None) -> DeployMetadata:
    """The metadata a new artifact made from a model carries (``deploy_config``, typed)."""
    return DeployMetadata.from_strings(deploy_config(deploy, lowering, precision, extra), "sa-deploy")


def deploy_config(deploy: DeployConfig, lowering: str, precision: str,
                  extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata every artifact carries, in its stored string form: the model, where it came from (registry name
    + checkpoint hash, or the user's module class), its preprocessing, lowering, precision and tool versions."""
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


def write_onnx_metadata(model: onnx.ModelProto, meta: DeployMetadata) -> None:
    """The ONNX writer: ``meta`` as ``sa_deploy.*`` metadata_props (sorted by key), replacing any the model had;
    other metadata_props are kept."""
    set_onnx_metadata(model, meta.to_strings())


def set_onnx_metadata(model: onnx.ModelProto, config: dict[str, str] | DeployMetadata) -> None:
    """``write_onnx_metadata`` from the stored string form (or a DeployMetadata)."""
    if isinstance(config, DeployMetadata):
        config = config.to_strings()
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key in sorted(config):
        model.metadata_props.add(key=PREFIX + key, value=str(config[key]))


def read_onnx_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The stored string form of a loaded model's ``sa_deploy.*`` metadata (keys without the prefix): what
    ``sa-deploy inspect`` shows as is. Code that uses the values reads ``onnx_metadata`` instead."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def onnx_metadata(model: onnx.ModelProto, where: str = "the model") -> DeployMetadata:
    """The ONNX reader: a loaded model's deploy metadata, typed (a damaged value: one line naming ``where``)."""
    return DeployMetadata.from_strings(read_onnx_metadata(model), where)


def read_deploy_metadata(path: str | Path) -> DeployMetadata:
    """The deploy metadata of an ONNX file, the file checked where it enters (``exporters.inspect.load_onnx``: one
    OnnxFileError for anything that is not a sound ONNX model); a damaged value is one line naming the file."""
    from sa_deploy.exporters.inspect import load_onnx  # inspect reads metadata through this module

    p = Path(path)
    return onnx_metadata(load_onnx(p), p.name)


def preprocess_from_metadata(meta: dict[str, str], where: str = "the model") -> PreprocessConfig | None:
    """The PreprocessConfig in a stored ``sa_deploy.preprocess`` value (None when absent); a damaged one is a
    one-line error. (Prefer ``onnx_metadata(...).preprocess``.)"""
    return parse_preprocess(meta.get("preprocess"), where)


def derive(source_meta: DeployMetadata, source: Path, preprocess: PreprocessConfig | None,
           source_sha256: str | None = None) -> DeployMetadata:
    """The metadata of a file converted from ONNX file ``source`` (INT8, FP16): the source's, with the model name
    (the source's, else its file stem), the preprocessing it was resolved with (when given; a file sa-deploy did
    not write has none of its own) and the source file's SHA-256. The converter then sets what it changed
    (precision, INT8 fields...)."""
    return source_meta.with_strings(derived_metadata(source_meta.to_strings(), source, preprocess, source_sha256))


def derived_metadata(source_meta: dict[str, str], source: Path, preprocess: PreprocessConfig | None,
                     source_sha256: str | None = None) -> dict[str, str]:
    """What ``derive`` changes, in the stored string form: the model name, the preprocessing (when given) and the
    source file's SHA-256."""
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
    try:  # a probe, not an entry point: a raw load (the checked loader would raise, and load external data)
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return model.producer_name == "sa-deploy" or any(p.key.startswith(PREFIX) for p in model.metadata_props)
