"""TensorRT engine runner: device buffers and the stream come from torch (no pycuda).

Before deserializing, the engine's sidecar must match the file, the installed TensorRT and this GPU
(``backends.trt.sidecar.check_sidecar``); inputs outside the engine's batch profile are refused."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sa_deploy.backends.base import Runner
from sa_deploy.backends.trt.env import cuda_gpu, import_tensorrt
from sa_deploy.backends.trt.sidecar import Sidecar, read_sidecar
from sa_deploy.errors import SADeployError


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0, threads: int | None = None) -> None:
        # threads: accepted for the common runner signature; TensorRT runs on the GPU
        super().__init__()
        self.path = Path(path)
        self.device = device
        self.sidecar: Sidecar | None = None

    def _activate(self) -> None:
        import torch

        trt = import_tensorrt("running a TensorRT engine")
        gpu = cuda_gpu(self.device)
        self.sidecar = read_sidecar(self.path)
        data = self.path.read_bytes()
        self.sidecar.check(data, trt.__version__, gpu.to_dict())
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        torch.cuda.set_device(self.device)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise SADeployError(f"TensorRT could not deserialize {self.path.name} (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SADeployError(f"expected one input and one output, engine has {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in (inputs[0], outputs[0])}
        self.stream = torch.cuda.Stream(self.device)
        self.min_batch, self.max_batch = self.sidecar.batch_range

    def _deactivate(self) -> None:
        # context before engine before runtime: TensorRT objects must be released in that order
        for attr in ("context", "engine", "_runtime", "stream"):
            if hasattr(self, attr):
                delattr(self, attr)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        if not self.min_batch <= len(x) <= self.max_batch:
            raise SADeployError(f"batch {len(x)} is outside the engine's profile "
                                f"[{self.min_batch}, {self.max_batch}]; rebuild with other --min/--max-batch")
        dev = torch.device("cuda", self.device)
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(x).to(dev, non_blocking=False).to(self._dtypes[self.input_name]).contiguous()
            if not self.context.set_input_shape(self.input_name, tuple(inp.shape)):
                raise SADeployError(f"TensorRT refused input shape {tuple(inp.shape)}")
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = torch.empty(out_shape, dtype=self._dtypes[self.output_name], device=dev)
            self.context.set_tensor_address(self.input_name, inp.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            # the copy above was queued on this stream too, so TensorRT sees the input in place
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise SADeployError("TensorRT execution failed (see the TensorRT log above)")
        self.stream.synchronize()
        return out.float().cpu().numpy()


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32}
    if dtype not in table:
        raise SADeployError(f"engine I/O type {dtype} is not supported by this runner")
    return table[dtype]
