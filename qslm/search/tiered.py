"""QSLM's tiered mixed-precision search: global -> block -> module.

Global tier: evaluate uniform bit-widths from the lowest up; the first whose quality meets the
  constraint on the validation slice is the starting plan (if none does within the evaluation
  budget, the problem is infeasible and the closest plans are returned).
Block tier: each block (and each unit outside blocks, as a group of one) may step down to the next
  lower bit-width. Moves are tried in order of predicted damage per byte saved: the increase of the
  group's measured sensitivity (KL of outputs vs float, quantizing that group alone) divided by the
  bytes the step saves. Each move is checked with the real task metric; it is kept when quality
  still meets its constraint and the plan gets better (an infeasible plan -- e.g. over the memory
  limit -- gets closer to feasible; a feasible one lowers the objective). A kept group is queued
  again for its next step down; a refused group is not tried lower in this tier.
Module tier: the same descent, one module at a time, so blocks that could not go lower as a whole
  still lower their cheap modules (e.g. the FFN value while the receptance stays wide).
The result is the feasible candidate with the lowest objective among all evaluated.
"""
from __future__ import annotations

import heapq

from .problem import Assignment, Candidate, SearchProblem


def lower_bits(choices: list[int], bits: int) -> int | None:
    lower = [b for b in choices if b < bits]
    return max(lower) if lower else None


def global_tier(problem: SearchProblem) -> Candidate | None:
    with problem.progress_bar(len(problem.bit_choices), "global tier") as bar:
        for bits in sorted(problem.bit_choices):
            if not problem.budget_left:
                break
            candidate = problem.evaluate(problem.uniform(bits), "global")
            bar.update(1)
            if problem.quality_ok(candidate):
                return candidate
    return None


def descend(problem: SearchProblem, current: Candidate, items: dict[str, tuple[str, ...]], tier: str) -> Candidate:
    """Greedy step-down over ``items`` (name -> units moved together), cheapest damage per byte first."""
    order = {name: position for position, name in enumerate(items)}

    def move(name: str, assignment: Assignment):
        units = items[name]
        bits = max(assignment[u] for u in units)
        target = lower_bits(problem.bit_choices, bits)
        if target is None:
            return None
        saved = sum(problem.unit_bytes[u][assignment[u]] - problem.unit_bytes[u][min(assignment[u], target)]
                    for u in units)
        if saved <= 0:
            return None
        damage = max(problem.sensitivity(units, target) - problem.sensitivity(units, bits), 0.0)
        return (damage / saved, order[name], name, target)

    queue = [m for m in (move(name, current.assignment) for name in items) if m is not None]
    heapq.heapify(queue)
    with problem.progress_bar(len(queue), f"{tier} tier") as bar:
        while queue and problem.budget_left:
            _, _, name, target = heapq.heappop(queue)
            trial = dict(current.assignment)
            for unit in items[name]:
                trial[unit] = min(trial[unit], target)
            candidate = problem.evaluate(trial, tier)
            bar.update(1)
            if problem.quality_ok(candidate) and problem.better(candidate, current):
                current = candidate
                follow_up = move(name, current.assignment)
                if follow_up is not None:
                    heapq.heappush(queue, follow_up)
                    bar.total += 1
    return current


def tiered_search(problem: SearchProblem) -> Candidate | None:
    start = global_tier(problem)
    if start is None:
        return None
    groups = {name: tuple(units) for name, units in problem.groups.items()}
    current = descend(problem, start, groups, "block")
    modules = {unit: (unit,) for unit in problem.units}
    descend(problem, current, modules, "module")
    return problem.best()
