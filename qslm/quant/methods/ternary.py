"""Ternary weights stored as ternary: rtn's symmetric two-bit grid has three levels ({-1, 0, +1} x scale,
codes 1..3), which two-bit codes store with a code to spare. This method rounds to the same levels and
stores them five to a byte (``qslm.quant.trits``): 1.6 bits a weight, scales as rtn stores them. Its
values are rtn's at two bits, bit for bit; only the bytes differ.

Opt-in: a search tries it when ``methods`` names it (``--methods rtn,gptq,codebook,ternary``), and a plan
names it per unit (``{"bits": 2, "method": "ternary"}``)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ..quantizer import (
    DEFAULT_METHOD,
    QuantizedTensor,
    QuantSpec,
    code_range,
    dequantize_groups,
    float16_scale,
    group_count,
    quantize_tensor,
)
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
        return dataclasses.replace(quantize_tensor(weight, dataclasses.replace(spec, method=DEFAULT_METHOD)), spec=spec)

    def stored_layout(self, shape: tuple[int, ...], spec: QuantSpec) -> list[StoredTensor]:
        layout = [StoredTensor("trits", packed_trits(math.prod(shape)), torch.uint8),
                  StoredTensor("scale", group_count(shape, spec), getattr(torch, spec.scale_dtype))]
        if spec.scale_dtype == "float16":
            layout.append(StoredTensor("scale_exponent", 1, torch.int8))
        return layout

    def stored_tensors(self, quantized: QuantizedTensor) -> dict[str, torch.Tensor]:
        lowest, _ = code_range(quantized.spec)
        stored = {"trits": pack_trits(quantized.codes - lowest), "scale": quantized.stored_scale()}
        if quantized.spec.scale_dtype == "float16":
            stored["scale_exponent"] = torch.tensor([quantized.scale_exponent], dtype=torch.int8)
        return stored

    def dequantize_stored(self, stored: Mapping[str, torch.Tensor], spec: QuantSpec, shape: torch.Size
                          ) -> torch.Tensor:
        scale = stored["scale"]
        if "scale_exponent" in stored:
            scale = float16_scale(scale, int(stored["scale_exponent"]))
        lowest, _ = code_range(spec)
        codes = unpack_trits(stored["trits"], math.prod(shape)).to(torch.int32) + lowest
        return dequantize_groups(codes.view(scale.numel(), -1), scale, None, spec)
