"""Torch device choice: CUDA when available, else CPU, unless the user names one."""
from __future__ import annotations

import torch

from .errors import QslmError


def resolve_device(name: str | None = None) -> torch.device:
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise QslmError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise QslmError(f"device {name!r} requested but CUDA is not available on this machine")
    return device
