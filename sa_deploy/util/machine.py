"""What machine a report or benchmark ran on: CPU model and SIMD flags, cores, library versions."""
from __future__ import annotations

import os
import platform
from importlib import metadata

from sa_deploy.util.cpuinfo import cpu_model_and_flags
from sa_deploy.util.int8_kernels import cpu_int8_path

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
              "asimddp", "i8mm")
LIBRARIES = ("torch", "onnxruntime", "onnx", "openvino", "coremltools", "tensorrt")


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
    # which int8 kernels onnxruntime takes here: the INT8 rows of a report depend on it (util/int8_kernels.py)
    int8 = cpu_int8_path()
    info["int8_kernels"] = int8.line()
    info["summary"] = (f"{cpu}, {info['cores']} cores, "
                       + ", ".join(f"{k} {libs[k]}" for k in ("onnxruntime", "openvino", "torch") if k in libs)
                       + f"; int8 kernels: {int8.instructions} -> {int8.accumulation}")
    return info
