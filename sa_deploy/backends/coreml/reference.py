"""Reference MIL executor: runs the ``main`` function of a saved .mlpackage op by op in numpy.

CoreML itself only predicts on macOS; this lets Linux check what was actually written to disk (the protobuf
program and the bytes in weight.bin), not the in-memory PyTorch or MIL objects it came from. An op without a
kernel is an error that names it, never a silent skip."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from sa_deploy.backends.coreml.mil_ops import KERNELS, Kernel, bind, round_to_fp16
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


class _Step(NamedTuple):
    """One op, compiled: its kernel bound to the op's constant arguments, where its run-time arguments come from,
    and what it declares for each output."""
    op: Any  # the protobuf Operation, for error messages
    kernel: Kernel
    reads: tuple[tuple[str, Any], ...]  # (param, env name) or (param, [(is_name, env name or constant), ...])
    writes: tuple[tuple[str, "_Declared"], ...]  # (output name, what the program declares for it)
    exact: bool = False  # its outputs need no rounding: it selects or moves fp16 values, or reads a table of
    # outputs already cast as declared


class _Declared(NamedTuple):
    """An op output's declared type, read from the protobuf once."""
    tensor: bool  # False: a list or other non-tensor value, passed through as the kernel made it
    shape: tuple[int, ...]
    dtype: Any  # numpy dtype; None for STRING tensors

    @classmethod
    def of(cls, value_type) -> "_Declared":
        if value_type.WhichOneof("type") != "tensorType":
            return cls(False, (), None)
        name = dtype_name(value_type.tensorType.dataType)
        return cls(True, tensor_shape(value_type), None if name == "STRING" else numpy_dtype(
            value_type.tensorType.dataType))


