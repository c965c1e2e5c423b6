"""Baseline search strategies, sharing QSLM's evaluator, cache, journal and report:

* ``uniform``: every bit-width in the choices applied to all units; best feasible wins.
* ``hawq``: HAWQ-V3 style. Per-unit Hessian trace (Hutchinson estimator on the calibration loss) times
  the squared weight perturbation of each bit-width gives Omega(unit, bits); an exact knapsack (dynamic
  programme over bytes) minimises sum Omega under a memory budget. Without a memory constraint, the
  budget is bisected on the real metric until the quality constraint is just met.
* ``greedy``: Intel Neural Compressor's basic fallback: start with every unit at the lowest bit-width,
  measure how much raising each unit alone to the highest bit-width recovers, then raise units in that
  order until the quality constraint holds.
* ``random``: seeded uniform sampling of per-unit bit-widths.
* ``nsga2``: Optuna's NSGA-II sampler over per-unit bit-widths, minimising (quality loss, memory) with
  the constraints as Optuna constraints.
Budgets (``max_evaluations`` of the problem) are enforced by the problem itself; random and nsga2 spend
their ``evaluations`` on distinct plans (a plan sampled again is not evaluated again, nor counted).
"""
from __future__ import annotations

import random
from typing import Callable

from .problem import Candidate, SearchProblem


def uniform_search(problem: SearchProblem) -> Candidate | None:
    for bits in sorted(problem.bit_choices, reverse=True):
        if not problem.budget_left:
            break
        problem.evaluate(problem.uniform(bits), "uniform")
    return problem.best()


def knapsack(units: list[str], costs: dict[str, dict[int, float]], sizes: dict[str, dict[int, int]],
             budget: int, resolution: int = 2000) -> dict[str, int] | None:
    """Choose one bit-width per unit minimising total cost with total size <= budget (sizes quantised
    to ``resolution`` steps of the budget, rounded up so the solution never exceeds it)."""
    if budget < 0:
        return None
    step = max(1, budget // resolution)
    capacity = budget // step
    INF = float("inf")
    best = [0.0] + [INF] * capacity  # best[c]: min cost using exactly <= c steps so far
    choice: list[list[tuple[int, int]]] = []
    for unit in units:
        options = [(bits, -(-sizes[unit][bits] // step), costs[unit][bits]) for bits in sorted(sizes[unit])]
        new = [INF] * (capacity + 1)
        picked = [(-1, -1)] * (capacity + 1)
        for used, value in enumerate(best):
            if value == INF:
                continue
            for bits, weight, cost in options:
                total = used + weight
                if total <= capacity and value + cost < new[total]:
                    new[total] = value + cost
                    picked[total] = (bits, used)
        best = new
        choice.append(picked)
    end = min(range(capacity + 1), key=lambda c: (best[c], c))
    if best[end] == INF:
        return None
    assignment = {}
    for unit, picked in zip(reversed(units), reversed(choice)):
        bits, previous = picked[end]
        assignment[unit] = bits
        end = previous
    return dict(sorted(assignment.items(), key=lambda kv: units.index(kv[0])))


def hawq_search(problem: SearchProblem, omega: Callable[[str, int], float]) -> Candidate | None:
    """``omega(unit, bits)``: Hessian-trace-weighted perturbation of quantizing ``unit`` to ``bits``."""
    units = problem.units
    costs = {u: {b: omega(u, b) for b in problem.bit_choices} for u in units}
    limit = problem.constraints.memory_limit_bytes(problem.baseline.memory_bytes)
    budget_fixed = problem.fixed_bytes
    low = sum(min(problem.unit_bytes[u].values()) for u in units)
    high = sum(max(problem.unit_bytes[u].values()) for u in units)
    if limit is not None:
        plan = knapsack(units, costs, problem.unit_bytes, int(limit) - budget_fixed)
        if plan is not None:
            problem.evaluate(plan, "hawq")
        return problem.best()
    # No memory limit: smallest budget whose knapsack plan still meets the quality constraint.
    top = high
    while problem.budget_left and high - low > max(1, high // 200):
        middle = (low + high) // 2
        plan = knapsack(units, costs, problem.unit_bytes, middle)
        if plan is None:
            low = middle
            continue
        candidate = problem.evaluate(plan, "hawq")
        if problem.quality_ok(candidate):
            high = middle
        else:
            low = middle
    if high == top and problem.budget_left:  # no smaller budget met quality: the top of the range is left
        problem.evaluate(problem.uniform(max(problem.bit_choices)), "hawq")
    return problem.best()


def greedy_search(problem: SearchProblem) -> Candidate | None:
    lowest, highest = min(problem.bit_choices), max(problem.bit_choices)
    current = problem.evaluate(problem.uniform(lowest), "greedy")
    if problem.quality_ok(current):
        return problem.best()
    gains = {}
    for unit in problem.units:
        if not problem.budget_left:
            break
        trial = problem.evaluate({**current.assignment, unit: highest}, "greedy")
        gains[unit] = -trial.score.quality_loss
    assignment = dict(current.assignment)
    for unit in sorted(gains, key=lambda u: (-gains[u], problem.units.index(u))):
        if not problem.budget_left:
            break
        assignment[unit] = highest
        if problem.quality_ok(problem.evaluate(assignment, "greedy")):
            break
    return problem.best()


def _distinct_evaluations(problem: SearchProblem, evaluations: int, draw: Callable[[], None]) -> None:
    """Call ``draw`` (one sampled plan, evaluated) until ``evaluations`` distinct plans were evaluated: a
    plan drawn again costs nothing and does not count. Bounded, for spaces smaller than the budget."""
    target = len(problem.candidates) + evaluations
    for _ in range(100 * evaluations):
        if len(problem.candidates) >= target or not problem.budget_left:
            break
        draw()


def random_search(problem: SearchProblem, evaluations: int, seed: int) -> Candidate | None:
    rng = random.Random(seed)
    _distinct_evaluations(problem, evaluations, lambda: problem.evaluate(
        {u: rng.choice(problem.bit_choices) for u in problem.units}, "random"))
    return problem.best()


def nsga2_search(problem: SearchProblem, evaluations: int, seed: int) -> Candidate | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = sorted(problem.bit_choices)
    memory_limit = problem.constraints.memory_limit_bytes(problem.baseline.memory_bytes)

    sampler = optuna.samplers.NSGAIISampler(seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        assignment = {u: trial.suggest_categorical(u, choices) for u in problem.units}
        candidate = problem.evaluate(assignment, "nsga2")
        # Optuna treats values <= 0 as satisfied.
        quality_limit = problem.constraints.quality_limit(problem.baseline.higher_is_better)
        trial.set_constraint("quality", candidate.score.quality_loss - quality_limit
                             if quality_limit is not None else 0.0)
        trial.set_constraint("memory", (candidate.memory_bytes - memory_limit) / memory_limit
                             if memory_limit else 0.0)
        return candidate.score.quality_loss, candidate.score.memory_fraction

    _distinct_evaluations(problem, evaluations, lambda: study.optimize(objective, n_trials=1))
    return problem.best()
