"""Which quantizer each unit uses at each bit-width, chosen by measurement.

With ``SearchConfig.methods`` naming more than round-to-nearest (``rtn``, ``gptq``, ``codebook``: see
``qslm.quant.quantizer``), every unit alone is fake-quantized with every method that applies to it at every
bit-width, and keeps, per bit-width, the one whose output damage on the calibration inputs is lowest among
those storing the same bytes (ties: the earlier method in the list); a method that stores more (the
codebook's levels) is kept only where its damage per byte beats the next bit-width's (``choose_methods``). The search then chooses bit-widths as always; a unit at b bits uses its
method for b, so a plan's choices are (method, bits) per unit, and bytes, energy and export follow the
spec. GPTQ needs the unit's calibration Hessian (``qslm.quant.unit_inputs``), recorded once from the
calibration inputs; a unit that has none (an embedding, a convolution) is not offered GPTQ.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from ..quant.apply import QuantContext
from ..quant.quantizer import CODEBOOK_BITS, QuantSpec
from ..quant.unit_inputs import record_hessians

SpecOf = Callable[[str, int], QuantSpec]


class Option(NamedTuple):
    """One method at one width for one unit, as the choice weighs it."""
    bytes: int
    damage: float
    order: int  # the method's place in the list: ties go to the earlier
    method: str


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
                   context: QuantContext | None, damage: Callable[[str, QuantSpec], float],
                   stored_bytes: Callable[[str, QuantSpec | None], int], progress=None,
                   units_budget: float | None = None) -> dict[str, dict[int, str]]:
    """unit -> bits -> method (only rtn: no measurement). At each width the unit takes, of the methods
    that store the fewest bytes (rtn, gptq), the one with the lowest ``damage(unit, spec)``; a method that
    stores more at that width (codebook: its levels) only where it buys damage more cheaply than the
    next width does, i.e. where its (bytes, damage) lies below the line from the cheapest method at this
    width to the cheapest at the next (float after the widest), with fewer bytes than the next.

    ``units_budget`` (the memory limit less the float tensors' bytes) keeps the limit as reachable as with
    the cheapest methods: while every unit at the lowest width would not fit in it, the unit whose pricier
    method there costs the least damage per byte to give up goes back to the cheapest."""
    chosen: dict[str, dict[int, str]] = {}
    widths = sorted(bit_choices)
    at_lowest: dict[str, tuple[Option, Option]] = {}  # unit -> (cheapest, chosen) at the lowest width
    for unit in units:
        measured: dict[int, list[Option]] = {}
        for bits in widths:
            options = [m for m in methods if applicable(unit, bits, m, context)] or ["rtn"]
            specs = [dataclasses.replace(base, bits=bits, method=m) for m in options]
            measured[bits] = [Option(stored_bytes(unit, spec), damage(unit, spec) if len(options) > 1 else 0.0, i, m)
                              for i, (m, spec) in enumerate(zip(options, specs))]
            if progress is not None:
                progress(len(methods))
        cheapest = {b: min(rows, key=lambda o: (o.bytes, o.damage, o.order)) for b, rows in measured.items()}
        chosen[unit] = {}
        for index, bits in enumerate(widths):
            floor = cheapest[bits]
            nxt = (cheapest[widths[index + 1]] if index + 1 < len(widths)
                   else Option(stored_bytes(unit, None), 0.0, len(methods), "float"))
            pricier = [o for o in measured[bits] if o.bytes > floor.bytes]
            best = min(pricier, key=lambda o: (o.damage, o.order), default=None)
            pick = best if best is not None and _below_line(best, floor, nxt) else floor
            chosen[unit][bits] = pick.method
            if index == 0:
                at_lowest[unit] = (floor, pick)
    if units_budget is not None:
        _keep_reachable(chosen, widths[0], at_lowest, units_budget)
    return chosen


def _keep_reachable(chosen: dict[str, dict[int, str]], lowest: int, at_lowest: dict[str, tuple[Option, Option]],
                    budget: float) -> None:
    """Give the cheapest method back at the lowest width, least damage per byte first, while the plan with
    every unit at that width stores more than ``budget``."""
    total = sum(pick.bytes for _, pick in at_lowest.values())
    giving_up = sorted(((cheap.damage - pick.damage) / (pick.bytes - cheap.bytes), position, unit)
                       for position, (unit, (cheap, pick)) in enumerate(at_lowest.items()) if pick.bytes > cheap.bytes)
    for _, _, unit in giving_up:
        if total <= budget:
            return
        cheap, pick = at_lowest[unit]
        chosen[unit][lowest] = cheap.method
        total -= pick.bytes - cheap.bytes


def _below_line(point: Option, start: Option, end: Option) -> bool:
    """``point`` lies strictly below the (bytes, damage) segment from ``start`` to ``end``, under ``start``'s
    damage and short of ``end``'s bytes: each extra byte lowers the damage more than moving to ``end``
    would (bytes that reach ``end``'s are better spent there)."""
    if point.damage >= start.damage or point.bytes >= end.bytes:
        return False
    slope = (end.damage - start.damage) / (end.bytes - start.bytes)
    return point.damage < start.damage + slope * (point.bytes - start.bytes)


def spec_function(base: QuantSpec, chosen: dict[str, dict[int, str]]) -> SpecOf:
    specs: dict[tuple[str, int], QuantSpec] = {}

    def spec_of(unit: str, bits: int) -> QuantSpec:
        key = (unit, bits)
        if key not in specs:
            specs[key] = dataclasses.replace(base, bits=bits, method=chosen.get(unit, {}).get(bits, base.method))
        return specs[key]
    return spec_of
