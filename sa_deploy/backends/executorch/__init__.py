"""ExecuTorch with the XNNPACK delegate (the runtime of Android / iOS / Arm Linux; XNNPACK runs the same kernels on
x86 here): .pte programs FP32 and INT8 (PT2E, XNNPACK quantizer) from the lowered model with the SA gate in its
XNNPACK form, a JSON sidecar for the deploy config, the runner on ``executorch.runtime``, .pte inspection.

Importing this package first drops known log lines of ExecuTorch's dependencies on a CPU-only machine
(``quiet_executorch``): torchao's CUDA extension libraries that cannot load without CUDA, its note that Triton is
absent, and torch's notice about an Enum torchao registers. Every other warning stays visible."""
from __future__ import annotations

import logging
import re

from sa_deploy.backends.executorch.manager import ExecuTorchManager
from sa_deploy.backends.registry import register_backend

KNOWN_NOISE = {
    "torchao": re.compile(r"Failed to load \S+\.so: Could not load this library: "),
    "torchao.kernel.intmm": re.compile(r"Warning: Detected no triton"),
    "torch.utils._pytree": re.compile(r"<enum '\w+'> is an Enum subclass and is now natively supported by "),
}


class _KnownNoise(logging.Filter):
    def __init__(self, pattern: re.Pattern) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not self.pattern.match(record.getMessage())
        except Exception:  # a malformed record is not ours to judge
            return True


def quiet_executorch() -> None:
    """Adds the KNOWN_NOISE filters to their loggers (idempotent; the loggers exist before the libraries load)."""
    for name, pattern in KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownNoise) for f in logger.filters):
            logger.addFilter(_KnownNoise(pattern))


quiet_executorch()

MANAGER = register_backend(ExecuTorchManager())


def is_available() -> str | None:
    return MANAGER.is_available()
