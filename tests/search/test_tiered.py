"""The tiered search on a synthetic problem whose answer is known: per-unit accuracy loss is additive
and the sensitivity proxy agrees with it (see ``conftest.py``)."""
from __future__ import annotations

import pytest

from qslm.search.journal import assignment_key
from qslm.search.objective import Constraints
from qslm.search.tiered import descend, global_tier, lower_bits, raise_within, tiered_search
from tests.search.conftest import BITS, FP32_BYTES, GROUPS, INSENSITIVE, LOSS, Synthetic, unit_bytes

ALL_LOW_BUT_SENSITIVE = {**{u: 2 for units in GROUPS.values() for u in units}, "b1.a": 4, "head": 4}


def block_result(assignment: dict[str, int]) -> dict[str, int]:
    """Blocks b0 and b2 at 2 bits, b1 and the head kept at 4."""
    return {u: 2 if u.split(".")[0] in ("b0", "b2") else 4 for u in assignment}


def test_lower_bits():
    assert lower_bits(BITS, 8) == 4 and lower_bits(BITS, 4) == 2 and lower_bits(BITS, 2) is None
    assert lower_bits([2, 3, 8], 5) == 3


def test_global_tier_picks_lowest_uniform_that_meets_quality(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0))
    start = global_tier(problem)
    # uniform 2 loses 8.016 points (too many), uniform 4 loses 0.304: evaluated from the lowest up
    assert [c.assignment for c in problem.candidates] == [problem.uniform(2), problem.uniform(4)]
    assert start.assignment == problem.uniform(4)
    assert start.score.quality_loss == pytest.approx(0.304)
    assert not problem.quality_ok(problem.candidates[0])


def test_block_tier_meets_memory_limit_uniform_cannot(synthetic):
    # 11% of FP32 = 10670 B: uniform 4 needs 13640 B, uniform 2 loses too much accuracy.
    constraints = Constraints(max_drop=1.0, max_memory=0.11)
    problem = synthetic.problem(constraints)
    for bits in BITS:
        assert not problem.evaluate(problem.uniform(bits), "uniform").score.feasible
    problem = synthetic.problem(constraints)
    start = global_tier(problem)
    assert not start.score.feasible and start.score.violations[0].startswith("memory")
    result = descend(problem, start, {name: tuple(units) for name, units in GROUPS.items()}, "block")
    assert result.score.feasible
    assert result.assignment == block_result(result.assignment)
    assert result.memory_bytes == 10140 <= 0.11 * FP32_BYTES
    # the sensitive block was tried as a whole and refused on quality
    tried_b1 = [c for c in problem.candidates if c.tier == "block" and c.assignment["b1.b"] == 2]
    assert tried_b1 and all(not problem.quality_ok(c) for c in tried_b1)


def test_module_tier_lowers_cheap_modules_inside_sensitive_block(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=0.11))
    best = tiered_search(problem)
    assert best.assignment == ALL_LOW_BUT_SENSITIVE
    assert best.score.feasible and best.score.quality_loss == pytest.approx(0.316)
    assert best.memory_bytes == problem.memory_bytes(best.assignment) == 8640
    assert best.memory_bytes == 1000 + sum(unit_bytes(u, b) for u, b in best.assignment.items())
    assert best.tier == "module"
    # module moves run in order of predicted damage per byte: b1.b, b1.c, then head (refused); b1.a at
    # 2 bits is the plan the block tier already measured for the whole of b1, so it is not measured again
    after_blocks = block_result(best.assignment)
    modules = [c.assignment for c in problem.candidates if c.tier == "module"]
    assert modules == [{**after_blocks, "b1.b": 2}, {**after_blocks, "b1.b": 2, "b1.c": 2},
                       {**ALL_LOW_BUT_SENSITIVE, "head": 2}]
    assert {**ALL_LOW_BUT_SENSITIVE, "b1.a": 2} in [c.assignment for c in problem.candidates if c.tier == "block"]
    assert {c.tier for c in problem.candidates} == {"global", "block", "module"}
    assert best is problem.best()


def test_result_respects_every_constraint(synthetic):
    constraints = Constraints(max_drop=0.5, max_memory=0.1, max_energy=0.1)
    problem = synthetic.problem(constraints)
    best = tiered_search(problem)
    assert best is not None and best.score.feasible
    assert best.score.quality_loss <= 0.5 and best.memory_bytes <= 0.1 * FP32_BYTES
    assert best.energy_pj <= 0.1 * problem.baseline.energy_pj
    assert all(best.score.objective <= c.score.objective for c in problem.candidates if c.score.feasible)


