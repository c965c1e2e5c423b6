"""From a strategy's assignment (unit -> bit-width) to a quantization plan: each unit's spec at its width
comes from ``spec_of`` (the base spec at that width, or the search's choice of method per unit and width,
``qslm.search.methods.MethodChoice.spec``, which may measure before it answers)."""
from __future__ import annotations

from collections.abc import Mapping

from ..quant.plan import FLOAT_BITS, QuantPlan
from ..quant.quantizer import QuantSpec
from .journal import assignment_key
from .methods import SpecOf


class PlanSpecs:
    def __init__(self, spec_of: SpecOf, keyed_by_method: bool):
        # With one method and grid a plan's journal key is its widths; with several it names each unit's
        # method and grid too (a memory limit that changes a unit's method at the lowest width changes its
        # plans' keys).
        self.spec_of, self.keyed_by_method = spec_of, keyed_by_method

    def specs(self, members: tuple[str, ...], bits: int) -> dict[str, QuantSpec]:
        return {u: self.spec_of(u, bits) for u in members}

    def plan(self, assignment: Mapping[str, int]) -> QuantPlan:
        return QuantPlan({u: None if b == FLOAT_BITS else self.spec_of(u, b) for u, b in assignment.items()})

    def key(self, assignment: Mapping[str, int]) -> str:
        """The journal key of ``assignment``'s plan."""
        return specs_key(self.plan(assignment).units) if self.keyed_by_method else assignment_key(assignment)


def specs_key(specs: Mapping[str, QuantSpec | None]) -> str:
    """A plan's journal key when units may differ in method or grid: each unit's width and method, and its
    grid where it is not the symmetric one (so keys written before grids were chosen read unchanged)."""
    return assignment_key({u: FLOAT_BITS if s is None else [s.bits, s.method] + ([s.grid] if s.grid != "sym" else [])
                           for u, s in specs.items()})
