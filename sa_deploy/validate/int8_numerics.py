"""Judge each INT8 artifact by the numerics of its target, and tell a kernel loss from a calibration loss.

An INT8 file is scored twice on the same images: by the numerics it is judged by, and by its twin. A Q/DQ ONNX file
of the tensorrt flavour is judged in float Q/DQ emulation (int32-accumulation semantics, what TensorRT computes),
never by this CPU's int8 kernels; a cpu-flavour or foreign Q/DQ file, and an OpenVINO INT8 IR, by the real kernels
of the machine it runs on. The twin is the other one (an IR's twin: its source Q/DQ ONNX, emulated). When the two
differ by more than noise, one line says where the loss comes from and how to fix it (``diagnose``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sa_deploy.backends.manager import Int8Plan
from sa_deploy.util.int8_kernels import INT16_PAIRS

# top-1 differences up to this many points (or 3 images) between kernels and emulation are noise: near-tie images
NOISE_POINTS = 0.3
NOISE_IMAGES = 3


def int8_plan(path: str | Path) -> Int8Plan | None:
    """How to judge ``path`` if it runs int8, as its backend says (BackendManager.int8_plan), else None."""
    from sa_deploy.backends import find_backend

    backend = find_backend(path)
    return backend.int8_plan(Path(path)) if backend is not None else None


@dataclass
class Int8Numerics:
    """The two scores of one INT8 artifact and what they say."""

    judged_by: str
    path: dict[str, Any] | None  # Int8Path.to_dict() of the judged runner
    twin_path: dict[str, Any] | None
    kernel_top1: float | None
    kernel_drop: float | None
    kernel_cosine: float | None
    emulated_top1: float | None
    emulated_drop: float | None
    emulated_cosine: float | None
    weight_bits: int | None
    flavour: str | None
    diagnosis: str | None = None

    @property
    def gap(self) -> float | None:
        """Points the kernels lose beyond the emulation (positive: the kernels are worse)."""
        if self.kernel_drop is None or self.emulated_drop is None:
            return None
        return self.kernel_drop - self.emulated_drop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gap": self.gap}

    def summary(self) -> str:
        """One cell: both numbers."""
        parts = []
        if self.kernel_drop is not None:
            parts.append(f"kernels {self.kernel_drop:+.2f}")
        if self.emulated_drop is not None:
            parts.append(f"emulated {self.emulated_drop:+.2f}")
        return ", ".join(parts)


def noise_points(images: int) -> float:
    return max(NOISE_POINTS, 100.0 * NOISE_IMAGES / images) if images else NOISE_POINTS


def diagnose(numerics: Int8Numerics, images: int, max_drop: float | None) -> str | None:
    """One line with the cause and the fix when kernels and emulation disagree by more than noise, or when the
    emulation itself is over budget (then calibration, not the kernels, is the cause); None otherwise."""
    gap = numerics.gap
    kernel_path = numerics.path if numerics.judged_by == "kernels" else numerics.twin_path
    saturating = bool(kernel_path and kernel_path.get("accumulation") == INT16_PAIRS)
    isa = kernel_path.get("instructions", "this CPU's int8 kernels") if kernel_path else "this CPU's int8 kernels"
    if gap is not None and gap > noise_points(images):
        k, e = numerics.kernel_drop, numerics.emulated_drop
        if numerics.judged_by == "emulation":
            return (f"judged by int32 Q/DQ emulation (its target's numerics): drop {e:.2f}; this CPU's int8 kernels "
                    f"({isa}) would lose {k:.2f}" + (" by int16 pair saturation: not what TensorRT computes"
                                                     if saturating else ""))
        if saturating and numerics.weight_bits != 7:
            return (f"the loss is this CPU's int8 kernels ({isa}: int16 pair saturation), not calibration: emulated "
                    f"drop {e:.2f} vs {k:.2f}; re-quantize with --weight-bits 7 (overflow-safe on every CPU; "
                    "`sa-deploy lint --target cpu` names the nodes)")
        return (f"the loss is the runtime's int8 execution on this CPU ({isa}), not calibration: emulated drop "
                f"{e:.2f} vs {k:.2f} with the kernels")
    judged_drop = numerics.emulated_drop if numerics.judged_by == "emulation" else numerics.kernel_drop
    if max_drop is not None and judged_drop is not None and judged_drop > max_drop + 1e-9 \
            and numerics.emulated_drop is not None and numerics.emulated_drop > max_drop + 1e-9:
        return (f"the loss is in quantization itself, not the kernels (emulated drop {numerics.emulated_drop:.2f} "
                "too): try --method percentile|minmax, more calibration images, or keep the most sensitive layers "
                "float (`sa-deploy validate --auto-fallback`)")
    return None
