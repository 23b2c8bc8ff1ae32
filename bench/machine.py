"""The machine the benchmarks ran on: CPU, cores, threads, memory, library versions."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "numpy",
    "scipy",
    "scikit-learn",
    "numba",
    "pyDeepInsight",
    "h5py",
    "snakemake",
)


def cpuinfo() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", text)
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    flags = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split())
    simd = next((s for s in ("avx512f", "avx2", "avx", "sse2") if s in flags), "none")
    return {
        "model": model.group(1).strip() if model else platform.processor(),
        "mhz": float(mhz.group(1)) if mhz else float("nan"),
        "flags": sorted(f for f in flags if f.startswith(("avx", "fma", "amx"))),
        "simd": simd,
        "hypervisor": "hypervisor" in flags,
    }


def theoretical_peak_gflops(cores: int, info: dict, fma_units: int = 2) -> float:
    """cores x GHz x fp32 FLOPs per cycle: SIMD lanes x 2 (FMA) x FMA units per core (2 on
    server Xeons with AVX-512; not visible in the flags, so an assumption)."""
    lanes = {"avx512f": 16, "avx2": 8, "avx": 8, "sse2": 4}.get(info["simd"], 1)
    fma = 2 if info["simd"] in ("avx512f", "avx2") else 1
    return cores * info["mhz"] / 1000 * lanes * fma * fma_units


def describe(threads: int) -> dict:
    import torch

    info = cpuinfo()
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    torch.set_num_threads(threads)
    return {
        "cpu": info["model"],
        "mhz": info["mhz"],
        "simd_flags": info["flags"],
        "virtualised": info["hypervisor"],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gpu": torch.cuda.is_available(),
        "versions": versions,
        "theoretical_peak_gflops": theoretical_peak_gflops(threads, info),
    }


def markdown(desc: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in desc["versions"].items())
    return "\n".join(
        [
            f"- CPU: {desc['cpu']} ({desc['mhz']:.0f} MHz as /proc/cpuinfo reports it"
            f"{', virtual machine' if desc['virtualised'] else ''}), "
            f"{desc['cores']} cores, SIMD {' '.join(desc['simd_flags'])}",
            f"- memory: {desc['memory_gib']} GiB; GPU: {'yes' if desc['gpu'] else 'none'}",
            f"- torch threads: {desc['torch_threads']} intra-op "
            f"({desc['torch_interop_threads']} inter-op), the same for reference and ours",
            f"- Python {desc['python']}, Linux {desc['kernel']}; {versions}",
        ]
    )