def test_impossible_quality_is_infeasible_with_closest_plans(tmp_path):
    lossy = {u: {8: 0.5, 4: 1.0, 2: 5.0} for units in GROUPS.values() for u in units}
    problem = Synthetic(tmp_path, loss=lossy).problem(Constraints(max_drop=0.1))
    assert tiered_search(problem) is None
    assert len(problem.candidates) == len(BITS)  # every uniform width tried, nothing else
    closest = problem.closest()
    violations = [problem.violation(c) for c in closest]
    assert violations == sorted(violations) and violations[0] > 0
    assert closest[0].assignment == problem.uniform(8)
    assert all(not c.score.feasible and c.score.violations for c in closest)


def test_memory_limit_nothing_meets_is_infeasible(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=0.05))
    assert tiered_search(problem) is None
    closest = problem.closest(n=len(problem.candidates))
    assert [problem.violation(c) for c in closest] == sorted(problem.violation(c) for c in problem.candidates)
    # the smallest plan that keeps quality is the closest one
    assert closest[0].assignment == ALL_LOW_BUT_SENSITIVE


# The large b0.b (4000 parameters) loses 0.6 points at 2 bits; the small b1.a loses 0.5 at 2 bits and nothing
# at 4. Lowering cheapest-damage-per-byte first, the descents take b1.a to 2 bits before b0.b, and then
# b0.b cannot follow: 8640 B, over the 8245 B limit. Only trading works: b0.b to 2 bits, b1.a back to 4.
TRADE_LOSS = {**{unit: INSENSITIVE for unit in LOSS}, "b0.b": {8: 0.0, 4: 0.05, 2: 0.6},
              "b1.a": {8: 0.0, 4: 0.0, 2: 0.5}}
TRADE_LIMIT = 0.085  # of FP32: 8245 B


def test_trade_tier_lowers_a_large_unit_and_raises_small_sensitive_ones(tmp_path):
    synthetic = Synthetic(tmp_path, loss=TRADE_LOSS)
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=TRADE_LIMIT))
    best = tiered_search(problem)
    stuck = [c for c in problem.candidates if c.tier == "module" and c.index < problem.candidates[-1].index]
    assert any(c.memory_bytes == 8640 and problem.quality_ok(c) for c in stuck)  # where the descents end
    trades = [c for c in problem.candidates if c.tier == "trade"]
    assert len(trades) == 1 and trades[0].score.feasible
    assert trades[0].assignment["b0.b"] == 2 and trades[0].assignment["b1.a"] == 4
    # then the module descent lowers what the trade raised beyond need
    assert best.assignment == {**{u: 2 for units in GROUPS.values() for u in units}, "b1.a": 4}
    assert best.memory_bytes == 7890 <= TRADE_LIMIT * FP32_BYTES
    assert best.score.quality_loss == pytest.approx(0.616)


# Five sensitive units: the descents spend the quality budget where their measured damage per byte is
# lowest and end over the 9,506 B limit; the one trade that lowers a single unit (b0.b) and fits is a plan
# the module tier already refused. The last trade starts from the smallest plan instead and raises the
# units that remove most damage per byte, within the limit.
FILL_LOSS = {**{unit: INSENSITIVE for unit in LOSS},
             "b0.a": {8: 0.0, 4: 0.05, 2: 0.9}, "b0.b": {8: 0.0, 4: 0.02, 2: 0.54},
             "b1.b": {8: 0.0, 4: 0.06, 2: 0.28}, "b1.c": {8: 0.0, 4: 0.01, 2: 0.65},
             "head": {8: 0.0, 4: 0.01, 2: 0.78}}
FILL_LIMIT = 0.098  # of FP32: 9506 B