class MILExecutor:
    """Executes one function of an ML program. Constants are decoded once, at construction, and ops whose inputs are
    all constant (the constexpr_* weight decompressions) are evaluated there too, once.

    fp16 values travel between ops as float32 arrays holding exact fp16 values (rounded with ``round_to_fp16``, bit
    for bit numpy's cast): kernels compute in float32 either way, and this skips a half-precision cast per input.
    What ``run`` returns has the declared dtypes."""

    def __init__(self, package: MLPackage | str | Path, function: str = "main", blas_threads: int | None = 1) -> None:
        """``blas_threads``: numpy's BLAS threads while ``run`` executes (None: leave BLAS as it is); see _BlasLimit."""
        self.blas_threads = blas_threads
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
        self._consts: dict[str, Any] = {}  # as decoded (and folded ops' outputs, with their declared dtype)
        self._static: dict[str, Any] = {}  # the same values as kernels take them (fp16 held in float32)
        self._ops = []
        for op in self.block.operations:
            if op.type == "const":
                value = self._decoder.decode(op.attributes["val"])
                self._consts[op.outputs[0].name] = value
                self._static[op.outputs[0].name] = _kernel_form(value)
            else:
                self._ops.append(op)
        # every run-time value's declared type, the inputs' too
        self._declared = {name: _Declared(True, shape, dtype) for name, (shape, dtype) in self.inputs.items()}
        self._steps = [step for step in map(self._compile, self._ops) if step is not None]

    def op_histogram(self) -> Counter:
        return Counter(op.type for op in self.block.operations)

    # ---- compilation -------------------------------------------------------------------------------------------
    def _compile(self, op) -> _Step | None:
        """The op bound to its constant arguments; None for an op without run-time arguments, which is evaluated
        here, once, and becomes a constant."""
        static = {k: _kernel_form(self._decoder.decode(v)) for k, v in op.attributes.items() if k != "name"}
        reads = []
        for param, argument in op.inputs.items():
            sources = [self._source(op, binding) for binding in argument.arguments]
            tuple_param = param in _TUPLE_PARAMS.get(op.type, ())
            if all(not is_name for is_name, _ in sources):
                values = [v for _, v in sources]
                static[param] = values if tuple_param else values[0] if len(values) == 1 else values
            elif len(sources) == 1 and not tuple_param:
                reads.append((param, sources[0][1]))
            else:
                reads.append((param, sources))
        writes = tuple((out.name, _Declared.of(out.type)) for out in op.outputs)
        try:
            kernel = bind(op.type, static, frozenset(p for p, _ in reads))
        except (ValueError, KeyError, TypeError) as exc:  # a constant argument the kernel cannot take
            raise SADeployError(f"reference executor failed on op {op.type} ({op.outputs[0].name}): {exc}") from exc
        only_x = len(reads) == 1 and reads[0][0] == "x" and isinstance(reads[0][1], str)
        exact = op.type in _SELECTING_OPS and only_x and self._declared[reads[0][1]].dtype == np.float16
        table = self._tabulate(op.type, kernel, static, reads, writes)
        if table is not None:
            kernel, exact = table, True
        step = _Step(op, kernel, tuple(reads), writes, exact)
        if reads:
            self._declared.update(writes)
            return step
        for (name, declared), value in zip(writes, self._execute(step, {})):
            self._static[name] = value
            self._consts[name] = _declared_form(value, declared)
        return None

    def _tabulate(self, op_type: str, kernel: Kernel, static: dict[str, Any], reads: list,
                  writes: tuple) -> Kernel | None:
        """An elementwise op of one 8-bit tensor (a W8A8 dequantize) as a table of its 256 possible outputs, made by
        the kernel itself and cast as declared: the same values, one gather instead of arithmetic plus fp16
        rounding. None where the op is not that (per-channel parameters: not elementwise)."""
        if op_type not in _TABULABLE_OPS or len(reads) != 1 or not isinstance(reads[0][1], str) or len(writes) != 1:
            return None
        (param, name), (_, declared) = reads[0], writes[0]
        source = self._declared[name]
        if source.dtype not in (np.int8, np.uint8) or not declared.tensor or declared.dtype is None \
                or any(isinstance(v, np.ndarray) and v.size > 1 for v in static.values()):
            return None
        shape = (256,) + (1,) * (len(source.shape) - 1)  # the input's rank, for axis arguments
        domain = np.arange(256, dtype=np.uint8).view(source.dtype).reshape(shape)
        try:
            table = _as_declared(kernel({param: domain}), declared._replace(shape=shape)).reshape(256)
        except (ValueError, KeyError, TypeError, SADeployError):  # the plain kernel will say what is wrong
            return None
        return lambda args: np.take(table, np.asarray(args[param]).view(np.uint8), mode="wrap")

    def _source(self, op, binding) -> tuple[bool, Any]:
        """(True, env name) for a run-time value, (False, value) for a constant."""
        if binding.WhichOneof("binding") != "name":
            return False, _kernel_form(self._decoder.decode(binding.value))
        if binding.name in self._static:
            return False, self._static[binding.name]
        if binding.name not in self._declared:
            raise SADeployError(f"op {op.type} reads '{binding.name}' before it is defined")
        return True, binding.name

    # ---- execution ---------------------------------------------------------------------------------------------
    def _execute(self, step: _Step, env: dict[str, Any]) -> list[Any]:
        """Run one step on ``env``; its outputs as kernels take them."""
        args: dict[str, Any] = {}
        for param, source in step.reads:
            if isinstance(source, str):
                args[param] = env[source]
            else:
                vals = [env[v] if is_name else v for is_name, v in source]
                args[param] = vals if param in _TUPLE_PARAMS.get(step.op.type, ()) or len(vals) > 1 else vals[0]
        try:
            result = step.kernel(args)
        except (ValueError, KeyError, TypeError) as exc:  # UnsupportedFeatureError is a ValueError
            raise SADeployError(f"reference executor failed on op {step.op.type} "
                                f"({step.op.outputs[0].name}): {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(step.writes):
            raise SADeployError(f"op {step.op.type} gave {len(results)} outputs, the program declares "
                                f"{len(step.writes)}")
        return [_as_declared(value, declared, step.exact) for (_, declared), value in zip(step.writes, results)]

    def run(self, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, Any]:
        """Outputs of the function by name (with ``keep``, every intermediate value too)."""
        env: dict[str, Any] = {}
        for name, (shape, dtype) in self.inputs.items():
            if name not in feeds:
                raise SADeployError(f"missing input '{name}'")
            x = np.asarray(feeds[name])
            if x.shape != shape:
                raise SADeployError(f"input '{name}' has shape {x.shape}, the program expects {shape}")
            env[name] = _kernel_form(x.astype(dtype))
        with _BLAS.limit(self.blas_threads):
            for step in self._steps:
                for (name, _), value in zip(step.writes, self._execute(step, env)):
                    env[name] = value
        if keep:
            out = dict(self._consts)
            out.update({name: _declared_form(value, self._declared[name]) for name, value in env.items()})
            return out
        return {name: _declared_form(env[name], self._declared[name]) if name in env else self._consts[name]
                for name in self.output_names}


# op params that are declared as tuples of values in MIL (a single element still means a list)
_TUPLE_PARAMS = {"concat": ("values",)}
# ops that are elementwise when their parameters are scalars (tabulated for 8-bit inputs)
_TABULABLE_OPS = frozenset({"dequantize", "cast"})
# ops whose output values are some of their input ``x``'s values (or zeros): fp16 in, fp16 out, nothing to round
_SELECTING_OPS = frozenset({"relu", "reshape", "transpose", "squeeze", "expand_dims", "identity", "split",
                            "max_pool"})


class _BlasLimit:
    """Caps the thread pool of numpy's OpenBLAS while the executor runs, and restores it after.

    The executor's matmuls are small (one image, at most a few hundred channels). With OpenBLAS's default of a thread
    per core they cost more in waking and spinning threads than in arithmetic, and on a shared machine (another
    process, or another runtime's spinning pool, on the other core) one matmul measured up to 20x slower than on a
    single thread. Results do not depend on it: OpenBLAS splits rows and columns between threads, never a sum.
    Where numpy's BLAS is not an OpenBLAS found in this process (MKL, Accelerate, ...) it does nothing."""

    _NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
              ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
              ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
              ("openblas_get_num_threads", "openblas_set_num_threads"))

    def __init__(self) -> None:
        self._funcs: tuple[Any, Any] | None = None
        self._looked = False

    def _find(self) -> tuple[Any, Any] | None:
        import ctypes

        try:  # the OpenBLAS numpy loaded, by path (Linux); loading it again returns the same library
            with open("/proc/self/maps") as f:
                paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
        except OSError:
            return None
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get, set_ in self._NAMES:
                if hasattr(lib, get) and hasattr(lib, set_):
                    getattr(lib, set_).argtypes = [ctypes.c_int]
                    return getattr(lib, get), getattr(lib, set_)
        return None

    @contextmanager
    def limit(self, threads: int | None) -> Iterator[None]:
        if not self._looked:
            self._funcs, self._looked = self._find(), True
        if threads is None or self._funcs is None:
            yield
            return
        get, set_ = self._funcs
        before = int(get())
        if before != threads:
            set_(threads)
        try:
            yield
        finally:
            if before != threads:
                set_(before)


