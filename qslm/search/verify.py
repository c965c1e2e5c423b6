"""The chosen plan against the float model, once the search is over: the task's reported measurement
(its test, or its validation data without one), the quality losses the report records, and, when no
plan held the quality limit with confidence, what the validation data can certify."""
from __future__ import annotations

import math

from torch import nn

from ..tasks.base import Task
from ..tasks.scores import Measured, check_same_examples
from .confidence import Bound, QualityJudge
from .measure import task_metric
from .problem import SearchProblem


def reported(task: Task, model: nn.Module, float_reported: Measured | None = None) -> Measured:
    """The task's test measurement of ``model`` (its validation one without a test), checked to pair with
    the float model's ``float_reported`` when given."""
    what = "test" if task.test is not None else "evaluate"
    # a test figure decides nothing, so a non-finite one is reported (as null), not refused
    measured = task_metric(task.test or task.evaluate, model, what, task.scores_are_nll,
                           allow_non_finite=task.test is not None)
    if float_reported is not None:
        check_same_examples(measured, float_reported, f"Task.{what}")
    return measured


def quality_verified(quality: dict, judge: QualityJudge, best, final: Measured, float_reported: Measured,
                     split: str) -> Bound:
    """Record the chosen plan's loss on the search part, the whole validation data and the test split
    (with 95% intervals) in ``quality``; returns the test loss. A test figure that is not finite (the
    float model's or the plan's) leaves the test loss NaN and whether the limit held there unknown (None),
    and ``quality["test_not_finite"]`` names whose figure it was."""
    not_finite = [who for who, measured in (("float model", float_reported), ("quantized model", final))
                  if not measured.finite]
    test_loss = Bound(math.nan) if not_finite else judge.whole(final, float_reported)
    limit = quality["limit"]
    quality.update(search=judge.search(best.measured).to_dict(), validation=judge.whole(best.measured).to_dict(),
                   test=test_loss.to_dict() | {"split": split}, test_not_finite=not_finite,
                   test_within_limit=None if not_finite else limit is None or test_loss.estimate <= limit + 1e-12)
    return test_loss


def certifiable(problem: SearchProblem, judge: QualityJudge, limit: float | None) -> dict | None:
    """When no plan held the quality limit with confidence: what the validation data can certify, from the
    candidate with the lowest bound (None without a limit or a bound)."""
    bounded = [c for c in problem.candidates if c.score.quality_bound is not None]
    if limit is None or not bounded or any(problem.quality_ok(c) for c in problem.candidates):
        return None
    least = min(bounded, key=lambda c: (c.score.quality_bound, c.index))
    return {"candidate": least.index, **judge.certifiable(judge.search(least.measured), limit)}
