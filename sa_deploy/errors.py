"""User-facing errors: the CLI prints their message as one line and exits non-zero (no traceback)."""
from __future__ import annotations


class SADeployError(Exception):
    """A mistake the user can fix (bad path, wrong architecture, missing extra...)."""

    exit_code = 2


class CheckpointError(SADeployError):
    """A checkpoint that cannot be loaded safely or does not match the architecture."""


class MissingDependencyError(SADeployError):
    """An optional dependency (tensorrt, coremltools...) is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs '{package}', which is not installed: pip install 'sa-deploy[{extra}]'")


class BudgetExceededError(SADeployError):
    """A validation gate (accuracy drop, parity) did not hold."""

    exit_code = 3


class OutputPathError(SADeployError):
    """An output path sa-deploy must not write: an existing folder, a file it did not write, a path under a file."""


class ParityError(BudgetExceededError):
    """An artifact's outputs are outside its precision's tolerance against PyTorch (or not finite)."""

    def __init__(self, message: str, stats: list | None = None) -> None:
        super().__init__(message)
        self.stats = stats or []
