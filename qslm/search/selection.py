"""The plan a search keeps: the best feasible candidate among those confirmed, by a fixed-sequence walk,
on the confirmation part of the validation examples, the part that took no part in choosing them
(``qslm.search.confidence``).

Testing plan after plan on the same confirmation part until one passes is multiple testing: each test is
another chance for a plan over the limit to pass by luck. So the feasible candidates are put in one order
before any confirmation score is read, safest first, and confirmed in that order until the first one
fails; the best of those confirmed before it is kept. The chance that any plan over the limit is
confirmed is then at most 1 - confidence, however many are tested (the fixed-sequence procedure: a plan
over the limit is only reached by confirming every plan before it, and the first such plan passes by luck
at most that often, or the walk stops there).

"Safest" is the least compressed: the order is the objective, worst first (for a memory objective, the
largest plan first). It is not the loss measured on the search part: the plans that did best there are
the luckiest, and they would lead the walk only to lose on the confirmation part.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .confidence import Bound
from .problem import Candidate, SearchProblem


@dataclass
class Selection:
    chosen: Candidate | None
    confirmation: Bound | None = None  # the chosen plan's loss on the confirmation part (None: no scores)
    turned_down: list[tuple[Candidate, Bound]] = field(default_factory=list)  # better plans that were not kept
    stopped_at: Candidate | None = None  # the first plan of the walk that failed confirmation (None: none failed)
    confirmed: int = 0  # plans that passed before the walk stopped

    def to_dict(self) -> dict:
        return {"chosen": None if self.chosen is None else self.chosen.index,
                "confirmation": None if self.confirmation is None else self.confirmation.to_dict(),
                "rule": "fixed-sequence: feasible plans confirmed safest first, until the first failure",
                "stopped_at": None if self.stopped_at is None else self.stopped_at.index,
                "confirmed": self.confirmed,
                "turned_down": [{"index": c.index, "memory_fraction": c.score.memory_fraction,
                                 "confirmation": bound.to_dict(), "failed": c is self.stopped_at}
                                for c, bound in self.turned_down]}


def walk_order(problem: SearchProblem) -> list[Candidate]:
    """The feasible candidates, safest first: the objective's worst first (the largest plan), fixed before
    any confirmation score is read."""
    return sorted((c for c in problem.candidates if c.score.feasible), key=lambda c: (-c.score.objective, c.index))


def confirmed_choice(problem: SearchProblem) -> Selection:
    """The best of the feasible candidates that the fixed-sequence walk confirms (module docstring)."""
    limit = problem.constraints.quality_limit(problem.baseline.higher_is_better)
    confirmed: list[tuple[Candidate, Bound | None]] = []
    stopped_at = None
    for candidate in walk_order(problem):
        bound = problem.confirmation(candidate)
        if bound is not None and limit is not None and bound.judged > limit + 1e-12:
            stopped_at = candidate
            break
        confirmed.append((candidate, bound))
    if not confirmed:
        chosen, confirmation = None, None
    else:
        chosen, confirmation = min(confirmed, key=lambda pair: (pair[0].score.objective, pair[0].index))
    # the plan that stopped the walk, and the plans better than the kept one (all, when none is kept) that
    # the walk did not confirm, best first
    kept = {c.index for c, _ in confirmed}
    turned_down = [(c, problem.confirmation(c)) for c in problem.feasible_in_order() if c is stopped_at or (
        c.index not in kept and (chosen is None or (c.score.objective, c.index) < (chosen.score.objective, chosen.index)))]
    turned_down = [(c, bound) for c, bound in turned_down if bound is not None]
    return Selection(chosen, confirmation, turned_down, stopped_at, len(confirmed))
