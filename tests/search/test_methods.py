"""Choosing a quantizer per unit and bit-width: the least damage among methods of equal bytes, and a
method that stores more only where its extra bytes lower the damage more cheaply than the next width."""
from __future__ import annotations

import dataclasses
import random

import pytest

from qslm.search.config import BASE_SPEC
from qslm.search.methods import BytesByWidth, MethodChoice, choose_methods

# bytes per (method, bits) of one unit; the codebook stores its levels on top of the codes
BYTES = {("rtn", 2): 100, ("gptq", 2): 100, ("codebook", 2): 130,
         ("rtn", 3): 150, ("gptq", 3): 150, ("codebook", 3): 190,
         ("rtn", 4): 200, ("gptq", 4): 200, ("codebook", 4): 300}
FLOAT_BYTES = 1600


def choose(damages: dict[tuple[str, int], float], methods=("rtn", "gptq", "codebook"), bits=(2, 3, 4)):
    measured = []

    def damage(unit, spec):
        measured.append((spec.method, spec.bits))
        return damages[(spec.method, spec.bits)]

    def stored(unit, spec):
        return FLOAT_BYTES if spec is None else BYTES[(spec.method, spec.bits)]

    chosen = choose_methods(["u"], list(bits), methods, BASE_SPEC, _AlwaysHessian(), damage, stored)["u"]
    return chosen, measured


class _AlwaysHessian:
    def hessian(self, name):
        return object()


def test_equal_bytes_take_the_least_damage():
    chosen, _ = choose({("rtn", 2): 5.0, ("gptq", 2): 3.0, ("rtn", 3): 1.0, ("gptq", 3): 2.0, ("rtn", 4): 0.5,
                        ("gptq", 4): 0.5}, methods=("rtn", "gptq"))
    assert chosen == {2: "gptq", 3: "rtn", 4: "rtn"}  # a tie: the earlier method


def test_a_pricier_method_must_beat_the_next_widths_exchange_rate():
    base = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("rtn", 3): 4.0, ("gptq", 3): 4.0, ("rtn", 4): 1.0,
            ("gptq", 4): 1.0, ("codebook", 4): 0.9}
    # 2 bits: 30 extra bytes; the line from gptq-2 (100 B, 8.0) to rtn-3 (150 B, 4.0) is at 5.6 there
    chosen, _ = choose({**base, ("codebook", 2): 5.0, ("codebook", 3): 3.9})
    assert chosen[2] == "codebook"  # 5.0 < 5.6: cheaper damage than a third bit
    chosen, _ = choose({**base, ("codebook", 2): 6.0, ("codebook", 3): 3.9})
    assert chosen[2] == "gptq"  # lower damage than gptq, but a third bit buys more per byte
    # 3 bits: 40 extra bytes of the 50 to 4 bits; the line is at 1.6 there
    assert chosen[3] == "rtn"
    chosen, _ = choose({**base, ("codebook", 2): 6.0, ("codebook", 3): 1.5})
    assert chosen[3] == "codebook"


def test_a_pricier_method_storing_the_next_widths_bytes_is_never_chosen(monkeypatch):
    # a 3-bit codebook storing what 4 bits store (200 bytes), where 4 bits measure worse than 3 (noise):
    # its bytes are better spent on the next width, whatever the line says
    monkeypatch.setitem(BYTES, ("codebook", 3), 200)
    damages = {("rtn", 2): 10.0, ("gptq", 2): 10.0, ("codebook", 2): 11.0, ("rtn", 3): 4.0, ("gptq", 3): 4.0,
               ("codebook", 3): 0.1, ("rtn", 4): 4.5, ("gptq", 4): 4.5, ("codebook", 4): 5.0}
    assert choose(damages)[0][3] == "rtn"


