"""The plan a search keeps: the best feasible candidate that also holds its quality limit on the
confirmation part of the validation examples, the part that took no part in choosing it
(``qslm.search.confidence``), at a confidence that rises with each plan tried there.

Trying plan after plan on the same confirmation part, each at the asked confidence ``c``, until one
passes would be multiple testing: each try is another chance for a plan over the limit to pass by luck.
So the feasible plans are tried best first, and the ``i``-th plan tried must hold the limit at confidence
``1 - (1 - c) / 2**i`` (at c = 0.9: 0.95, 0.975, 0.9875, ...; at c = 0.5, the estimate alone, as asked).
The chances of a lucky pass add up to at most ``(1 - c) * (1/2 + 1/4 + ...) = 1 - c``, however many plans
are tried and however they depend on each other (Bonferroni's inequality with weights that sum to one).
The best plan is held to a little more than ``c``; the plans behind it to ever more, so a fallback far
down the list needs a clear margin.

The order is the search's own (the objective, best first), fixed before any confirmation score is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .confidence import Bound
from .problem import Candidate, SearchProblem


def confidence_of_try(confidence: float, attempt: int) -> float:
    """The confidence the ``attempt``-th plan tried (from 1) is held to on the confirmation part. At 0.5
    the user asked for the estimate alone, with no margin, and every try gets just that."""
    if confidence <= 0.5:
        return 0.5
    return 1.0 - (1.0 - confidence) / 2 ** attempt


@dataclass
class Selection:
    chosen: Candidate | None
    confirmation: Bound | None = None  # the chosen plan's loss on the confirmation part (None: no scores)
    # the better plans tried first, each with its bound there and the confidence it was held to
    turned_down: list[tuple[Candidate, Bound, float]] = field(default_factory=list)
    confirmed_at: float | None = None  # the confidence the chosen plan was held to (None: no bound)

    def to_dict(self) -> dict:
        return {"chosen": None if self.chosen is None else self.chosen.index,
                "confirmation": None if self.confirmation is None else self.confirmation.to_dict(),
                "confirmed_at": self.confirmed_at,
                "rule": "best first; the i-th plan tried is held to confidence 1 - (1 - c) / 2**i",
                "turned_down": [{"index": c.index, "memory_fraction": c.score.memory_fraction,
                                 "confirmation": bound.to_dict(), "confidence": held_to}
                                for c, bound, held_to in self.turned_down]}


def confirmed_choice(problem: SearchProblem) -> Selection:
    """The feasible candidates, best first, until one holds the quality limit on the confirmation part at
    its try's confidence (``confidence_of_try``)."""
    limit = problem.constraints.quality_limit(problem.baseline.higher_is_better)
    turned_down = []
    for attempt, candidate in enumerate(problem.feasible_in_order(), start=1):
        held_to = confidence_of_try(problem.constraints.confidence, attempt)
        bound = problem.confirmation(candidate, held_to)
        if bound is None or limit is None:
            return Selection(candidate, bound, turned_down)
        if bound.judged <= limit + 1e-12:
            return Selection(candidate, bound, turned_down, held_to)
        turned_down.append((candidate, bound, held_to))
    return Selection(None, None, turned_down)
