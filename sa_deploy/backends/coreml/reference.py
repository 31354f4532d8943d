"""Reference MIL executor: runs the ``main`` function of a saved .mlpackage op by op in numpy.

CoreML itself only predicts on macOS; this lets Linux check what was actually written to disk (the protobuf
program and the bytes in weight.bin), not the in-memory PyTorch or MIL objects it came from. An op without a
kernel is an error that names it, never a silent skip."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sa_deploy.backends.coreml.mil_ops import KERNELS
from sa_deploy.backends.coreml.mil_reader import (
    MLPackage,
    ValueDecoder,
    dtype_name,
    numpy_dtype,
    read_mlpackage,
    tensor_shape,
)
from sa_deploy.errors import SADeployError


class UnsupportedOpError(SADeployError):
    """The program holds an op the reference executor has no kernel for."""


class MILExecutor:
    """Executes one function of an ML program. Constants are decoded once, at construction."""

    def __init__(self, package: MLPackage | str | Path, function: str = "main") -> None:
        self.package = package if isinstance(package, MLPackage) else read_mlpackage(package)
        program = self.package.spec.mlProgram
        if function not in program.functions:
            raise SADeployError(f"{self.package.path.name} has no function '{function}'")
        fn = program.functions[function]
        self.block = fn.block_specializations[fn.opset]
        self.opset = fn.opset
        self.inputs = {i.name: (tensor_shape(i.type), numpy_dtype(i.type.tensorType.dataType)) for i in fn.inputs}
        self.output_names = list(self.block.outputs)
        self._decoder = ValueDecoder(self.package.weights_dir)
        missing = sorted({op.type for op in self.block.operations if op.type != "const" and op.type not in KERNELS})
        if missing:
            raise UnsupportedOpError(f"the reference MIL executor has no kernel for op(s): {', '.join(missing)}")
        self._consts: dict[str, Any] = {}
        self._ops = []
        for op in self.block.operations:
            if op.type == "const":
                self._consts[op.outputs[0].name] = self._decoder.decode(op.attributes["val"])
            else:
                self._ops.append(op)

    def op_histogram(self) -> Counter:
        return Counter(op.type for op in self.block.operations)

    def _args(self, op, env: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {k: self._decoder.decode(v) for k, v in op.attributes.items() if k != "name"}
        for param, argument in op.inputs.items():
            vals = []
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name":
                    if binding.name not in env:
                        raise SADeployError(f"op {op.type} reads '{binding.name}' before it is defined")
                    vals.append(env[binding.name])
                else:
                    vals.append(self._decoder.decode(binding.value))
            # tuple inputs (concat values) keep their list; single bindings are unwrapped
            args[param] = vals if param in _TUPLE_PARAMS.get(op.type, ()) else vals[0] if len(vals) == 1 else vals
        return args

    def run(self, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, Any]:
        """Outputs of the function by name (with ``keep``, every intermediate value too)."""
        env: dict[str, Any] = dict(self._consts)
        for name, (shape, dtype) in self.inputs.items():
            if name not in feeds:
                raise SADeployError(f"missing input '{name}'")
            x = np.asarray(feeds[name])
            if x.shape != shape:
                raise SADeployError(f"input '{name}' has shape {x.shape}, the program expects {shape}")
            env[name] = x.astype(dtype)
        for op in self._ops:
            try:
                result = KERNELS[op.type](self._args(op, env))
            except (ValueError, KeyError, TypeError) as exc:  # UnsupportedFeatureError is a ValueError
                raise SADeployError(f"reference executor failed on op {op.type} "
                                    f"({op.outputs[0].name}): {exc}") from exc
            results = result if isinstance(result, tuple) else (result,)
            if len(results) != len(op.outputs):
                raise SADeployError(f"op {op.type} gave {len(results)} outputs, the program declares "
                                    f"{len(op.outputs)}")
            for out, value in zip(op.outputs, results):
                env[out.name] = _as_declared(value, out.type)
        names = list(env) if keep else self.output_names
        return {n: env[n] for n in names}


# op params that are declared as tuples of values in MIL (a single element still means a list)
_TUPLE_PARAMS = {"concat": ("values",)}


def _as_declared(value: Any, value_type) -> Any:
    """Cast to the dtype the program declares for this output, and check the declared static shape."""
    if value_type.WhichOneof("type") != "tensorType" or isinstance(value, str):
        return value
    arr = np.asarray(value)
    declared = tensor_shape(value_type)
    if arr.shape != declared and not (declared == () and arr.size == 1):
        raise SADeployError(f"an op produced shape {arr.shape}, the program declares {declared}")
    if dtype_name(value_type.tensorType.dataType) == "STRING":
        return arr
    return arr.astype(numpy_dtype(value_type.tensorType.dataType)).reshape(declared)
