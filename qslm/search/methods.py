"""Which quantizer each unit uses at each bit-width, chosen by measurement.

With ``SearchConfig.methods`` naming more than round-to-nearest (``rtn``, ``gptq``, ``codebook``: see
``qslm.quant.quantizer``), every unit alone is fake-quantized with every method that applies to it at every
bit-width, and keeps, per bit-width, the one whose output damage on the calibration inputs is lowest (ties:
the earlier method in the list). The search then chooses bit-widths as always; a unit at b bits uses its
method for b, so a plan's choices are (method, bits) per unit, and bytes, energy and export follow the
spec. GPTQ needs the unit's calibration Hessian (``qslm.quant.unit_inputs``), recorded once from the
calibration inputs; a unit that has none (an embedding, a convolution) is not offered GPTQ.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from ..quant.apply import QuantContext
from ..quant.quantizer import CODEBOOK_BITS, QuantSpec
from ..quant.unit_inputs import record_hessians

SpecOf = Callable[[str, int], QuantSpec]


def record_context(model: nn.Module, inputs: list, methods: tuple[str, ...], reset=None) -> QuantContext | None:
    """The calibration Hessians of every unit, when a method needs them (None for rtn alone)."""
    if all(m == "rtn" for m in methods):
        return None
    return QuantContext(record_hessians(model, inputs, reset))


def applicable(unit: str, bits: int, method: str, context: QuantContext | None) -> bool:
    if method == "gptq":
        return context is not None and context.hessian(unit) is not None
    if method == "codebook":
        return bits in CODEBOOK_BITS
    return True


def choose_methods(units: list[str], bit_choices: list[int], methods: tuple[str, ...], base: QuantSpec,
                   context: QuantContext | None, damage: Callable[[str, QuantSpec], float], progress=None
                   ) -> dict[str, dict[int, str]]:
    """unit -> bits -> method with the lowest ``damage(unit, spec)`` (only rtn: no measurement)."""
    chosen: dict[str, dict[int, str]] = {}
    for unit in units:
        chosen[unit] = {}
        for bits in bit_choices:
            options = [m for m in methods if applicable(unit, bits, m, context)] or ["rtn"]
            if len(options) == 1:
                chosen[unit][bits] = options[0]
                if progress is not None:
                    progress(len(methods))
                continue
            scores = [(damage(unit, dataclasses.replace(base, bits=bits, method=m)), i, m) for i, m in enumerate(options)]
            chosen[unit][bits] = min(scores)[2]
            if progress is not None:
                progress(len(methods))
    return chosen


def spec_function(base: QuantSpec, chosen: dict[str, dict[int, str]]) -> SpecOf:
    specs: dict[tuple[str, int], QuantSpec] = {}

    def spec_of(unit: str, bits: int) -> QuantSpec:
        key = (unit, bits)
        if key not in specs:
            specs[key] = dataclasses.replace(base, bits=bits, method=chosen.get(unit, {}).get(bits, base.method))
        return specs[key]
    return spec_of
