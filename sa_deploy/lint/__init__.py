"""Offline checks that an ONNX file will be accepted by a deployment target, without that target installed."""
from .report import Finding, LintReport
from .tensorrt import lint_onnx

__all__ = ["Finding", "LintReport", "lint_onnx"]
