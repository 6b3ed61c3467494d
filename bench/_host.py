"""The host a benchmark ran on, as one line: CPU model and vendor, cores, SIMD flags, torch.

CPU speed ratios depend on the host kind: the same fusion measured 5.5x-11.6x against its
reference on an Intel AVX-512 host and more on an AMD AVX2 one (MKL's vector math, which
``torch.exp`` uses, is fast only on Intel). Every benchmark prints this line first::

    from _host import host_line  # bench/ is on sys.path when a benchmark runs as a script

    print(host_line())
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
"""The /proc/cpuinfo flags that decide which torch and MKL kernels run."""


def cpu_info() -> tuple[str, str, set[str]]:
    """``(model name, vendor id, flags)`` from /proc/cpuinfo; placeholders elsewhere."""
    model, vendor, flags = platform.processor() or "unknown CPU", "unknown vendor", set()
    try:
        with Path("/proc/cpuinfo").open() as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "vendor_id":
                    vendor = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break  # the first processor says it all
    except OSError:
        pass
    return model, vendor, flags


def host_line() -> str:
    """``host: <model> (<vendor>), <n> cores, flags <simd>, torch <version> (<capability>)``."""
    model, vendor, flags = cpu_info()
    simd = " ".join(f for f in SIMD_FLAGS if f in flags) or "none of avx2/avx512"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        kernels = [torch.backends.cpu.get_cpu_capability()]
        if torch.backends.mkl.is_available():
            kernels.append("MKL")
        runtime = f", torch {torch.__version__} ({' + '.join(kernels)})"
    except ImportError:
        runtime = ""
    return f"host: {model} ({vendor}), {cores} cores, flags {simd}{runtime}"


def sync_all() -> None:
    """Wait for every CUDA device (not only the current one); a no-op without CUDA.

    Timings around a model on ``cuda:1`` with only the current device synchronised would stop
    the clock before the work ended.
    """
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)
