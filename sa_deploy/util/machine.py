"""What machine a report or benchmark ran on: CPU model and SIMD flags, cores, library versions."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "onnxruntime", "onnx", "openvino", "coremltools", "tensorrt")


def cpu_model_and_flags() -> tuple[str, set[str]]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def library_versions() -> dict[str, str]:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info(threads: int | None = None) -> dict[str, str]:
    from sa_deploy import __version__

    cpu, flags = cpu_model_and_flags()
    simd = [f for f in SIMD_FLAGS if f in flags]
    libs = library_versions()
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "simd": ", ".join(simd) or "unknown",
            "threads": str(threads or os.cpu_count()), "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "sa_deploy": __version__, **libs}
    info["summary"] = (f"{cpu}, {info['cores']} cores, "
                       + ", ".join(f"{k} {libs[k]}" for k in ("onnxruntime", "openvino", "torch") if k in libs))
    return info
