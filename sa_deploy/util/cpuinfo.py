"""The CPU's model name and feature flags (/proc/cpuinfo; on other systems the platform's processor name only)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model_and_flags() -> tuple[str, set[str]]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):  # x86 / Arm
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags
