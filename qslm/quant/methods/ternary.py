"""Ternary weights stored as ternary: rtn's symmetric two-bit grid has three levels ({-1, 0, +1} x scale,
codes 1..3), which two-bit codes store with a code to spare. This method rounds to the same levels and
stores them five to a byte (``qslm.quant.trits``): 1.6 bits a weight, scales as rtn stores them. Its
values are rtn's at two bits, bit for bit; only the bytes differ.

It is rtn on the ternary grid (``QuantSpec.trits``), which a search weighs by default, gptq and learned
rounding on it too; the method stays so that plans naming it (``{"bits": 2, "method": "ternary"}``) read and
load as before."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from ..quantizer import DEFAULT_METHOD, QuantizedTensor, QuantSpec, quantize_tensor
from .grid import GridMethod
from .registry import Needs

if TYPE_CHECKING:
    from ..context import QuantContext


class Ternary(GridMethod):
    name = "ternary"
    bits = (2,)
    needs = uses = Needs.WEIGHT
    stored_names = ("trits", "scale", "scale_exponent")
    colour = "tab:purple"
    default = False

    def settings_problem(self, spec: QuantSpec) -> str | None:
        if not spec.symmetric or spec.all_levels:
            return (f"method {self.name!r} stores the three levels of the symmetric two-bit grid; "
                    f"{'symmetric=false' if not spec.symmetric else 'all_levels=true'} gives four: use rtn")
        if spec.trits:
            return f"method {self.name!r} is rtn on the ternary grid already: drop trits, or use rtn with it"
        return None

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> QuantizedTensor:
        # rtn's rounding on the same grid; the result carries this method's spec
        rounded = quantize_tensor(weight, dataclasses.replace(spec, method=DEFAULT_METHOD))
        return dataclasses.replace(rounded, spec=spec)

    def stores_trits(self, spec: QuantSpec) -> bool:
        return True