def test_at_the_widest_width_float_is_the_next_step():
    base = {("rtn", 2): 10.0, ("gptq", 2): 10.0, ("codebook", 2): 11.0, ("rtn", 3): 4.0, ("gptq", 3): 4.0,
            ("codebook", 3): 5.0, ("rtn", 4): 1.0, ("gptq", 4): 1.0}
    # 4 bits -> float: 1400 bytes for 1.0 of damage; the codebook's 100 extra bytes must save > 0.071
    assert choose({**base, ("codebook", 4): 0.95})[0][4] == "rtn"
    assert choose({**base, ("codebook", 4): 0.5})[0][4] == "codebook"


def test_a_worse_pricier_method_is_never_chosen():
    damages = {(m, b): 1.0 / b for m in ("rtn", "gptq") for b in (2, 3, 4)}
    damages.update({("codebook", b): 2.0 for b in (2, 3, 4)})
    chosen, measured = choose(damages)
    assert set(chosen.values()) == {"rtn"}
    assert len(measured) == 9  # every applicable (method, bits) measured once


def test_round_to_nearest_alone_measures_nothing():
    chosen, measured = choose({}, methods=("rtn",))
    assert chosen == {2: "rtn", 3: "rtn", 4: "rtn"} and measured == []


def test_a_tight_memory_limit_gets_the_cheapest_methods_back_at_the_lowest_width():
    damages = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0, ("rtn", 3): 4.5, ("gptq", 3): 4.5,
               ("codebook", 3): 4.4, ("rtn", 4): 1.0, ("gptq", 4): 1.0, ("codebook", 4): 0.9}
    assert choose(damages)[0][2] == "codebook"

    def chosen_under(budget):
        return choose_methods(["u", "v"], [2, 3, 4], ("rtn", "gptq", "codebook"), BASE_SPEC, _AlwaysHessian(),
                              lambda unit, spec: damages[(spec.method, spec.bits)] * (2 if unit == "v" else 1),
                              lambda unit, spec: FLOAT_BYTES if spec is None else BYTES[(spec.method, spec.bits)],
                              units_budget=budget)

    assert {u: c[2] for u, c in chosen_under(260).items()} == {"u": "codebook", "v": "codebook"}
    # 230 bytes: one codebook must go; u's costs less damage to give up (4 against 8 for 30 bytes)
    assert {u: c[2] for u, c in chosen_under(230).items()} == {"u": "gptq", "v": "codebook"}
    assert {u: c[2] for u, c in chosen_under(150).items()} == {"u": "gptq", "v": "gptq"}  # as far as it goes
    assert chosen_under(150)["u"][3] == "rtn"  # wider widths keep their choice


def stored(unit, spec):
    return FLOAT_BYTES if spec is None else BYTES[(spec.method, spec.bits)]


def test_a_width_is_decided_when_first_asked_for_and_measures_only_what_it_needs():
    measured = []

    def make(damages):
        def measure(jobs):
            measured.append([(unit, spec.method, spec.bits) for unit, spec in jobs])
            return [damages[(spec.method, spec.bits)] for _, spec in jobs]
        return MethodChoice(["u", "v"], [2, 3, 4], ("rtn", "gptq", "codebook"), BASE_SPEC, _AlwaysHessian(),
                            measure, stored)

    choice = make(DAMAGES)
    assert measured == [] and choice.decided() == {"u": {}, "v": {}}
    assert choice.spec("u", 2).bits == 2
    # every method of both units at 2 bits; the codebook beat the cheapest there, so the line to 3 bits
    # needs the cheapest methods (rtn, gptq) at 3
    assert measured == [[(u, m, 2) for u in "uv" for m in ("rtn", "gptq", "codebook")],
                        [(u, m, 3) for u in "uv" for m in ("rtn", "gptq")]]
    assert set(choice.decided()["v"]) == {2}  # v decided with u
    choice.spec("v", 2), choice.spec("u", 2)
    assert len(measured) == 2  # decided once
    choice.spec("v", 4)
    # 4 bits, the widest: every method there, nothing after it
    assert measured[2:] == [[(u, m, 4) for u in "uv" for m in ("rtn", "gptq", "codebook")]]
    assert set(choice.decided()["u"]) == {2, 4}
    assert choice.spec("u", 8).method == BASE_SPEC.method  # a width outside the choices: the base method

    measured.clear()
    choice = make({**DAMAGES, ("codebook", 2): 9.0})  # worse than gptq: no line to draw, 3 bits not measured
    assert choice.spec("u", 2).method == "gptq"
    assert measured == [[(u, m, 2) for u in "uv" for m in ("rtn", "gptq", "codebook")]]


