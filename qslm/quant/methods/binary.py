"""One bit a weight: the sign, times one scale per row or group. The scale that minimises the squared
error of ``scale * sign(w)`` is the mean of ``|w|`` over the group (least squares), so nothing is
searched. Stored as packed sign bits (1 for >= 0) and rtn's scales (float16 under one exponent, or
float32).

Opt-in: a search tries it when ``methods`` names it and ``bit_choices`` holds 1
(``--bits 1,2,3,4,5,6,8 --methods rtn,gptq,codebook,binary``); a plan names it per unit
(``{"bits": 1, "method": "binary"}``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..quantizer import QuantizedTensor, QuantSpec, check_group_size, grouped, with_stored_scales
from .grid import GridMethod
from .registry import Needs

if TYPE_CHECKING:
    from ..context import QuantContext


class SignTensor(QuantizedTensor):
    """Codes 0/1 (negative / non-negative) [n_groups, group_len] and a scale per group."""

    def dequantize(self) -> torch.Tensor:
        return signs_times_scales(self.codes, self.scale).reshape(self.shape)


def signs_times_scales(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (2 * codes.to(torch.float32) - 1) * scale.to(torch.float32)[:, None]


class Binary(GridMethod):
    name = "binary"
    bits = (1,)
    needs = uses = Needs.WEIGHT
    stored_names = ("codes", "scale", "scale_exponent")
    colour = "tab:brown"
    default = False

    def settings_problem(self, spec: QuantSpec) -> str | None:
        if not spec.symmetric:
            return f"symmetric=false makes no sense with method {self.name!r}: a sign has no zero-point"
        if spec.all_levels:
            return f"all_levels=true makes no sense with method {self.name!r}: one bit is a sign, two levels"
        if spec.observer != "mse":
            return (f"observer={spec.observer!r} makes no sense with method {self.name!r}: its scale is the "
                    "least-squares one (the mean |w| of a group), with no range to observe; leave observer 'mse'")
        return None

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> SignTensor:
        check_group_size(weight.shape, spec, unit)
        groups = grouped(weight.detach().to(torch.float32), spec)
        codes = (groups >= 0).to(torch.int32)
        return with_stored_scales(SignTensor(codes, groups.abs().mean(dim=1), None, spec, weight.shape))

    def values(self, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
               ) -> torch.Tensor:
        return signs_times_scales(codes, scale)
