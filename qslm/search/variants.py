"""A unit's quantizer options at one width, and how they trade bytes for damage.

A ``Variant`` is a registered method on a named grid. The method choice (``qslm.search.methods``) weighs a
unit's variants at a width as ``Option``s, points (bytes, damage), and keeps those that buy damage more
cheaply than the next width does (``below_line``); under a memory limit it gives pricier ones back
(``keep_reachable``)."""
from __future__ import annotations

from typing import NamedTuple

from ..quant.methods import method_named
from ..quant.quantizer import TERNARY_BITS, QuantSpec, grid_taken


class Variant(NamedTuple):
    """A quantizer a unit may take at a width: a registered method on a named grid (``GRIDS``). A method
    off the grid (the codebook) fits its own levels, and its grid is the base spec's."""
    method: str
    grid: str

    def spec(self, base: QuantSpec, bits: int) -> QuantSpec:
        """``base`` at ``bits`` with this method, on this grid."""
        return base.on_grid(self.grid, bits=bits, method=self.method)

    def takes(self, bits: int) -> bool:
        """Whether its grid holds at ``bits`` (the ternary grid: two bits only)."""
        return self.grid != "ternary" or bits == TERNARY_BITS


def variants(methods: tuple[str, ...], grids: tuple[str, ...], base: QuantSpec) -> tuple[Variant, ...]:
    """Each method on each of ``grids`` it can honour (ternary and one bit: the symmetric grid only), the
    methods in their order and each method's grids in theirs; a method off the grid once."""
    found = []
    for method in methods:
        declared = method_named(method)
        for grid in (grids if declared.grid else (base.grid,)):
            if grid_taken(declared, base, grid):
                found.append(Variant(method, grid))
    return tuple(found)


class Option(NamedTuple):
    """One variant at one width for one unit, as the choice weighs it."""
    bytes: int
    damage: float
    order: int  # the variant's place in the list: ties go to the earlier
    variant: Variant


def keep_reachable(chosen: dict[str, dict[int, Variant]], lowest: int, at_lowest: dict[str, tuple[Option, Option]],
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
        chosen[unit][lowest] = cheap.variant
        total -= pick.bytes - cheap.bytes


def below_line(point: Option, start: Option, end: Option) -> bool:
    """``point`` lies strictly below the (bytes, damage) segment from ``start`` to ``end``, under ``start``'s
    damage and short of ``end``'s bytes: each extra byte lowers the damage more than moving to ``end``
    would (bytes that reach ``end``'s are better spent there)."""
    if point.damage >= start.damage or point.bytes >= end.bytes:
        return False
    slope = (end.damage - start.damage) / (end.bytes - start.bytes)
    return point.damage < start.damage + slope * (point.bytes - start.bytes)
