"""CoreML mlprograms: export (FP32/FP16/W8A8/palettized), the .mlpackage reader and the numpy reference MIL
executor that runs them off macOS."""
from sa_deploy.util.optional import missing


def is_available() -> str | None:
    return missing("coremltools", "coreml")
