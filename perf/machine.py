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
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                   "cuda": torch.version.cuda}
    except ImportError:
        pass
    return {
        "hostname": platform.node(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gib, 1),
        "packages": versions,
    }
