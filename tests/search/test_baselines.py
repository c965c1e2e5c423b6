"""Baseline strategies on the synthetic problem (see ``conftest.py``), and the exact knapsack they use."""
from __future__ import annotations

import itertools
import random

import pytest

from qslm.search import baselines
from qslm.search.journal import assignment_key
from qslm.search.objective import Constraints
from tests.search.conftest import BITS, FIXED, FP32_BYTES, GROUPS, Synthetic, unit_bytes

UNITS = [u for units in GROUPS.values() for u in units]
MIN_MEMORY_PLAN = {**{u: 2 for u in UNITS}, "b1.a": 4, "head": 4}  # smallest plan losing <= 1 point
nsga2_warnings = pytest.mark.filterwarnings("error::FutureWarning")  # no deprecated optuna API


def brute_force(units, costs, sizes, budget):
    best = None
    for bits in itertools.product(*(sorted(sizes[u]) for u in units)):
        size = sum(sizes[u][b] for u, b in zip(units, bits))
        cost = sum(costs[u][b] for u, b in zip(units, bits))
        if size <= budget and (best is None or cost < best[0] - 1e-12):
            best = (cost, dict(zip(units, bits)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_is_exact_on_small_instances(seed):
    rng = random.Random(seed)
    units = [f"u{i}" for i in range(5)]
    bits = [2, 3, 4, 8]
    sizes = {u: {b: rng.randint(1, 40) * b for b in bits} for u in units}
    costs = {u: {b: rng.random() * (9 - b) ** 2 for b in bits} for u in units}
    smallest = sum(min(sizes[u].values()) for u in units)
    largest = sum(max(sizes[u].values()) for u in units)
    for budget in (smallest, (smallest + largest) // 2, largest, smallest - 1):
        expected = brute_force(units, costs, sizes, budget)
        plan = baselines.knapsack(units, costs, sizes, budget)
        if expected is None:
            assert plan is None
            continue
        assert list(plan) == units
        assert sum(sizes[u][b] for u, b in plan.items()) <= budget
        assert sum(costs[u][b] for u, b in plan.items()) == pytest.approx(expected[0])


def test_knapsack_with_coarse_steps_never_exceeds_budget():
    rng = random.Random(7)
    units = [f"u{i}" for i in range(12)]
    sizes = {u: {b: rng.randint(1000, 5000) * b for b in BITS} for u in units}
    costs = {u: {b: rng.random() / b for b in BITS} for u in units}
    for budget in range(sum(min(s.values()) for s in sizes.values()), 1_000_000, 37_003):
        plan = baselines.knapsack(units, costs, sizes, budget, resolution=50)
        if plan is not None:
            assert sum(sizes[u][b] for u, b in plan.items()) <= budget


def test_knapsack_budget_below_zero_or_too_small():
    sizes = {"a": {2: 10, 8: 40}}
    costs = {"a": {2: 1.0, 8: 0.0}}
    assert baselines.knapsack(["a"], costs, sizes, 9) is None
    assert baselines.knapsack(["a"], costs, sizes, 0) is None
    assert baselines.knapsack(["a"], costs, sizes, -5) is None
    assert baselines.knapsack(["a"], costs, sizes, 10) == {"a": 2}


def test_uniform_picks_best_feasible_uniform(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0))
    best = baselines.uniform_search(problem)
    assert [c.assignment for c in problem.candidates] == [problem.uniform(b) for b in (8, 4, 2)]
    feasible = [c for c in problem.candidates if c.score.feasible]
    assert len(feasible) == 2 and best is min(feasible, key=lambda c: c.score.objective)
    # memory weighs more: the 4-bit plan wins
    heavy = synthetic.problem(Constraints(max_drop=1.0), weights="memory=10")
    assert baselines.uniform_search(heavy).assignment == heavy.uniform(4)
    assert baselines.uniform_search(synthetic.problem(Constraints(max_drop=1.0, max_memory=0.11))) is None


def omega(synthetic):
    return lambda unit, bits: synthetic.sensitivity((unit,), bits)


def test_hawq_with_memory_limit_is_the_knapsack_optimum(synthetic):
    constraints = Constraints(max_drop=1.0, max_memory=0.11)
    problem = synthetic.problem(constraints)
    best = baselines.hawq_search(problem, omega(synthetic))
    assert len(synthetic.measured) == 1 and best is problem.candidates[0]
    limit = 0.11 * FP32_BYTES
    assert best.score.feasible and best.memory_bytes <= limit
    sizes = {u: {b: unit_bytes(u, b) for b in BITS} for u in UNITS}
    costs = {u: {b: synthetic.sensitivity((u,), b) for b in BITS} for u in UNITS}
    optimum, _ = brute_force(UNITS, costs, sizes, int(limit) - FIXED)
    assert synthetic.loss_points(best.assignment) == pytest.approx(optimum)


def test_hawq_memory_limit_below_fixed_bytes_is_infeasible(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=f"{FIXED // 2}B"))
    assert baselines.hawq_search(problem, omega(synthetic)) is None
    assert synthetic.measured == []


def test_hawq_without_memory_limit_bisects_to_the_smallest_plan(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0))
    best = baselines.hawq_search(problem, omega(synthetic))
    unit_range = sum(unit_bytes(u, 8) - unit_bytes(u, 2) for u in UNITS)
    tolerance = sum(unit_bytes(u, 8) for u in UNITS) // 200
    assert len(problem.candidates) <= (unit_range // tolerance).bit_length() + 1
    # the bisection gets within its tolerance of the smallest plan that keeps quality...
    smallest = min(c.memory_bytes for c in problem.candidates if problem.quality_ok(c))
    assert smallest <= problem.memory_bytes(MIN_MEMORY_PLAN) + tolerance
    # ...and, like every strategy, returns the feasible plan with the lowest objective
    assert best.score.feasible
    assert best is min((c for c in problem.candidates if c.score.feasible), key=lambda c: c.score.objective)


def test_hawq_without_memory_limit_finds_the_only_feasible_plan(synthetic):
    # No loss at all is allowed: only all-8-bit qualifies, the top of the bisection range.
    problem = synthetic.problem(Constraints(max_drop=0.0))
    best = baselines.hawq_search(problem, omega(synthetic))
    assert best is not None and best.assignment == problem.uniform(8)


def test_greedy_raises_units_until_quality_holds(synthetic):
    problem = synthetic.problem(Constraints(max_drop=1.0))
    best = baselines.greedy_search(problem)
    # from all-2-bit, raising b1.a (5 points back) then head (3 points) to 8 bits meets 1 point
    assert best.assignment == {**{u: 2 for u in UNITS}, "b1.a": 8, "head": 8}
    assert problem.quality_ok(best)
    keys = [assignment_key(a) for a in synthetic.measured]
    assert len(keys) == len(set(keys)) == 1 + len(UNITS) + 1


def test_greedy_stops_at_once_when_lowest_is_good(synthetic):
    problem = synthetic.problem(Constraints(max_drop=10.0))
    assert baselines.greedy_search(problem).assignment == problem.uniform(2)
    assert len(synthetic.measured) == 1


def sampled(tmp_path, strategy, evaluations, seed, max_evaluations=None, bits=BITS):
    synthetic = Synthetic(tmp_path)
    problem = synthetic.problem(Constraints(max_drop=1.0, max_memory=0.11), max_evaluations, bits=bits)
    best = strategy(problem, evaluations, seed)
    return synthetic, problem, best


@pytest.mark.parametrize("strategy", [baselines.random_search,
                                      pytest.param(baselines.nsga2_search, marks=nsga2_warnings)])
def test_sampling_strategies_use_the_budget_and_are_seeded(tmp_path, strategy):
    runs = [sampled(tmp_path / f"run{i}", strategy, 25, seed=3) for i in range(2)]
    for synthetic, problem, best in runs:
        assert len(synthetic.measured) == len(problem.candidates) == 25
        assert len({assignment_key(a) for a in synthetic.measured}) == 25
        assert best is None or best.score.feasible
    assert runs[0][0].measured == runs[1][0].measured
    other, _, _ = sampled(tmp_path / "other", strategy, 25, seed=4)
    assert other.measured != runs[0][0].measured
    capped, _, _ = sampled(tmp_path / "capped", strategy, 25, seed=3, max_evaluations=7)
    assert len(capped.measured) == 7


@pytest.mark.parametrize("strategy", [baselines.random_search,
                                      pytest.param(baselines.nsga2_search, marks=nsga2_warnings)])
def test_sampling_strategies_spend_the_budget_on_distinct_plans(tmp_path, strategy):
    """A sampler that draws a plan it has already seen must not count it: with two bit-widths the space
    has 1024 plans, and 100 draws almost surely repeat some."""
    synthetic, problem, _ = sampled(tmp_path, strategy, 100, seed=0, bits=[2, 8])
    assert len(synthetic.measured) == len(problem.candidates) == 100


def test_sampling_stops_when_the_space_is_exhausted(tmp_path):
    synthetic = Synthetic(tmp_path)
    problem = synthetic.problem(Constraints(max_drop=1.0), bits=[8])
    baselines.random_search(problem, 5, seed=0)
    assert len(synthetic.measured) == 1


def candidates_of(problem) -> list[tuple]:
    return [(c.index, c.tier, assignment_key(c.assignment), c.metric) for c in problem.candidates]


@pytest.mark.parametrize("run", [
    baselines.uniform_search, baselines.greedy_search,
    lambda problem: baselines.random_search(problem, 30, seed=1),
    pytest.param(lambda problem: baselines.nsga2_search(problem, 60, seed=1), marks=nsga2_warnings),
])
def test_batched_strategies_make_the_one_at_a_time_candidates(tmp_path, run):
    constraints = Constraints(max_drop=1.0, max_memory=0.11)
    one = Synthetic(tmp_path / "one").problem(constraints)
    run(one)
    ahead = Synthetic(tmp_path / "ahead").problem(constraints, speculation=8)
    run(ahead)
    assert candidates_of(ahead) == candidates_of(one)


@nsga2_warnings
def test_nsga2_generations_are_the_trials_one_at_a_time_would_sample(tmp_path):
    """Asking for a whole generation before telling any of it samples what asking and telling one trial
    at a time does (two generations of 50, and part of a third)."""
    import optuna

    problem = Synthetic(tmp_path / "batched").problem(Constraints(max_drop=1.0, max_memory=0.11))
    baselines.nsga2_search(problem, 120, seed=2)
    sampler = optuna.samplers.NSGAIISampler(seed=2)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    reference = Synthetic(tmp_path / "reference").problem(Constraints(max_drop=1.0, max_memory=0.11))
    while len(reference.candidates) < 120:
        trial = study.ask()
        candidate = reference.evaluate({u: trial.suggest_categorical(u, BITS) for u in reference.units}, "nsga2")
        trial.set_constraint("quality", candidate.score.quality_loss - 1.0)
        trial.set_constraint("memory", candidate.memory_bytes / (0.11 * FP32_BYTES) - 1)
        study.tell(trial, (candidate.score.quality_loss, candidate.score.memory_fraction))
    assert candidates_of(problem) == candidates_of(reference)
