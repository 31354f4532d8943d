"""Which int8 kernel path a runtime takes on this CPU, and whether its u8 x s8 sums can saturate.

x86 int8 convolution kernels multiply unsigned 8-bit activations by signed 8-bit weights. With VNNI
(``vpdpbusd``: avx512_vnni, avx_vnni) or AMX (amx_int8) the four products of a group go straight into an int32
accumulator. Without it (AVX2, AVX-512BW, SSE4.1) the kernels use ``vpmaddubsw``, which adds the products in pairs
into int16 and *saturates* at +-32,767 before widening: 255 * 127 + 255 * 127 = 64,770 does not fit, so an 8-bit
file can lose points there that it keeps on a VNNI CPU (onnxruntime documents it as the reason for ``reduce_range``,
NNCF calls its remedy the overflow fix). ARM kernels widen (``smull``/``sadalp``) or use the dot-product extension
(``sdot``, ``asimddp``; ``smmla``, ``i8mm``): int32 either way. TensorRT accumulates in int32.

A Q/DQ file with 7-bit weights (|w| <= 64) cannot saturate: 255 * (64 + 64) = 32,640 <= 32,767
(backends/cpu_lint.py proves that per node from the file alone)."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

from sa_deploy.util.cpuinfo import cpu_model_and_flags

INT16_MAX = 32767
U8_MAX = 255
SAFE_WEIGHT_MAGNITUDE = INT16_MAX // (2 * U8_MAX)  # 64: the largest |w| whose pair sums always fit int16

INT32 = "int32"
INT16_PAIRS = "int16-pairs"
EMULATED = "float-emulation"


@dataclass(frozen=True)
class Int8Path:
    """How a runtime accumulates int8 products here. ``accumulation``: ``int32`` (exact), ``int16-pairs``
    (pairwise int16, saturating: x86 without VNNI) or ``float-emulation`` (Q/DQ computed in float: int32 semantics,
    what TensorRT computes); ``instructions``: the kernel family; ``source``: how it was found."""

    runtime: str
    accumulation: str
    instructions: str
    source: str

    @property
    def saturates(self) -> bool:
        return self.accumulation == INT16_PAIRS

    def line(self) -> str:
        note = ", u8 x s8 pair sums saturate int16" if self.saturates else ""
        return f"{self.runtime}: {self.instructions} -> {self.accumulation}{note} ({self.source})"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "saturates": self.saturates, "line": self.line()}


def x86_int8_isa(flags: set[str]) -> tuple[str, str]:
    """(accumulation, instructions) of an x86 CPU's u8 x s8 kernels, from its /proc/cpuinfo flags, in the order
    onnxruntime's MLAS dispatch prefers them."""
    if "amx_int8" in flags:
        return INT32, "AMX (amx_int8)"
    if "avx512_vnni" in flags:
        return INT32, "AVX-512 VNNI (vpdpbusd)"
    if "avx_vnni" in flags:
        return INT32, "AVX-VNNI (vpdpbusd)"
    if "avx512bw" in flags:
        return INT16_PAIRS, "AVX-512BW without VNNI (vpmaddubsw)"
    if "avx2" in flags:
        return INT16_PAIRS, "AVX2 without VNNI (vpmaddubsw)"
    return INT16_PAIRS, "SSE4.1 (pmaddubsw)"


def arm_int8_isa(flags: set[str]) -> tuple[str, str]:
    if "i8mm" in flags:
        return INT32, "Arm I8MM (smmla)"
    if "asimddp" in flags:
        return INT32, "Arm dot product (sdot)"
    return INT32, "Arm NEON (smull + sadalp)"


def is_arm(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("aarch64", "arm64", "armv8l")


def cpu_int8_path(runtime: str = "onnxruntime", flags: set[str] | None = None,
                  machine: str | None = None) -> Int8Path:
    """The int8 path of a runtime that picks its kernels from the CPU's flags (onnxruntime's MLAS)."""
    if flags is None:
        flags = cpu_model_and_flags()[1]
    accumulation, isa = arm_int8_isa(flags) if is_arm(machine) else x86_int8_isa(flags)
    return Int8Path(runtime, accumulation, isa, "CPU flags")


# oneDNN's ISA names, as OpenVINO shows them in a compiled model's primitive types (``jit_avx2_I8``,
# ``brgconv_avx512_amx_1x1_I8``, ``jit_avx512_core_vnni_I8``...), most capable first
_ONEDNN_INT32 = ("amx", "vnni")
_ONEDNN_PAIRS = ("avx512", "avx2", "sse41")


def onednn_int8_path(runtime: str, primitive_types: list[str]) -> Int8Path | None:
    """The int8 path from the primitive types of a compiled OpenVINO model's int8 convolutions/matmuls (those that
    name an ISA; ``undef``/``ref`` ones do not); None when none does (nothing runs in int8)."""
    kinds = sorted({p for p in primitive_types if any(t in p for t in _ONEDNN_INT32 + _ONEDNN_PAIRS)})
    if not kinds:
        return None
    shown = ", ".join(kinds[:3]) + ("..." if len(kinds) > 3 else "")
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA")
    source = f"compiled model: {shown}" + (f"; ONEDNN_MAX_CPU_ISA={capped}" if capped else "")
    if all(any(t in p for t in _ONEDNN_INT32) for p in kinds):
        return Int8Path(runtime, INT32, "oneDNN VNNI/AMX", source)
    return Int8Path(runtime, INT16_PAIRS, "oneDNN without VNNI (vpmaddubsw)", source)


def emulated_path(runtime: str = "onnxruntime") -> Int8Path:
    """Q/DQ run in float (``session.disable_quant_qdq``): int32-accumulation semantics, on any CPU."""
    return Int8Path(runtime, EMULATED, "Q/DQ in float (fusion off)", "session.disable_quant_qdq=1")
