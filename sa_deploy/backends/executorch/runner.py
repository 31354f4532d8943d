"""ExecuTorch runner: a .pte loaded by ``executorch.runtime`` (the C++ runtime behind the Python bindings, with the
XNNPACK delegate and the portable kernels built in), method ``forward``. A program with a fixed batch (what
sa-deploy builds: batch 1, as on a device) is run once per ``batch`` images; a dynamic (bounded) one in chunks of its
upper bound. Threads: ExecuTorch's one process-wide threadpool (which XNNPACK uses) is resized to ``threads`` while
the runner is active, and restored after."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from sa_deploy.backends.base import Runner
from sa_deploy.backends.executorch.inspect import METHOD, forward_plan, io_of, partitions_of, read_program
from sa_deploy.backends.executorch.sidecar import check_sidecar, read_sidecar
from sa_deploy.errors import SADeployError
from sa_deploy.util.cpuinfo import cpu_model_and_flags
from sa_deploy.util.int8_kernels import INT32, Int8Path, arm_int8_isa, is_arm
from sa_deploy.util.optional import require


def xnnpack_int8_path(flags: set[str] | None = None, machine: str | None = None) -> Int8Path:
    """XNNPACK's qs8 kernels accumulate in int32 on every ISA: VNNI (``vpdpbusd``) where the CPU has it, else
    s8 -> s16 sign extension and ``vpmaddwd`` (int16 x int16 products summed into int32), not ``vpmaddubsw``'s
    saturating int16 pair sums; on Arm ``sdot`` / ``smull``. (The int8 path of this runtime, from the CPU's flags.)"""
    if flags is None:
        flags = cpu_model_and_flags()[1]
    if is_arm(machine):
        return Int8Path("executorch", INT32, f"XNNPACK qs8, {arm_int8_isa(flags)[1]}", "CPU flags")
    isa = ("VNNI (vpdpbusd)" if {"avx512_vnni", "avx_vnni"} & flags else
           "s8->s16 + vpmaddwd (no VNNI)")
    return Int8Path("executorch", INT32, f"XNNPACK qs8, {isa}", "CPU flags")


def set_threadpool(threads: int) -> int:
    """Resizes ExecuTorch's process-wide threadpool (what XNNPACK runs on); returns the previous size. Only while
    nothing executes (the runtime's own caveat: hence its ``_unsafe_`` name)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    previous = int(_threadpool_get_thread_count())
    if threads != previous:
        _unsafe_reset_threadpool(int(threads))
    return previous


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads or os.cpu_count() or 1
        self.method = None
        self._program = None
        self._previous_threads: int | None = None
        self.batch: int | None = None  # fixed batch (None: dynamic)
        self.chunk = 1
        self.quantized = False

    def _activate(self) -> None:
        require("executorch", "executorch", "running an ExecuTorch program")
        program = read_program(self.path)  # a clear error for a file that is not a program, before the runtime
        plan = forward_plan(program, METHOD)
        inputs, _ = io_of(plan)
        if len(inputs) != 1:
            raise SADeployError(f"{self.path.name}: method '{METHOD}' takes {len(inputs)} inputs; sa-deploy runs "
                                "image classifiers with one (N, 3, H, W) input")
        shape, dynamism = inputs[0]["shape"], inputs[0]["dynamism"]
        self.batch = int(shape[0]) if shape and dynamism == "static" else None
        self.chunk = max(1, int(shape[0])) if shape else 1
        self.quantized = any(p.quantized_ops for p in partitions_of(program, plan))
        sidecar = read_sidecar(self.path)
        if sidecar is not None:
            check_sidecar(self.path, sidecar)
        with warnings.catch_warnings():  # the bindings announce themselves as experimental on import
            warnings.simplefilter("ignore")
            from executorch.runtime import Runtime

        self._previous_threads = set_threadpool(self.threads)
        try:
            self._program = Runtime.get().load_program(self.path)
            self.method = self._program.load_method(METHOD)
        except RuntimeError as exc:
            self._deactivate()
            raise SADeployError(f"ExecuTorch cannot load {self.path.name}: {str(exc).splitlines()[0][:200]}") \
                from None

    def _deactivate(self) -> None:
        self.method = None
        self._program = None
        if self._previous_threads is not None:
            set_threadpool(self._previous_threads)
            self._previous_threads = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([torch.from_numpy(x)])[0]
        return out.detach().numpy().copy()  # the output lives in the program's planned memory: copy it out

    def _infer(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.batch is None and n <= self.chunk:
            return self._run(x)
        outs = []
        for start in range(0, n, self.chunk):
            part = x[start:start + self.chunk]
            if self.batch is not None and len(part) < self.batch:  # a fixed batch: pad the last chunk
                pad = np.zeros((self.batch - len(part), *part.shape[1:]), dtype=part.dtype)
                outs.append(self._run(np.ascontiguousarray(np.concatenate([part, pad])))[:len(part)])
            else:
                outs.append(self._run(np.ascontiguousarray(part)))
        return np.concatenate(outs)

    def int8_path(self) -> Int8Path | None:
        return xnnpack_int8_path() if self.quantized else None
