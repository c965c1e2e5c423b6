"""Quantizable units: the modules whose weight a plan can quantize, found generically in any model."""
from __future__ import annotations

import torch
from torch import nn

from .quantizer import QuantSpec

QUANTIZABLE_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


class PackedUnit(nn.Module):
    """Base of the modules that hold a unit's weight bit-packed (``qslm.quant.pack``). A loaded quantized
    model keeps its module names, so plans and the block hierarchy still match it."""
    spec: QuantSpec
    weight_shape: torch.Size

    @property
    def parameter_count(self) -> int:
        """Parameters of the float unit this module stands for (weight and bias)."""
        bias = getattr(self, "bias", None)
        return self.weight_shape.numel() + (bias.numel() if bias is not None else 0)


def quantizable_units(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear, Embedding and Conv1d/2d (and packed stand-in) by its ``named_modules`` name, in
    model order. A model that is itself one such module is the unit named ``""``."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, QUANTIZABLE_TYPES + (PackedUnit,))}


def unit_parameter_count(module: nn.Module) -> int:
    if isinstance(module, PackedUnit):
        return module.parameter_count
    return sum(p.numel() for p in module.parameters(recurse=False))