DAMAGES = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0, ("rtn", 3): 4.5, ("gptq", 3): 4.5,
           ("codebook", 3): 4.4, ("rtn", 4): 1.0, ("gptq", 4): 1.0, ("codebook", 4): 0.9}


def test_deciding_widths_in_any_order_chooses_what_deciding_all_first_does():
    generator = random.Random(0)
    units = [f"u{i}" for i in range(6)]
    damages = {(u, m, b): generator.uniform(0.1, 10.0) / b for u in units for m in ("rtn", "gptq", "codebook")
               for b in (2, 3, 4)}

    def make(budget):
        return MethodChoice(units, [2, 3, 4], ("rtn", "gptq", "codebook"), BASE_SPEC, _AlwaysHessian(),
                            lambda jobs: [damages[(u, s.method, s.bits)] for u, s in jobs], stored,
                            units_budget=budget)

    for budget in (None, 700, 900):
        everything = make(budget).decide_all()
        for order in ([4, 2, 3], [3, 4, 2], [2, 4, 3]):
            lazy = make(budget)
            for bits in order:
                for unit in reversed(units):
                    lazy.spec(unit, bits)
            assert lazy.decided() == everything, (budget, order)
        assert any(m != "rtn" for by_bits in everything.values() for m in by_bits.values())


def test_bytes_by_width_reads_a_width_only_when_asked():
    asked = []

    def spec_of(unit, bits):
        asked.append(bits)
        return dataclasses.replace(BASE_SPEC, bits=bits)

    row = BytesByWidth("u", [2, 3, 4], spec_of, lambda unit, spec: BYTES[("rtn", spec.bits)])
    assert list(row) == [2, 3, 4] and len(row) == 3 and asked == []
    assert row[3] == 150 and row[3] == 150 and asked == [3]
    assert dict(row) == {2: 100, 3: 150, 4: 200}
    with pytest.raises(KeyError):
        row[8]


def test_choices_no_better_together_go_back_to_the_first_method_of_equal_bytes():
    damages = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0, ("rtn", 3): 4.5, ("gptq", 3): 4.0,
               ("codebook", 3): 4.4, ("rtn", 4): 1.0, ("gptq", 4): 0.8, ("codebook", 4): 0.9}
    compared = []

    def no_worse_at(widths):
        def no_worse(chosen, back):
            compared.append(({u: s.method for u, s in chosen.items()}, {u: s.method for u, s in back.items()}))
            return next(iter(chosen.values())).bits in widths
        return no_worse

    def choose_with(widths):
        return MethodChoice(["u", "v"], [2, 3, 4], ("rtn", "gptq", "codebook"), BASE_SPEC, _AlwaysHessian(),
                            lambda jobs: [damages[(s.method, s.bits)] for _, s in jobs], stored,
                            no_worse_together=no_worse_at(widths)).decide_all()

    assert choose_with({2, 3, 4})["u"] == {2: "codebook", 3: "gptq", 4: "gptq"}
    # 2 bits: both codebooks, nothing of equal bytes to compare; 3 and 4: gptq against rtn, codebooks kept
    assert compared == [({"u": "gptq", "v": "gptq"}, {"u": "rtn", "v": "rtn"})] * 2
    chosen = choose_with({3})
    assert chosen["u"] == chosen["v"] == {2: "codebook", 3: "gptq", 4: "rtn"}


