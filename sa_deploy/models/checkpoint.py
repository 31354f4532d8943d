"""Safe, strict checkpoint loading: official SA-Net training checkpoints, ``module.`` prefixes, plain state_dicts.

Always ``torch.load(..., weights_only=True)``: a checkpoint that pickles code is refused, never executed."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa_deploy.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_SHOWN = 5



def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict with ``module.`` stripped, metadata such as epoch / best_acc / arch) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(unsupported GLOBAL [^\s]+|Unsupported global: [^\s]+)", str(exc))
        if found is None:  # not a pickle at all: garbage or a truncated file
            raise CheckpointError(f"cannot read {path.name} as a PyTorch checkpoint (not a torch.save file, or "
                                  "truncated)") from None
        raise CheckpointError(
            f"refusing to load {path.name}: it pickles Python code or objects ({found.group(1)}), which "
            "weights_only=True does not execute. Re-save it with torch.save(model.state_dict())") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name} as a PyTorch checkpoint: {str(exc).splitlines()[0][:200]}") \
            from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a state_dict or a dict with "
                              "'state_dict'")
    meta: dict[str, Any] = {}
    state = obj
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], dict):
            state = obj[key]
            meta = {k: _plain(v) for k, v in obj.items() if k not in (key, "optimizer") and _is_scalar(v)}
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} has no tensors under 'state_dict' or at its top level")
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, meta


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load; on mismatch one error naming the first keys and the likely cause."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + _describe(
            missing, unexpected, shape, state, expected))
    model.load_state_dict(state, strict=True)


def _describe(missing: list[str], unexpected: list[str], shape: list[str], state: dict, expected: dict) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_first(unexpected)})")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} shape mismatch(es) (e.g. {k}: checkpoint {tuple(state[k].shape)} vs model "
                     f"{tuple(expected[k].shape)})")
    if shape and all(k.split(".")[0] in ("fc", "classifier") for k in shape) and not missing and not unexpected:
        cause = "different num_classes: pass --num-classes matching the checkpoint"
    elif shape and all(".sa." in k for k in shape) and not missing and not unexpected:
        cause = "different SA groups: the checkpoint was trained with another groups value"
    elif len(missing) + len(unexpected) > 0.5 * max(len(expected), 1):
        cause = "wrong architecture: the checkpoint is of another model (check --model)"
    else:
        cause = "wrong architecture depth/width, or a checkpoint of a modified model"
    return "; ".join(parts) + f". Likely cause: {cause}."


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) else v