def test_last_trade_fills_the_smallest_plan_up_to_the_limit(tmp_path):
    problem = Synthetic(tmp_path, loss=FILL_LOSS).problem(Constraints(max_drop=1.0, max_memory=FILL_LIMIT))
    best = tiered_search(problem)
    smallest = problem.uniform(2)
    filled = raise_within(problem, smallest, int(FILL_LIMIT * FP32_BYTES) - problem.memory_bytes(smallest), None)
    assert filled == {**smallest, "b0.a": 4, "b1.a": 4, "b1.c": 4, "head": 4}
    fill = next(c for c in problem.candidates if c.assignment == filled)
    assert fill.tier == "trade" and fill.score.feasible and fill.memory_bytes == 9390
    assert not any(c.score.feasible for c in problem.candidates if c.index < fill.index)  # nothing before it
    # then the module descent lowers b1.a, which the fill raised for little
    assert best.assignment == {**filled, "b1.a": 2} and best.memory_bytes == 9140
    assert best.score.quality_loss == pytest.approx(0.9)


def test_no_trade_when_a_plan_is_already_feasible(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=0.11))
    tiered_search(problem)
    assert all(c.tier != "trade" for c in problem.candidates)


def test_raise_within_spends_only_the_headroom_and_keeps_the_lowered_unit(tmp_path):
    problem = Synthetic(tmp_path, loss=TRADE_LOSS).problem(Constraints(max_drop=1.0, max_memory=TRADE_LIMIT))
    low = problem.uniform(2)
    for headroom in (0, 249, 250, 600, 10_000):
        raised = raise_within(problem, low, headroom, keep="b0.b")
        assert raised["b0.b"] == 2
        assert 0 <= problem.memory_bytes(raised) - problem.memory_bytes(low) <= headroom
    assert raise_within(problem, low, 249, keep="b0.b") == low
    # the most sensitivity removed per byte goes first: b1.a (0.5 points for 250 B)
    assert raise_within(problem, low, 250, keep="b0.b") == {**low, "b1.a": 4}


def test_deterministic(tmp_path):
    runs = []
    for index in range(2):
        synthetic = Synthetic(tmp_path / str(index))
        problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=0.11))
        tiered_search(problem)
        runs.append([(c.tier, assignment_key(c.assignment), c.score.objective) for c in problem.candidates])
    assert runs[0] == runs[1]


def test_each_assignment_measured_once(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0))
    tiered_search(problem)
    keys = [assignment_key(a) for a in synthetic.measured]
    assert len(keys) == len(set(keys)) == len(problem.candidates)
    # asking again costs nothing
    again = problem.evaluate(problem.candidates[0].assignment, "block")
    assert again is problem.candidates[0] and len(synthetic.measured) == len(keys)


@pytest.mark.parametrize("budget", [1, 2, 3, 5])
def test_max_evaluations_respected(synthetic, budget):
    problem = synthetic.problem(Constraints(max_drop=1.0), max_evaluations=budget)
    tiered_search(problem)
    assert len(synthetic.measured) == len(problem.candidates) <= budget


def test_resumed_evaluations_come_from_the_journal(tmp_path):
    first = Synthetic(tmp_path)
    problem = first.problem(Constraints(max_drop=1.0))
    tiered_search(problem)
    second = Synthetic(tmp_path)  # same journal file name and header
    replay = second.problem(Constraints(max_drop=1.0))
    tiered_search(replay)
    assert second.measured == [] and all(c.resumed for c in replay.candidates)
    assert replay.best().assignment == problem.best().assignment


def made(problem) -> list[tuple]:
    return [(c.index, c.tier, assignment_key(c.assignment), c.metric) for c in problem.candidates]


@pytest.mark.parametrize("loss, constraints, budget", [
    (LOSS, Constraints(max_drop=1.0, max_memory=0.11), None),
    (LOSS, Constraints(max_drop=1.0, max_memory=0.11), 6),
    (TRADE_LOSS, Constraints(max_drop=1.0, max_memory=TRADE_LIMIT), None),  # through the trade tier
])
def test_measuring_ahead_makes_the_same_candidates(tmp_path, loss, constraints, budget):
    one = Synthetic(tmp_path / "one", loss=loss).problem(constraints, budget)
    tiered_search(one)
    synthetic = Synthetic(tmp_path / "ahead", loss=loss)
    ahead = synthetic.problem(constraints, budget, speculation=4)
    tiered_search(ahead)
    assert made(ahead) == made(one)
    # it did measure moves the order never reached, and made neither candidates nor journal entries of them
    assert len(synthetic.measured) > len(ahead.candidates)
    assert len(ahead.journal.entries) == len(ahead.candidates)
    if budget is not None:
        assert len(ahead.candidates) == budget