def test_a_mixed_width_keeps_its_pricier_methods_when_the_equal_bytes_ones_go_back():
    damages = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0}
    damages_v = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 9.0}
    compared = []

    def no_worse(chosen, back):
        compared.append(({u: s.method for u, s in chosen.items()}, {u: s.method for u, s in back.items()}))
        return False

    choice = MethodChoice(["u", "v"], [2], ("rtn", "gptq", "codebook"), BASE_SPEC, _AlwaysHessian(),
                          lambda jobs: [(damages if u == "u" else damages_v)[(s.method, s.bits)] for u, s in jobs],
                          stored, no_worse_together=no_worse)
    assert choice.spec("u", 2).method == "codebook" and choice.spec("v", 2).method == "rtn"
    assert compared == [({"u": "codebook", "v": "gptq"}, {"u": "codebook", "v": "rtn"})]


class _HessianOf:
    def __init__(self, *names):
        self.names = set(names)

    def hessian(self, name):
        return object() if name in self.names else None


def test_units_with_a_hessian_are_weighed_by_the_local_error_and_the_others_by_the_measured_damage():
    local = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 9.0, ("rtn", 3): 4.0, ("gptq", 3): 3.0}
    measured = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0,  # the codebook would win here
                ("rtn", 3): 4.5, ("gptq", 3): 4.5, ("codebook", 3): 4.4}
    calls = {"local": [], "measure": []}

    def by(kind, table):
        def damages(jobs):
            calls[kind].append([(u, s.method, s.bits) for u, s in jobs])
            return [table[(s.method, s.bits)] for _, s in jobs]
        return damages

    choice = MethodChoice(["u", "e"], [2, 3], ("rtn", "gptq", "codebook"), BASE_SPEC, _HessianOf("u"),
                          by("measure", measured), stored, local=by("local", local))
    assert choice.spec("u", 2).method == "gptq"  # by its local error: the codebook does not beat gptq there
    assert choice.spec("e", 2).method == "codebook"  # no Hessian: no gptq, and measured
    assert calls["local"] == [[("u", m, 2) for m in ("rtn", "gptq", "codebook")]]
    # e's codebook beat its rtn: the line to 3 bits needs e's rtn there, measured too
    assert calls["measure"] == [[("e", "rtn", 2), ("e", "codebook", 2)], [("e", "rtn", 3)]]


def test_a_binding_memory_limit_ranks_the_units_by_their_measured_damage():
    # both units take the codebook at 2 bits by their local errors; measured, giving up u's costs more
    local = {("rtn", 2): 10.0, ("gptq", 2): 8.0, ("codebook", 2): 4.0, ("rtn", 3): 4.5, ("gptq", 3): 4.5,
             ("codebook", 3): 4.4}
    local_v = {**local, ("codebook", 2): 2.0}  # locally, v's codebook saves the more
    measured = {"u": {("gptq", 2): 9.0, ("codebook", 2): 1.0}, "v": {("gptq", 2): 5.0, ("codebook", 2): 4.0}}
    asked = []

    def measure(jobs):
        asked.append([(u, s.method, s.bits) for u, s in jobs])
        return [measured[u][(s.method, s.bits)] for u, s in jobs]

    def make(budget):
        return MethodChoice(["u", "v"], [2, 3], ("rtn", "gptq", "codebook"), BASE_SPEC, _HessianOf("u", "v"),
                            measure, stored, units_budget=budget,
                            local=lambda jobs: [(local if u == "u" else local_v)[(s.method, s.bits)] for u, s in jobs])

    assert {u: c[2] for u, c in make(260).decide_all().items()} == {"u": "codebook", "v": "codebook"}
    assert asked == []  # the limit does not bite: nothing measured
    assert {u: c[2] for u, c in make(230).decide_all().items()} == {"u": "codebook", "v": "gptq"}
    assert asked == [[("u", "gptq", 2), ("u", "codebook", 2), ("v", "gptq", 2), ("v", "codebook", 2)]]


