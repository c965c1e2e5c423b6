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
With parallel workers, uniform, greedy's one-unit raises, random and each NSGA-II generation are measured
as batches, and greedy's raising sequence ahead of need; HAWQ's traces stay in this process. Candidates
are still made in the one-process order, so every strategy's result is the same.
"""
from __future__ import annotations

import random
from typing import Callable

from .journal import assignment_key
from .problem import Candidate, SearchProblem


def uniform_search(problem: SearchProblem) -> Candidate | None:
    problem.evaluate_many([problem.uniform(bits) for bits in sorted(problem.bit_choices, reverse=True)], "uniform")
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
    raised = problem.evaluate_many([{**current.assignment, unit: highest} for unit in problem.units], "greedy")
    gains = {unit: -trial.score.quality_loss for unit, trial in zip(problem.units, raised)}
    order = sorted(gains, key=lambda u: (-gains[u], problem.units.index(u)))
    # each plan raises one more unit than the one before: the sequence is known before any is measured
    plans = [{**current.assignment, **{u: highest for u in order[:count]}} for count in range(1, len(order) + 1)]
    for index, assignment in enumerate(plans):
        if not problem.budget_left:
            break
        problem.prefetch(plans[index:])
        if problem.quality_ok(problem.evaluate(assignment, "greedy")):
            break
    return problem.best()


class DistinctDraws:
    """Counts sampled plans so that ``evaluations`` distinct ones are evaluated: a plan drawn again costs
    nothing and does not count. Bounded (100 draws per evaluation), for spaces smaller than the budget.
    Whether a draw is new is known before it is measured, so a batch of draws is the sequence a
    one-at-a-time loop would evaluate."""

    def __init__(self, problem: SearchProblem, evaluations: int):
        self.problem, self.draws_left = problem, 100 * evaluations
        left = problem.evaluations_left
        self.new_left = evaluations if left is None else min(evaluations, left)
        self.drawn: set[str] = set()

    def more(self) -> bool:
        return self.draws_left > 0 and self.new_left > 0

    def add(self, assignment: dict[str, int]) -> None:
        self.draws_left -= 1
        key = assignment_key(assignment)
        if key not in self.drawn and not self.problem.evaluated(assignment):
            self.new_left -= 1
        self.drawn.add(key)


def random_search(problem: SearchProblem, evaluations: int, seed: int) -> Candidate | None:
    rng = random.Random(seed)
    draws, plans = DistinctDraws(problem, evaluations), []
    while draws.more():
        plans.append({u: rng.choice(problem.bit_choices) for u in problem.units})
        draws.add(plans[-1])
    problem.evaluate_many(plans, "random")
    return problem.best()


def nsga2_search(problem: SearchProblem, evaluations: int, seed: int) -> Candidate | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = sorted(problem.bit_choices)
    memory_limit = problem.constraints.memory_limit_bytes(problem.baseline.memory_bytes)

    sampler = optuna.samplers.NSGAIISampler(seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def constrain(trial, candidate: Candidate) -> tuple[float, float]:
        # Optuna treats values <= 0 as satisfied.
        quality_limit = problem.constraints.quality_limit(problem.baseline.higher_is_better)
        trial.set_constraint("quality", candidate.score.judged_loss - quality_limit
                             if quality_limit is not None else 0.0)
        trial.set_constraint("memory", (candidate.memory_bytes - memory_limit) / memory_limit
                             if memory_limit else 0.0)
        return candidate.score.quality_loss, candidate.score.memory_fraction

    # One generation at a time, asked for together and told in order: NSGA-II samples a generation from
    # the generations before it only, so this is the sequence one trial at a time would give, and the
    # whole generation is measured at once.
    draws, told = DistinctDraws(problem, evaluations), 0
    while draws.more():
        generation_left = sampler.population_size - told % sampler.population_size  # every trial completes
        trials, plans = [], []
        while draws.more() and len(trials) < generation_left:
            trials.append(study.ask())
            plans.append({u: trials[-1].suggest_categorical(u, choices) for u in problem.units})
            draws.add(plans[-1])
        for trial, candidate in zip(trials, problem.evaluate_many(plans, "nsga2")):
            study.tell(trial, constrain(trial, candidate))
        told += len(trials)
    return problem.best()
