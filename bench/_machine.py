"""Facts about the machine a benchmark ran on, shared by every script in bench/ (the JSON's "machine")."""
from __future__ import annotations

import os
import platform


def machine_info(*modules: str) -> dict:
    """Platform, Python, CPU count and model, memory, load average and the versions of ``modules``."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2)}
    for name in modules:
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", None)
        except ImportError:
            info[name] = None
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 2 ** 20, 1)
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
