"""Round to nearest on the spec's uniform grid (``qslm.quant.quantizer.quantize_tensor``): the default
method, needing nothing but the weight."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..quantizer import QuantizedTensor, QuantSpec, quantize_tensor
from ..widths import GRID_BITS
from .grid import GridMethod
from .registry import Needs

if TYPE_CHECKING:
    from ..context import QuantContext


class RoundToNearest(GridMethod):
    name = "rtn"  # quantizer.DEFAULT_METHOD: what a spec that names no method means
    bits = GRID_BITS
    needs = uses = Needs.WEIGHT
    colour = "tab:blue"
    default = True

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> QuantizedTensor:
        return quantize_tensor(weight, spec)