def grid_choice(damages: dict[tuple[str, str, int], float], grids, methods=("rtn", "gptq")):
    """Per width, the (method, grid) chosen for one unit; the asymmetric grid stores 2 bytes more."""
    def damage(unit, spec):
        return damages[(spec.method, spec.grid, spec.bits)]

    def stored(unit, spec):
        if spec is None:
            return FLOAT_BYTES
        return BYTES[(spec.method, spec.bits)] + 2 * (spec.grid == "asym") - 20 * (spec.grid == "ternary")

    choice = MethodChoice(["u"], [2, 3], methods, BASE_SPEC, _AlwaysHessian(),
                          lambda jobs: [damage(u, s) for u, s in jobs], stored, grids=grids)
    choice.decide_all()
    return choice


def test_grids_are_weighed_per_unit_like_methods():
    damages = {("rtn", "sym", 2): 5.0, ("rtn", "signed", 2): 4.0, ("gptq", "sym", 2): 3.0,
               ("gptq", "signed", 2): 2.0, ("rtn", "asym", 2): 1.9, ("gptq", "asym", 2): 1.0,
               ("rtn", "sym", 3): 1.0, ("rtn", "signed", 3): 1.5, ("gptq", "sym", 3): 1.2,
               ("gptq", "signed", 3): 1.1, ("rtn", "asym", 3): 0.95, ("gptq", "asym", 3): 0.9}
    choice = grid_choice(damages, ("sym", "signed"))
    assert choice.decided() == {"u": {2: "gptq", 3: "rtn"}} and choice.decided_grids() == {"u": {2: "signed", 3: "sym"}}
    spec = choice.spec("u", 2)
    assert (spec.method, spec.symmetric, spec.all_levels) == ("gptq", True, True)
    # the asymmetric grid stores zero-points: a pricier option, taken where its damage per byte beats the
    # next width's (2 extra bytes for 1.0 less damage at 2 bits; at 3 bits, 0.2 less against float's rate)
    choice = grid_choice(damages, ("sym", "signed", "asym"))
    assert choice.decided_grids() == {"u": {2: "asym", 3: "asym"}} and choice.decided()["u"] == {2: "gptq", 3: "gptq"}
    # ... but not where it buys damage more dearly than the next width: 3 bits cost 50 bytes for 1.0 less
    choice = grid_choice({**damages, ("rtn", "asym", 2): 1.99, ("gptq", "asym", 2): 1.99}, ("sym", "signed", "asym"))
    assert choice.decided_grids()["u"][2] == "signed"
    # with the base spec's grid alone, nothing changes: the symmetric grid
    choice = grid_choice(damages, None)
    assert choice.decided_grids() == {"u": {2: "sym", 3: "sym"}} and choice.decided() == {"u": {2: "gptq", 3: "rtn"}}


def test_one_method_on_two_grids_is_a_choice_and_is_measured():
    damages = {("rtn", "sym", 2): 5.0, ("rtn", "signed", 2): 4.0, ("rtn", "sym", 3): 1.0, ("rtn", "signed", 3): 1.5}
    choice = grid_choice(damages, ("sym", "signed"), methods=("rtn",))
    assert choice.decided_grids() == {"u": {2: "signed", 3: "sym"}}


def test_the_ternary_grid_stands_for_two_bits_where_the_full_grid_buys_too_little():
    """Ternary stores 20 bytes fewer than the full 2-bit grid (signed here; the symmetric grid's levels are the
    ternary grid's, so where a method has both only ternary is weighed) (80 against 100; 3 bits: 150). It is taken where the
    full 2-bit grid lies on or above the line from ternary to 3 bits, so that its 20 bytes buy less than the
    next width's bytes do; otherwise the 2-bit grid stays. 3 bits never has it."""
    damages = {("rtn", "signed", 2): 5.0, ("gptq", "signed", 2): 3.0, ("rtn", "ternary", 2): 5.0,
               ("gptq", "ternary", 2): 3.2, ("rtn", "signed", 3): 1.0, ("gptq", "signed", 3): 1.2,
               ("rtn", "asym", 3): 0.9, ("gptq", "asym", 3): 0.9}
    # from ternary (80, 3.2) to 3 bits (150, 1.0) the line at 100 bytes is 2.57: the 2-bit grid (3.0) is above it
    choice = grid_choice(damages, ("signed", "ternary"))
    assert choice.decided_grids() == {"u": {2: "ternary", 3: "signed"}} and choice.decided()["u"] == {2: "gptq", 3: "rtn"}
    assert choice.spec("u", 2).trits and not choice.spec("u", 3).trits
    # where ternary damages much more, the 2-bit grid is on the line's right side: it stays
    choice = grid_choice({**damages, ("rtn", "ternary", 2): 9.0, ("gptq", "ternary", 2): 8.0}, ("signed", "ternary"))
    assert choice.decided_grids()["u"][2] == "signed"
    # a pricier grid is then weighed against the line from the ternary choice
    choice = grid_choice({**damages, ("rtn", "asym", 2): 1.5, ("gptq", "asym", 2): 1.2}, ("signed", "asym", "ternary"))
    assert choice.decided_grids()["u"][2] == "asym"