_BLAS = _BlasLimit()


def _kernel_form(value: Any) -> Any:
    """fp16 arrays as float32 (exact): what kernels compute with anyway."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, list):
        return [_kernel_form(v) for v in value]
    return value


def _as_declared(value: Any, declared: _Declared, exact: bool = False) -> Any:
    """Cast to the dtype the program declares for this output (fp16: rounded to fp16, held in float32; ``exact``:
    float32 holding fp16 values already), and check the declared static shape."""
    if not declared.tensor or isinstance(value, str):
        return value
    arr = np.asarray(value)
    shape = declared.shape
    if arr.shape != shape and not (shape == () and arr.size == 1):
        raise SADeployError(f"an op produced shape {arr.shape}, the program declares {shape}")
    if declared.dtype is None:
        return arr
    if declared.dtype == np.float16:
        if exact and arr.dtype == np.float32:
            return arr.reshape(shape)
        # float32 results round in one step; any other dtype goes through numpy's cast, as before
        rounded = round_to_fp16(arr) if arr.dtype == np.float32 else arr.astype(np.float16).astype(np.float32)
        return rounded.reshape(shape)
    return arr.astype(declared.dtype, copy=False).reshape(shape)


def _declared_form(value: Any, declared: _Declared) -> Any:
    """A value as the program declares it (fp16 back to float16: exact, the values are fp16 already)."""
    if isinstance(value, np.ndarray) and declared.dtype == np.float16:
        return value.astype(np.float16)
    return value
