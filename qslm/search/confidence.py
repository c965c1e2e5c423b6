"""Is a plan's quality loss within the limit with confidence, on data that did not choose it?

A search compares tens of plans on the same few hundred examples and keeps the smallest that lands
inside the limit: the one whose validation figure was luckiest. Two guards, both on per-example scores
(``qslm.tasks.scores``) compared with the float model's on the same examples:

* **A confidence bound.** A plan is feasible only when the one-sided upper bound of its loss at
  ``Constraints.confidence`` is within the limit. The loss is ``mean(float - plan)`` for a
  higher-is-better metric, ``mean(plan) / mean(float) - 1`` for a lower-is-better one (bounded by the
  delta method), and ``exp(mean(plan - float)) - 1`` for perplexity (``Task.scores_are_nll``: the bound
  of the mean NLL difference, exponentiated, so it is exact in the ratio).
* **A confirmation part.** The validation examples are dealt, seeded, into a search part, on which every
  candidate is judged, and a confirmation part that takes no part in the choosing. The kept plan must
  also be within the limit on the confirmation part, at a confidence that rises with each plan tried there
  (``qslm.search.selection``), and the report says which were turned down.

Examples are grouped into about sqrt(n) contiguous blocks (at most ``MAX_BLOCKS``): the standard error comes from the blocks'
totals (batch means, a cluster-robust variance), and parts are dealt block by block. Per-sentence
scores are independent, and blocks cost them little; per-token NLLs are not (neighbouring tokens share
context), and whole blocks carry that dependence into the error and keep it out of the split. The
bound uses Student's t with one degree of freedom fewer than the part's blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from ..errors import QslmError
from ..tasks.scores import Measured

DEFAULT_CONFIDENCE = 0.9  # chosen by bench/limit_coverage_bench.py: docs/benchmarks.md, "Limits that hold"
REPORTED_INTERVAL = 0.95  # two-sided intervals in reports
CONFIRMATION_FRACTION = 0.5  # of the validation blocks, held out of the choosing
MIN_EXAMPLES = 8  # fewer per-example scores cannot be split into parts with a spread each
# Blocks: about sqrt(n), at least 4, at most MAX_BLOCKS. The cap keeps blocks long where scores are many
# and dependent (tokens: a quantized model's error varies from article to article, so short blocks
# understate it; bench/nll_error_bench.py), at little cost where they are independent (t on ~15 degrees
# of freedom per part instead of more).
MAX_BLOCKS = 32


@dataclass(frozen=True)
class Bound:
    """A quality loss (accuracy points dropped, or relative increase) on some examples, with its one-sided
    upper bound at the judge's confidence and a two-sided ``REPORTED_INTERVAL`` interval; the bounds are
    None when the metric gave one number."""
    estimate: float
    upper: float | None = None
    interval: tuple[float, float] | None = None
    examples: int | None = None

    @property
    def bounded(self) -> bool:
        return self.upper is not None

    @property
    def judged(self) -> float:
        """What a limit is checked against: the upper bound, or the estimate when there is none."""
        return self.estimate if self.upper is None else self.upper

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "upper": self.upper,
                "interval95": None if self.interval is None else list(self.interval), "examples": self.examples}


def check_confidence(value, name: str = "confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= float(value) < 1.0:
        raise QslmError(f"{name} must be a number in [0.5, 1) (0.5: no margin; 0.9: the loss is within the "
                        f"limit with 90% confidence), got {value!r}")
    return float(value)


def blocks(examples: int) -> list[np.ndarray]:
    """The example positions cut into contiguous blocks of near-equal size: about sqrt(n) of them, at least
    4 and at most ``MAX_BLOCKS``."""
    count = min(examples, max(4, min(MAX_BLOCKS, round(math.sqrt(examples)))))
    return [np.asarray(part) for part in np.array_split(np.arange(examples), count)]


def loss_of(plan: float, reference: float, higher_is_better: bool) -> float:
    """A metric's quality loss against the float model's: points dropped, or relative increase."""
    return reference - plan if higher_is_better else plan / reference - 1.0


class QualityJudge:
    """Judges plans' quality losses against the float model's measurement ``reference`` on the search part
    of the validation examples, confirms on the rest; ``seed`` deals the parts."""

    def __init__(self, reference: Measured, higher_is_better: bool, scores_are_nll: bool, confidence: float,
                 seed: int):
        self.reference, self.higher_is_better, self.scores_are_nll = reference, higher_is_better, scores_are_nll
        self.confidence = check_confidence(confidence)
        if reference.scores is None:
            self.search_blocks = self.confirmation_blocks = None
            return
        if reference.examples < MIN_EXAMPLES:
            raise QslmError(f"Task.evaluate returned {reference.examples} scores; at least {MIN_EXAMPLES} are "
                            "needed to bound a loss with confidence (or return one number: no bound is applied)")
        cut = blocks(reference.examples)
        order = np.random.default_rng(seed).permutation(len(cut))
        held = max(1, round(CONFIRMATION_FRACTION * len(cut)))
        self.confirmation_blocks = [cut[i] for i in sorted(order[:held])]
        self.search_blocks = [cut[i] for i in sorted(order[held:])]

    @property
    def bounded(self) -> bool:
        return self.reference.scores is not None

    def describe(self) -> dict:
        parts = {} if not self.bounded else {
            "search_examples": int(sum(len(b) for b in self.search_blocks)),
            "confirmation_examples": int(sum(len(b) for b in self.confirmation_blocks)),
            "blocks": len(self.search_blocks) + len(self.confirmation_blocks)}
        return {"confidence": self.confidence, "bounded": self.bounded, **parts}

    def search(self, measured: Measured) -> Bound:
        """The loss on the search part (the whole metric when it is one number)."""
        if not self.bounded:
            return self.whole(measured)
        return self._bound(measured, self.search_blocks)

    def confirmation(self, measured: Measured, confidence: float | None = None) -> Bound | None:
        """The loss on the confirmation part, its upper bound at ``confidence`` (default the judge's)."""
        return None if not self.bounded else self._bound(measured, self.confirmation_blocks, confidence=confidence)

    def whole(self, measured: Measured, reference: Measured | None = None) -> Bound:
        """The loss on every example (of ``reference``'s data, default the validation data)."""
        reference = reference or self.reference
        if measured.scores is None or reference.scores is None:
            return Bound(loss_of(measured.metric, reference.metric, self.higher_is_better))
        return self._bound(measured, blocks(reference.examples), reference)

    def certifiable(self, bound: Bound, limit: float) -> dict:
        """What the data can certify, from the plan of ``bound`` (the least damaging one measured): the
        loss it bounds, and about how many validation examples the asked ``limit`` would need."""
        spread = bound.upper - bound.estimate
        needed = None
        if bound.estimate < limit and spread > 0:
            # the spread shrinks as 1/sqrt(examples), the parts keeping their shares
            needed = math.ceil(self.reference.examples * (spread / (limit - bound.estimate)) ** 2)
        return {"certifiable_loss": bound.upper, "examples_needed": needed}

    def _bound(self, measured: Measured, parts: list[np.ndarray], reference: Measured | None = None,
               confidence: float | None = None) -> Bound:
        reference = reference or self.reference
        plan, base = measured.scores, reference.scores
        count = int(sum(len(p) for p in parts))
        if self.scores_are_nll or self.higher_is_better:
            # the mean of paired differences: dropped points, or the log of the perplexity ratio
            differences = base - plan if self.higher_is_better else plan - base
            estimate, error = _ratio(differences, np.ones_like(differences), parts)
            low, high, upper = self._limits(estimate, error, len(parts), confidence)
            transform = (lambda x: x) if self.higher_is_better else math.expm1
            return Bound(transform(estimate), transform(upper), (transform(low), transform(high)), count)
        # a mean ratio: linearised by the delta method around the estimated ratio
        ratio, _ = _ratio(plan, base, parts)
        _, error = _ratio(plan - ratio * base, base, parts)
        low, high, upper = self._limits(0.0, error, len(parts), confidence)
        return Bound(ratio - 1.0, ratio - 1.0 + upper, (ratio - 1.0 + low, ratio - 1.0 + high), count)

    def _limits(self, estimate: float, error: float, parts: int, confidence: float | None = None
                ) -> tuple[float, float, float]:
        """(low, high) of the two-sided reported interval and the one-sided upper bound at the confidence."""
        freedom = max(1, parts - 1)
        half = float(student_t.ppf(0.5 + REPORTED_INTERVAL / 2, freedom)) * error
        one_sided = float(student_t.ppf(self.confidence if confidence is None else confidence, freedom))
        return estimate - half, estimate + half, estimate + one_sided * error


def _ratio(numerator: np.ndarray, denominator: np.ndarray, parts: list[np.ndarray]) -> tuple[float, float]:
    """(sum numerator / sum denominator over ``parts``, its batch-means standard error)."""
    top = np.array([numerator[p].sum() for p in parts])
    bottom = np.array([denominator[p].sum() for p in parts])
    total = float(bottom.sum())
    value = float(top.sum()) / total
    count = len(parts)
    if count < 2:
        return value, 0.0
    residual = top - value * bottom  # each block's deviation, weighted by its share
    return value, math.sqrt(float((residual ** 2).sum()) * count / (count - 1)) / total