def test_a_limit_below_every_unit_at_two_bits_is_reached_with_the_ternary_grid():
    """Two bits store 100 bytes a unit, ternary 80. Neither unit takes ternary on its own line; under a budget
    of 180 one of the two must, the one whose measured damage rises least per byte saved (v's)."""
    local = {("rtn", "signed", 2): 5.0, ("gptq", "signed", 2): 3.0, ("rtn", "ternary", 2): 6.0, ("gptq", "ternary", 2): 5.0,
             ("rtn", "signed", 3): 1.0, ("gptq", "signed", 3): 1.2}
    measured = {"u": {("gptq", "signed"): 1.0, ("gptq", "ternary"): 3.0}, "v": {("gptq", "signed"): 1.0, ("gptq", "ternary"): 1.5}}
    asked = []

    def measure(jobs):
        asked.append([(u, s.method, s.grid) for u, s in jobs])
        return [measured[u][(s.method, s.grid)] for u, s in jobs]

    def stored(unit, spec):
        return FLOAT_BYTES if spec is None else BYTES[(spec.method, spec.bits)] - 20 * (spec.grid == "ternary")

    def make(budget):
        return MethodChoice(["u", "v"], [2, 3], ("rtn", "gptq"), BASE_SPEC, _HessianOf("u", "v"), measure, stored,
                            units_budget=budget, grids=("signed", "ternary"),
                            local=lambda jobs: [local[(s.method, s.grid, s.bits)] for u, s in jobs])

    choice = make(200)
    choice.decide_all()
    assert choice.decided_grids() == {"u": {2: "signed", 3: "signed"}, "v": {2: "signed", 3: "signed"}}
    assert asked == []  # the limit does not bite: nothing measured
    choice = make(180)
    choice.decide_all()
    assert choice.decided_grids() == {"u": {2: "signed", 3: "signed"}, "v": {2: "ternary", 3: "signed"}}
    assert choice.decided() == {"u": {2: "gptq", 3: "rtn"}, "v": {2: "gptq", 3: "rtn"}}
    assert sorted(asked[0]) == [("u", "gptq", "signed"), ("u", "gptq", "ternary"), ("v", "gptq", "signed"),
                                ("v", "gptq", "ternary")]
    # a budget only ternary everywhere meets: both
    assert all(make(160).spec(u, 2).trits for u in ("u", "v"))


def test_the_symmetric_grid_at_two_bits_gives_way_to_the_ternary_one():
    """The symmetric two-bit grid's three levels are the ternary grid's, in more bytes: where a method has both,
    only the ternary one is weighed (and it is all there is, so nothing is measured at two bits)."""
    asked = []

    def damage(unit, spec):
        asked.append((spec.method, spec.grid, spec.bits))
        return 1.0

    choice = MethodChoice(["u"], [2, 3], ("rtn",), BASE_SPEC, _AlwaysHessian(), lambda jobs: [damage(*j) for j in jobs],
                          lambda unit, spec: FLOAT_BYTES if spec is None else BYTES[("rtn", spec.bits)],
                          grids=("sym", "ternary"))
    choice.decide_all()
    assert choice.decided_grids() == {"u": {2: "ternary", 3: "sym"}} and asked == []
