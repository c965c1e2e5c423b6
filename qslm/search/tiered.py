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
Trade tier (only when no evaluated plan is feasible yet and the plan is over the memory limit): a unit
  that saves many bytes (an embedding) may be refused a step down because the small units around it
  already spent the quality budget. Lower the unit whose step saves the most bytes and spend the bytes
  left under the limit on raising other units, most measured sensitivity removed per byte first; the
  descents only lower bits, so they never find such a plan. The last trade starts from the smallest
  plan (every unit at the lowest bit-width) and spends all the bytes under the limit the same way: where
  the quality budget went on a step that every later move depends on, it starts over instead. Each
  trade costs one evaluation; the first feasible one is descended again module by module.
The result is the feasible candidate with the lowest objective among all evaluated.

With parallel workers the global tier has every uniform plan measured at once, and the descents the
next few moves (as if each were refused, the common case); plans are still accepted one at a time in
the order above, so the plan is the one a single process finds. A move measured ahead that the order
above never reaches (an earlier move was kept) is neither a candidate nor journaled.
"""
from __future__ import annotations

import heapq

from .problem import Assignment, Candidate, SearchProblem


def lower_bits(choices: list[int], bits: int) -> int | None:
    lower = [b for b in choices if b < bits]
    return max(lower) if lower else None


def bytes_saved(problem: SearchProblem, units: tuple[str, ...], assignment: Assignment, target: int) -> int:
    """Bytes saved by taking ``units`` down to at most ``target`` bits."""
    return sum(problem.unit_bytes[u][assignment[u]] - problem.unit_bytes[u][min(assignment[u], target)]
               for u in units)


def global_tier(problem: SearchProblem) -> Candidate | None:
    problem.prefetch(problem.uniform(bits) for bits in sorted(problem.bit_choices))
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

    def step(name: str, assignment: Assignment) -> tuple[int, int, int] | None:
        """(bits, target, bytes saved) of ``name``'s next step down, or None when it has none."""
        units = items[name]
        bits = max(assignment[u] for u in units)
        target = lower_bits(problem.bit_choices, bits)
        if target is None:
            return None
        saved = bytes_saved(problem, units, assignment, target)
        return (bits, target, saved) if saved > 0 else None

    def move(name: str, assignment: Assignment):
        found = step(name, assignment)
        if found is None:
            return None
        bits, target, saved = found
        units = items[name]
        damage = max(problem.damage_of(units, target) - problem.damage_of(units, bits), 0.0)
        return (damage / saved, order[name], name, target)

    def trial(name: str, target: int, assignment: Assignment) -> Assignment:
        stepped = dict(assignment)
        for unit in items[name]:
            stepped[unit] = min(stepped[unit], target)
        return stepped

    steps = {name: step(name, current.assignment) for name in items}
    problem.prefetch_sensitivities((items[name], width) for name, found in steps.items() if found is not None
                                   for width in found[:2])
    queue = [m for m in (move(name, current.assignment) for name in items) if m is not None]
    heapq.heapify(queue)
    with problem.progress_bar(len(queue), f"{tier} tier") as bar:
        while queue and problem.budget_left:
            # the moves popped next if this one is refused: the heap's smallest, in pop order
            upcoming = heapq.nsmallest(problem.speculation, queue)
            problem.prefetch(trial(name, target, current.assignment) for _, _, name, target in upcoming)
            _, _, name, target = heapq.heappop(queue)
            candidate = problem.evaluate(trial(name, target, current.assignment), tier)
            bar.update(1)
            if problem.quality_ok(candidate) and problem.better(candidate, current):
                current = candidate
                follow_up = move(name, current.assignment)
                if follow_up is not None:
                    heapq.heappush(queue, follow_up)
                    bar.total += 1
    return current


def raise_within(problem: SearchProblem, assignment: Assignment, headroom: int, keep: str | None) -> Assignment:
    """``assignment`` with units other than ``keep`` raised one step at a time, most sensitivity removed
    per extra byte first, while the extra bytes fit in ``headroom``."""
    raised = dict(assignment)
    position = {unit: index for index, unit in enumerate(problem.units)}

    def step(unit: str):
        target = min((b for b in problem.bit_choices if b > raised[unit]), default=None)
        if target is None:
            return None
        cost = problem.unit_bytes[unit][target] - problem.unit_bytes[unit][raised[unit]]
        gain = problem.damage_of((unit,), raised[unit]) - problem.damage_of((unit,), target)
        if gain <= 0 or cost <= 0:
            return None
        return (-gain / cost, position[unit], unit, target, cost)

    queue = [s for s in (step(unit) for unit in problem.units if unit != keep) if s is not None]
    heapq.heapify(queue)
    while queue:
        _, _, unit, target, cost = heapq.heappop(queue)
        if cost > headroom:
            continue
        raised[unit], headroom = target, headroom - cost
        follow_up = step(unit)
        if follow_up is not None:
            heapq.heappush(queue, follow_up)
    return raised


def trade(problem: SearchProblem, current: Candidate) -> Candidate | None:
    """A feasible plan made by lowering one unit and raising others within the memory limit, or None."""
    limit = problem.constraints.memory_limit_bytes(problem.baseline.memory_bytes)
    if limit is None or current.memory_bytes <= limit or not problem.quality_ok(current):
        return None
    moves = []
    for position, unit in enumerate(problem.units):
        target = lower_bits(problem.bit_choices, current.assignment[unit])
        if target is not None:
            moves.append((-bytes_saved(problem, (unit,), current.assignment, target), position, unit, target))
    trades = []
    for _, _, unit, target in sorted(moves):
        trial = {**current.assignment, unit: target}
        headroom = int(limit) - problem.memory_bytes(trial)
        if headroom < 0:
            break  # moves are sorted by bytes saved: none of the rest fits either
        trades.append(raise_within(problem, trial, headroom, keep=unit))
    smallest = problem.uniform(min(problem.bit_choices))
    headroom = int(limit) - problem.memory_bytes(smallest)
    if headroom >= 0:
        filled = raise_within(problem, smallest, headroom, keep=None)
        if filled not in trades:
            trades.append(filled)
    for index, traded in enumerate(trades):
        if not problem.budget_left:
            return None
        problem.prefetch(trades[index:])
        candidate = problem.evaluate(traded, "trade")
        if candidate.score.feasible:
            return candidate
    return None


def tiered_search(problem: SearchProblem) -> Candidate | None:
    start = global_tier(problem)
    if start is None:
        return None
    groups = {name: tuple(units) for name, units in problem.groups.items()}
    current = descend(problem, start, groups, "block")
    modules = {unit: (unit,) for unit in problem.units}
    current = descend(problem, current, modules, "module")
    if problem.best() is None:
        traded = trade(problem, current)
        if traded is not None:
            descend(problem, traded, modules, "module")
    return problem.best()
