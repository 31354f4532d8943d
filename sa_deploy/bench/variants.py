"""The ONNX variants the benchmark compares for one registered model, built into a folder (reused if present).

naive (lowering none + onnxsim), reshape-transpose, fold, floor (same backbone with every attention module -- SA,
SE, CBAM, ECA, GC -- replaced by nn.Identity: what the attention costs is measured against it), and fold converted
to fp16, int8-cpu and int8-tensorrt (each flavour's default SA-gate precision), plus int8-cpu-float-gate (the cpu
flavour with the gate kept float)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from sa_deploy.bench.converters import to_fp16, to_int8
from sa_deploy.data.resolve import resolve_labeled_data
from sa_deploy.exporters.metadata import (
    DeployMetadata,
    is_sa_deploy_onnx,
    onnx_metadata,
    read_deploy_metadata,
    write_onnx_metadata,
)
from sa_deploy.exporters.onnx import export_onnx, random_inputs
from sa_deploy.models import create_model
from sa_deploy.models.attention import attention_modules
from sa_deploy.models.random_weights import randomize
from sa_deploy.rewrite.lowering import replace_module
from sa_deploy.util.atomic import write_bytes_atomic

VARIANTS = ("floor", "naive", "reshape-transpose", "fold", "fp16", "int8-cpu", "int8-cpu-float-gate", "int8-tensorrt")
# INT8 variants: (flavour, keep the SA gate float; None = the flavour's default)
INT8_VARIANTS = {"int8-cpu": ("cpu", None), "int8-cpu-float-gate": ("cpu", True), "int8-tensorrt": ("tensorrt", None)}
VARIANT_KEY = "bench_variant"  # sa_deploy.bench_variant, sa_deploy.bench_note: kept in DeployMetadata.extra
NOTE_KEY = "bench_note"


@dataclass
class Variant:
    model: str
    name: str
    path: Path
    note: str = ""
    weights: str = ""


def without_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every attention module, wherever it sits, replaced by nn.Identity (the
    attention-free floor): SA layers (recognised by their parameters) and every known attention class
    (``models.attention.ATTENTION_CLASSES``)."""
    floor = copy.deepcopy(model)
    for _, module in attention_modules(floor):
        replace_module(floor, module, nn.Identity())
    return floor


def tag_variant(path: Path, name: str, note: str) -> None:
    """Records in a benchmark file the variant it is and how it was made (its deploy metadata)."""
    model = onnx.load(str(path))  # a file the benchmark built just before (in this operation): a raw load
    write_onnx_metadata(model, onnx_metadata(model, path.name).with_strings({VARIANT_KEY: name, NOTE_KEY: note}))
    write_bytes_atomic(path, model.SerializeToString(), owned=is_sa_deploy_onnx)


def tags_of(meta: DeployMetadata, path: str | Path) -> tuple[str, str]:
    """(variant, note) a benchmark file was built with (its metadata); else (file stem, "")."""
    return meta.extra.get(VARIANT_KEY, Path(path).stem), meta.extra.get(NOTE_KEY, "")


def read_tags(path: str | Path) -> tuple[str, str]:
    """``tags_of`` a file (checked where it enters: a reused file may be anything)."""
    return tags_of(read_deploy_metadata(path), path)


def calibration_batches(model: nn.Module, num: int = 64, batch: int = 8) -> tuple[list[np.ndarray], str]:
    """Calibration inputs: for 32x32 models, CIFAR-10 training images from the data resolver (a CIFAR-10 folder, or
    the sample embedded in the package); seeded random inputs otherwise."""
    cfg = model.deploy_config.preprocess
    if cfg.input_size == 32:
        data = resolve_labeled_data()
        src = data.calib.open(cfg, num=num)
        where = " (embedded sample)" if data.calib.embedded else ""
        return [x for x, _ in src.batches(batch)], f"{len(src)} CIFAR-10 training images{where}"
    chunks = [random_inputs(cfg.input_size, batch, seed=1000 + i) for i in range(0, num, batch)]
    return chunks, f"{num} random N(0,1) inputs (no labeled {cfg.input_size}x{cfg.input_size} data here)"


def _load(model_name: str) -> tuple[nn.Module, str]:
    """Embedded trained weights where the model has them, else seeded random ones (models.random_weights)."""
    from sa_deploy.errors import SADeployError

    try:
        return create_model(model_name, pretrained=True), "embedded trained weights"
    except SADeployError:
        return randomize(create_model(model_name)), "seeded random weights (SA parameters and BN statistics)"


def build_variants(model_name: str, out_dir: str | Path, variants: tuple[str, ...] = VARIANTS,
                   reuse: bool = True, calib_images: int = 64) -> list[Variant]:
    """Export the benchmark variants of ``model_name`` to ``out_dir/<model>_<variant>.onnx``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, weights = _load(model_name)
    path = {v: out / f"{model_name}_{v}.onnx" for v in VARIANTS}
    built: list[Variant] = []
    calib: tuple[list[np.ndarray], str] | None = None
    # fp16/int8 are converted from the fold file, so it is built whenever one of them is asked for
    needed = [v for v in VARIANTS if v in variants or (v == "fold" and {"fp16", *INT8_VARIANTS} & set(variants))]
    for v in needed:
        note = ""
        if reuse and path[v].is_file():
            note = read_tags(path[v])[1]
        else:
            if v == "floor":
                export_onnx(without_attention(model), path[v], lowering="none")
            elif v in ("naive", "reshape-transpose", "fold"):
                export_onnx(model, path[v], lowering="none" if v == "naive" else v)
            elif v == "fp16":
                note = to_fp16(path["fold"], path[v])
            else:
                if calib is None:
                    calib = calibration_batches(model, calib_images)
                flavour, gate_float = INT8_VARIANTS[v]
                note = f"{to_int8(path['fold'], path[v], flavour, calib[0], gate_float)}; calibration: {calib[1]}"
            tag_variant(path[v], v, note)
        if v in variants:
            built.append(Variant(model_name, v, path[v], note, weights))
    return built
