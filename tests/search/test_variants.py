"""A unit's quantizer options at a width: each method on each grid it can honour, and the ternary grid at two
bits only."""
from __future__ import annotations

from qslm.search.config import BASE_SPEC
from qslm.search.variants import Variant, below_line, Option, variants


def test_variants_put_each_method_on_each_grid_it_can_honour():
    found = variants(("rtn", "ternary", "codebook", "gptq"), ("sym", "signed", "asym"), BASE_SPEC)
    # ternary stores the symmetric grid's three levels only; a codebook fits its own levels: once
    assert found == (Variant("rtn", "sym"), Variant("rtn", "signed"), Variant("rtn", "asym"), Variant("ternary", "sym"),
                     Variant("codebook", "sym"), Variant("gptq", "sym"), Variant("gptq", "signed"),
                     Variant("gptq", "asym"))




def test_the_ternary_grid_is_a_variant_of_the_grid_methods_at_two_bits_only():
    found = variants(("rtn", "codebook", "gptq"), ("sym", "ternary"), BASE_SPEC)
    assert found == (Variant("rtn", "sym"), Variant("rtn", "ternary"), Variant("codebook", "sym"),
                     Variant("gptq", "sym"), Variant("gptq", "ternary"))
    assert Variant("gptq", "ternary").takes(2) and not Variant("gptq", "ternary").takes(3)
    assert Variant("gptq", "ternary").spec(BASE_SPEC, 2).trits


def test_a_point_below_the_line_buys_damage_more_cheaply_than_the_next_width():
    start, end = Option(100, 3.0, 0, Variant("rtn", "sym")), Option(150, 1.0, 1, Variant("rtn", "sym"))
    assert below_line(Option(110, 2.0, 2, Variant("rtn", "asym")), start, end)  # the line is at 2.6 there
    assert not below_line(Option(110, 2.9, 2, Variant("rtn", "asym")), start, end)
    assert not below_line(Option(150, 0.5, 2, Variant("rtn", "asym")), start, end)  # as dear as the next width
