"""What the OpenVINO CPU plugin can do here. Its default precision follows the CPU (bf16 on AMX machines), so
sa-deploy always sets INFERENCE_PRECISION_HINT itself: f32 everywhere, bf16 only where the CPU reports BF16."""
from __future__ import annotations

from functools import lru_cache

from sa_deploy.errors import SADeployError
from sa_deploy.util.optional import require

PRECISION_HINTS = ("f32", "bf16")


def import_openvino(purpose: str = "OpenVINO"):
    return require("openvino", "openvino", purpose)


def ov_error(exc: BaseException, limit: int = 200) -> str:
    """The line of an OpenVINO exception that says what is wrong (its first lines name C++ source locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    line = (useful or lines or [type(exc).__name__])[0]
    if line.startswith("Unable to read the model"):
        return "not a model this OpenVINO can read"
    return line[:limit]


@lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    ov = import_openvino("reading the CPU's capabilities")
    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_has_bf16() -> bool:
    return "BF16" in cpu_capabilities()


def check_hint(hint: str) -> str:
    if hint not in PRECISION_HINTS:
        raise SADeployError(f"unknown OpenVINO precision hint '{hint}'; choose one of: {', '.join(PRECISION_HINTS)}")
    if hint == "bf16" and not cpu_has_bf16():
        raise SADeployError("this CPU has no bf16 support (OpenVINO reports "
                            f"{', '.join(cpu_capabilities())}); use the f32 hint")
    return hint
