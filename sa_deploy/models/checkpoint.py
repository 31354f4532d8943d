"""Safe, strict checkpoint loading: official SA-Net training checkpoints, ``module.`` prefixes, plain state_dicts.

Always ``torch.load(..., weights_only=True)``: a checkpoint that pickles code is refused, never executed."""
from __future__ import annotations

import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa_deploy.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_SHOWN = 5
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)  # counters (num_batches_tracked)


# what a file that is not a torch.save checkpoint most likely is, from its first bytes
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"), (b"GGUF", "a GGUF file (llama.cpp)"),
               (b"\x93NUMPY", "a NumPy .npy file"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"))


def describe_file(path: Path) -> str:
    """What a file that is not a readable checkpoint looks like: empty, text, a known format, or binary."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4096)
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is not a torch.save checkpoint (an .npz? a truncated checkpoint?)"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{'") and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file (not supported: save it with torch.save(model.state_dict()))"
    if head[:1] == b"\x08" and b"\x12" in head[2:4]:  # protobuf: ir_version, then producer_name
        return "an ONNX model (protobuf), not a checkpoint"
    try:
        head.decode("utf-8")
        return f"a text file ({size} bytes)"
    except UnicodeDecodeError:
        return f"a binary file of {size} bytes in no format sa-deploy knows"


def read_checkpoint(path: str | Path, allow_nonfinite: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict with ``module.`` stripped, metadata such as epoch / best_acc / arch) from a checkpoint file.

    Every tensor is checked here, where the file enters: string keys, real floating-point weights (integers only
    where the model keeps counters), dense, and finite unless ``allow_nonfinite`` (the error names the tensor)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .pth / .pth.tar file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file" if path.exists() else
                              f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read {path.name}: it is an empty file (0 bytes), not a PyTorch checkpoint")
    _check_zip_crc(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(unsupported GLOBAL [^\s]+|Unsupported global: [^\s]+)", str(exc))
        if found is None:  # not a pickle at all: garbage or a truncated file
            raise CheckpointError(f"cannot read {path.name} as a PyTorch checkpoint: it is {describe_file(path)} "
                                  "(or a truncated torch.save file)") from None
        raise CheckpointError(
            f"refusing to load {path.name}: it pickles Python code or objects ({found.group(1)}), which "
            "weights_only=True does not execute. Re-save it with torch.save(model.state_dict())") from None
    except Exception as exc:  # noqa: BLE001 - torch.load parses untrusted bytes; each malformation raises its own type
        what = describe_file(path)
        detail = f" ({first_line(exc, 120)})" if what.startswith("a zip") and first_line(exc) else ""
        raise CheckpointError(f"cannot read {path.name} as a PyTorch checkpoint: it is {what}{detail}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a state_dict or a dict with "
                              "'state_dict'")
    meta: dict[str, Any] = {}
    state = obj
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], dict):
            state = obj[key]
            meta = {k: _plain(v) for k, v in obj.items()
                    if isinstance(k, str) and k not in (key, "optimizer") and _is_scalar(v)}
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} has no tensors under 'state_dict' or at its top level")
    bad_keys = [k for k in tensors if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{path.name}: state_dict keys must be parameter names (strings), found "
                              f"{type(bad_keys[0]).__name__} key {bad_keys[0]!r}"[:300])
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    for name, t in tensors.items():
        _check_tensor(path.name, name, t, allow_nonfinite)
    return tensors, meta


def _check_zip_crc(path: Path) -> None:
    """torch.save writes a zip whose records carry CRC-32s that torch.load does not verify: damaged bytes inside a
    tensor would load as different weights. Verify them (one read of the file)."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy (pre-1.6) format, or not a checkpoint: torch.load says which
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    # zipfile raises NotImplementedError for a compression method it does not support: also "not readable as a zip"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, NotImplementedError):
        return  # unreadable as a zip: torch.load reports it
    if bad is not None:
        raise CheckpointError(f"{path.name} is damaged: record {bad} fails its CRC check (a corrupted copy or "
                              "download; get the file again)")


def _check_tensor(source: str, name: str, t: torch.Tensor, allow_nonfinite: bool) -> None:
    if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
        raise CheckpointError(f"{source}: tensor {name} is {t.layout if t.layout != torch.strided else t.dtype} "
                              f"on {t.device.type}; sa-deploy loads dense float weights (re-save a plain state_dict)")
    if t.is_complex():
        raise CheckpointError(f"{source}: tensor {name} is complex ({t.dtype}); weights must be real numbers")
    if not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise CheckpointError(f"{source}: tensor {name} has dtype {t.dtype}; expected floating-point weights")
    if t.is_floating_point() and not allow_nonfinite and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise CheckpointError(f"{source}: tensor {name} has {bad} NaN/Inf value(s) of {t.numel()}; the training run "
                              "diverged or the file is damaged (--allow-nonfinite loads it anyway)")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message ("" when it has none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load; on mismatch one error naming the first keys and the likely cause."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + _describe(
            missing, unexpected, shape, state, expected))
    kinds = [k for k in expected if expected[k].is_floating_point() != state[k].is_floating_point()]
    if kinds:
        k = kinds[0]
        raise CheckpointError(f"{source}: tensor {k} has dtype {state[k].dtype}, the model keeps {expected[k].dtype} "
                              "there (a damaged or converted checkpoint)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the checks above did not foresee still names the checkpoint
        raise CheckpointError(f"{source} does not load into {type(model).__name__}: {first_line(exc)}") from None


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
    elif _attention_of(missing) and _attention_of(unexpected) and _attention_of(missing) != _attention_of(unexpected):
        cause = (f"another attention module: the checkpoint holds {'/'.join(sorted(_attention_of(unexpected)))} "
                 f"modules, the model {'/'.join(sorted(_attention_of(missing)))} (check --model)")
    elif len(missing) + len(unexpected) > 0.5 * max(len(expected), 1):
        cause = "wrong architecture: the checkpoint is of another model (check --model)"
    else:
        cause = "wrong architecture depth/width, or a checkpoint of a modified model"
    return "; ".join(parts) + f". Likely cause: {cause}."


def _attention_of(keys: list[str]) -> set[str]:
    """The attention attribute names (sa, se, cbam, eca, gc) all of ``keys`` sit under, e.g. ``layer1.0.se.fc1.weight``
    -> {"se"}; empty when some key is not an attention module's."""
    from sa_deploy.models.attention import ATTENTION_CLASSES

    names = set()
    for k in keys:
        found = [p for p in k.split(".")[:-1] if p in ATTENTION_CLASSES]
        if not found:
            return set()
        names.add(found[-1])
    return names


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", ..." if len(keys) > _SHOWN else "")


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) else v
