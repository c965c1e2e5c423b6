"""The plan a search keeps: the best feasible candidate that also holds its quality limit on the
confirmation part of the validation examples, the part that took no part in choosing it
(``qslm.search.confidence``). When the best fails there, the next best that passes stands in, and the
selection records which were turned down and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .confidence import Bound
from .problem import Candidate, SearchProblem


@dataclass
class Selection:
    chosen: Candidate | None
    confirmation: Bound | None = None  # the chosen plan's loss on the confirmation part (None: no scores)
    turned_down: list[tuple[Candidate, Bound]] = field(default_factory=list)  # better plans that failed it

    def to_dict(self) -> dict:
        return {"chosen": None if self.chosen is None else self.chosen.index,
                "confirmation": None if self.confirmation is None else self.confirmation.to_dict(),
                "turned_down": [{"index": c.index, "memory_fraction": c.score.memory_fraction,
                                 "confirmation": bound.to_dict()} for c, bound in self.turned_down]}


def confirmed_choice(problem: SearchProblem) -> Selection:
    """The feasible candidates, best first, until one holds the quality limit on the confirmation part."""
    limit = problem.constraints.quality_limit(problem.baseline.higher_is_better)
    turned_down = []
    for candidate in problem.feasible_in_order():
        bound = problem.confirmation(candidate)
        if bound is None or limit is None or bound.judged <= limit + 1e-12:
            return Selection(candidate, bound, turned_down)
        turned_down.append((candidate, bound))
    return Selection(None, None, turned_down)
