"""CoreML mlprograms: export (FP32/FP16/W8A8/palettized), the .mlpackage reader and the numpy reference MIL
executor that runs them off macOS.

Importing this package (which every module that imports coremltools is part of) first drops coremltools' known
noise from its logger (``quiet_coremltools``), so that it never reaches the console."""
from __future__ import annotations

import logging
import re

from sa_deploy.backends.coreml.manager import CoreMLManager
from sa_deploy.backends.registry import register_backend

# What coremltools logs on its "coremltools" logger as it is imported, and sa-deploy handles itself:
# - off macOS its native runtime (libcoremlpython) is absent, once per proxy class: sa-deploy runs mlprograms in its
#   reference MIL executor there and says so (the runner column of the reports);
# - a torch newer than the one coremltools was released with: sa-deploy pins the torch its CoreML tests pass on.
# Only these messages are dropped; every other coremltools warning stays visible.
KNOWN_NOISE = (
    re.compile(r"Failed to load _ML\w*Proxy: No module named '?coremltools\.libcoremlpython'?$"),
    re.compile(r"Torch version \S+ has not been tested with coremltools\. "),
)


class _KnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(p.match(message) for p in KNOWN_NOISE)


_FILTER = _KnownNoise()


def quiet_coremltools() -> None:
    """Drops KNOWN_NOISE from coremltools' logger (idempotent). The logger exists before coremltools is imported,
    so this must run first: it does, when this package is imported."""
    logger = logging.getLogger("coremltools")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


quiet_coremltools()


MANAGER = register_backend(CoreMLManager())


def is_available() -> str | None:
    return MANAGER.is_available()
