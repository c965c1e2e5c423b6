"""What a result was measured on: library versions and the CPU kernels torch chose. Float rounding in
those kernels can flip a validation sentence or two between machines, and a search that compares plans
a sentence apart can then take another path; a report that names its environment says where to look."""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch

PACKAGES = ("torch", "numpy", "scipy", "tokenizers", "safetensors")


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "machine": platform.machine(), **versions,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}
