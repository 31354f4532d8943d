"""Checks of an input ONNX file's content, run where a conversion starts (api.quantize, api.fp16)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, numpy_helper

from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import _all_tensors, load_onnx

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def check_finite_weights(onnx_path: str | Path) -> None:
    """Every float initializer (and Constant tensor) of the file is finite; else one SADeployError naming the first
    tensor with NaN/Inf and the node that reads it (exit 2), as ``export`` refuses a checkpoint with NaN/Inf. The file
    is loaded with ``load_onnx`` (its own one-line errors for a damaged file)."""
    path = Path(onnx_path)
    model = load_onnx(path)
    for t in _all_tensors(model.graph):
        if t.data_type not in FLOAT_TYPES:
            continue
        values = numpy_helper.to_array(t)
        finite = np.isfinite(values.astype(np.float32) if t.data_type == TensorProto.BFLOAT16 else values)
        if finite.all():
            continue
        bad = int(values.size - np.count_nonzero(finite))
        reader = next((f"{n.op_type} {n.name!r}" if n.name else n.op_type for n in model.graph.node
                       if t.name and t.name in n.input), None)
        raise SADeployError(f"{path.name}: tensor {t.name or '(unnamed)'}" + (f" (read by {reader})" if reader else "")
                            + f" has {bad} NaN/Inf value(s) of {values.size}; the model it was exported from has "
                            "non-finite weights (a diverged training run?) or the file is damaged: re-export it "
                            "from a finite checkpoint")
