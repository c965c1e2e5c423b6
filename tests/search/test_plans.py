"""From an assignment (unit -> width) to a plan and its journal key."""
from __future__ import annotations

from qslm.quant.plan import FLOAT_BITS
from qslm.quant.quantizer import QuantSpec
from qslm.search.journal import assignment_key
from qslm.search.plans import PlanSpecs, specs_key


def spec_of(unit: str, bits: int) -> QuantSpec:
    return QuantSpec(bits, method="gptq" if unit == "b" else "rtn")


def test_a_plan_holds_each_units_spec_and_float_units_as_none():
    plan = PlanSpecs(spec_of, keyed_by_method=True).plan({"a": 4, "b": 2, "c": FLOAT_BITS})
    assert plan.units == {"a": QuantSpec(4), "b": QuantSpec(2, method="gptq"), "c": None}


def test_the_key_names_methods_only_when_units_may_differ_in_method():
    assignment = {"a": 4, "b": 2}
    assert PlanSpecs(spec_of, keyed_by_method=False).key(assignment) == assignment_key(assignment)
    by_method = PlanSpecs(spec_of, keyed_by_method=True).key(assignment)
    assert by_method == specs_key({"a": QuantSpec(4), "b": QuantSpec(2, method="gptq")}) != assignment_key(assignment)
    rtn_only = PlanSpecs(lambda u, b: QuantSpec(b), keyed_by_method=True).key(assignment)
    assert rtn_only != by_method  # the same widths with other methods are another plan
