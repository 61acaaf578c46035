"""The machine and software a benchmark ran on, recorded in every result JSON."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("torch", "torchrec", "fbgemm-gpu-cpu", "transformers", "deepspeed", "ray", "pyarrow", "numpy")


def describe_machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as info:
            mem_gib = int(next(line.split()[1] for line in info if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        mem_gib = float("nan")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gib, 1),
        "packages": versions,
    }
