"""Ternary weights stored as ternary: rtn's symmetric two-bit grid has three levels ({-1, 0, +1} x scale,
codes 1..3), which two-bit codes store with a code to spare. This method rounds to the same levels and
stores them five to a byte (``qslm.quant.trits``): 1.6 bits a weight, scales as rtn stores them. Its
values are rtn's at two bits, bit for bit; only the bytes differ.

Opt-in: a search tries it when ``methods`` names it (``--methods rtn,gptq,codebook,ternary``), and a plan
names it per unit (``{"bits": 2, "method": "ternary"}``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ..quantizer import DEFAULT_METHOD, QuantizedTensor, QuantSpec, code_range, quantize_tensor
from ..trits import pack_trits, packed_trits, unpack_trits
from .grid import GridMethod
from .registry import Needs, StoredTensor

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
        return None

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> QuantizedTensor:
        # rtn's rounding on the same grid; the result carries this method's spec
        rounded = quantize_tensor(weight, dataclasses.replace(spec, method=DEFAULT_METHOD))
        return dataclasses.replace(rounded, spec=spec)

    def codes_layout(self, n_codes: int, spec: QuantSpec) -> StoredTensor:
        return StoredTensor("trits", packed_trits(n_codes), torch.uint8)

    def pack(self, codes: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
        return {"trits": pack_trits(codes - code_range(spec)[0])}

    def unpack(self, stored: Mapping[str, torch.Tensor], spec: QuantSpec, n_codes: int) -> torch.Tensor:
        return unpack_trits(stored["trits"], n_codes).to(torch.int32) + code_range(spec)[0]
