"""W8A8 for CoreML: post-training calibration on the PyTorch side with coremltools.optimize.torch's LinearQuantizer.

The quantizer is a QAT tool; we use it as PTQ (checked with coremltools 9 + torch 2.13): milestones [0, 0, N, 0]
turn observers and fake-quant on and freeze BN at step 0, one ``step()`` in train mode applies them, calibration
batches run under no_grad (observers update, weights don't), ``finalize`` folds the result. The finalized model
holds quantized tensors that torch.export cannot take, so the CoreML side goes through torch.jit.trace: only the
fold lowering is trace-clean
(reshape-transpose reads x.shape, which the tracer turns into ops coremltools cannot convert).
The classifier head is kept in float (see calibrate_w8a8)."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.util.optional import require

W8A8_LOWERINGS = ("fold",)


def calibrate_w8a8(lowered: nn.Module, batches: Iterable[np.ndarray], example: torch.Tensor) -> nn.Module:
    """A finalized (int8 weights + activations) copy of ``lowered``, observers fed with ``batches`` (NCHW float)."""
    quant = require("coremltools.optimize.torch.quantization", "coreml", "W8A8 calibration")
    LinearQuantizer, LinearQuantizerConfig = quant.LinearQuantizer, quant.LinearQuantizerConfig
    ModuleLinearQuantizerConfig = quant.ModuleLinearQuantizerConfig
    # The classifier Linear stays float: with it quantized, coremltools 9 converts avgpool -> flatten -> Linear
    # into quantize(s1, zp 0) -> reshape -> dequantize(s2, zp 128), dropping the requantize in between (found by
    # the reference executor: cosine 0.05 to the finalized PyTorch model; with Linear float it is 0.99999).
    config = LinearQuantizerConfig(
        global_config=ModuleLinearQuantizerConfig(quantization_scheme="symmetric", milestones=[0, 0, 10**9, 0]),
        module_type_configs={nn.Linear: None})
    quantizer = LinearQuantizer(lowered.eval(), config)
    prepared = quantizer.prepare(example_inputs=(example,), inplace=False)
    quantizer.step()
    prepared.train()  # observers only record in train mode; BN is frozen by milestone 2 == 0
    seen = 0
    with torch.no_grad():
        for x in batches:
            prepared(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            seen += len(x)
    if seen == 0:
        raise SADeployError("W8A8 calibration got no images")
    prepared.eval()
    return quantizer.finalize(inplace=False).eval()


def trace_for_coreml(finalized: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad():
        return torch.jit.trace(finalized, example, check_trace=False)
