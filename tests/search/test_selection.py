"""The kept plan holds its limit on the confirmation part too: the feasible plans are confirmed safest
first until the first failure, the best of those confirmed is kept, and the report's headline says which
plans were turned down."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from qslm.headline import headline
from qslm.search.confidence import Bound, QualityJudge
from qslm.search.journal import Journal
from qslm.search.objective import Baseline, Constraints, parse_weights
from qslm.search.problem import SearchProblem
from qslm.search.selection import confirmed_choice, walk_order
from qslm.tasks.scores import Measured

UNITS = ["a", "b"]
EXAMPLES = 400


def problem_with(tmp_path, scores_of, confidence=0.9) -> SearchProblem:
    base = np.tile([100.0, 100.0, 100.0, 0.0], EXAMPLES // 4)
    reference = Measured(float(base.mean()), base)
    judge = QualityJudge(reference, True, False, confidence, seed=0)
    return SearchProblem(
        groups={"g": UNITS}, bit_choices=[2, 4, 8],
        measure_metric=lambda a: (Measured(float(scores_of(a, base, judge).mean()), scores_of(a, base, judge)), 0.0),
        unit_bytes={u: {b: 100 * b for b in (2, 4, 8)} for u in UNITS}, fixed_bytes=0,
        energy_pj=lambda a: 1.0, latency_s=lambda a: 1.0, damage_of=lambda units, bits: 0.0,
        baseline=Baseline(reference.metric, True, 6400, 1.0, 1.0), judge=judge,
        constraints=Constraints(max_drop=1.0, confidence=confidence), objective_weights=parse_weights(None),
        journal=Journal(tmp_path / "journal.jsonl", {"test": 1}), progress=False)


def lost_on_confirmation(assignment, base, judge) -> np.ndarray:
    """2-bit plans lose 10% of the confirmation examples and nothing on the search part; 4-bit ones
    lose nothing anywhere."""
    scores = base.copy()
    if assignment["a"] == 2:
        held = np.concatenate(judge.confirmation_blocks)
        scores[held[::10]] = 0.0
    return scores


def test_a_plan_that_fails_confirmation_gives_way_to_the_next_best(tmp_path):
    problem = problem_with(tmp_path, lost_on_confirmation)
    small, wider = (problem.evaluate(problem.uniform(bits), "global") for bits in (2, 4))
    assert small.score.feasible and wider.score.feasible and problem.best() is small
    selection = confirmed_choice(problem)
    assert selection.chosen is wider and [c for c, _ in selection.turned_down] == [small]
    assert selection.turned_down[0][1].estimate > 1.0 and selection.confirmation.upper == 0.0
    recorded = selection.to_dict()
    assert recorded["chosen"] == wider.index and recorded["turned_down"][0]["index"] == small.index


def test_no_plan_that_passes_confirmation_means_none(tmp_path):
    problem = problem_with(tmp_path, lost_on_confirmation)
    problem.evaluate(problem.uniform(2), "global")
    selection = confirmed_choice(problem)
    assert selection.chosen is None and len(selection.turned_down) == 1


def test_the_headline_names_a_plan_turned_down():
    report = {"higher_is_better": True, "baseline": {"memory_bytes": 100}, "final": {
        "split": "test", "quality_within_limit": True, "quality_loss": 0.2, "memory_bytes": 10},
        "quality": {"limit": 1.0, "confidence": 0.9, "bounded": True, "search_examples": 200,
                    "confirmation_examples": 200,
                    "validation": {"estimate": 0.1, "interval95": [-0.5, 0.7], "examples": 400},
                    "test": {"estimate": 0.2, "interval95": [-0.4, 0.8], "examples": 800},
                    "selection": {"chosen": 5, "stopped_at": 3, "confirmed": 2, "turned_down": [
                        {"index": 3, "memory_fraction": 0.08, "confirmation": {"upper": 1.7}, "failed": True},
                        {"index": 7, "memory_fraction": 0.07, "confirmation": {"upper": 0.4}, "failed": False}]}}}
    lines = headline(report)
    assert lines[0] == "Status: **feasible**: 10.00% of FP32 memory, within a drop of 1 points on test."
    assert lines[1] == ("Quality change on validation: -0.1 points (95% interval -0.7 points to +0.5 points; 400 "
                        "examples); on test: -0.2 points (95% interval -0.8 points to +0.4 points; 800 examples).")
    assert "at 0.9 confidence on 200 validation examples" in lines[2]
    assert lines[3].startswith("Confirmation walked the feasible plans safest first and stops at the first failure")
    assert lines[3].endswith(": candidate 3 (8.00% of FP32) failed confirmation, bounded there at a drop of 1.7 "
                             "points, and the 1 better plan after it in the walk was not kept; candidate 5, the best "
                             "of the 2 confirmed before it, is kept.")


def test_an_infeasible_report_says_which_closest_plans_failed_confirmation():
    from qslm.report import markdown

    closest = {"index": 4, "tier": "module", "memory_fraction": 0.073, "quality_loss": -0.25, "violations": []}
    report = {"model": "m", "task": "t", "higher_is_better": True, "status": "infeasible", "final": None,
              "closest": [closest], "baseline": {"memory_bytes": 100}, "metric_name": "accuracy",
              "quality": {"limit": 1.0, "confidence": 0.9, "bounded": True, "search_examples": 4,
                          "confirmation_examples": 4, "selection": {"chosen": None, "turned_down": []}},
              "constraints": {}, "config": {"strategy": "tiered"}, "candidates": [], "seconds": {"total": 1.0}}
    assert ("- candidate 4 (module): memory 7.3% of FP32, quality loss -0.25; within the limits on the search "
            "half, not confirmed on the confirmation half") in markdown(report)


class WalkProblem:
    """Just what ``confirmed_choice`` reads of a search problem: feasible candidates, a higher index a
    smaller plan, each with a bound on the confirmation part."""

    def __init__(self, confirmation_bounds: list[float], limit: float = 1.0):
        self.candidates = [SimpleNamespace(index=i, score=SimpleNamespace(
            feasible=True, objective=0.1 - 0.001 * i, memory_fraction=0.1 - 0.001 * i))
            for i in range(len(confirmation_bounds))]
        self._confirmation = [Bound(upper, upper) for upper in confirmation_bounds]
        self.constraints = SimpleNamespace(quality_limit=lambda higher_is_better: limit)
        self.baseline = SimpleNamespace(higher_is_better=True)

    def confirmation(self, candidate) -> Bound:
        return self._confirmation[candidate.index]

    def feasible_in_order(self):
        return sorted((c for c in self.candidates if c.score.feasible), key=lambda c: (c.score.objective, c.index))


def test_the_walk_goes_largest_first_and_stops_at_the_first_failure():
    problem = WalkProblem(confirmation_bounds=[0.2, 0.9, 1.4, 0.1])
    problem.candidates[3].score.feasible = False  # not walked at all
    problem.candidates.append(SimpleNamespace(index=4, score=SimpleNamespace(  # as large as 1: walked after it
        feasible=True, objective=0.099, memory_fraction=0.099)))
    problem._confirmation.append(Bound(0.0, 0.0))
    assert [c.index for c in walk_order(problem)] == [0, 1, 4, 2]
    selection = confirmed_choice(problem)
    # 2 fails: 0, 1 and 4 are confirmed, and 1 (equal to 4, the lower index) is the best of them
    assert selection.chosen.index == 1 and selection.stopped_at.index == 2 and selection.confirmed == 3
    assert [c.index for c, _ in selection.turned_down] == [2]
    recorded = selection.to_dict()
    assert recorded["stopped_at"] == 2 and [t["failed"] for t in recorded["turned_down"]] == [True]


def test_plans_better_than_the_kept_one_after_the_failure_are_turned_down_untested():
    selection = confirmed_choice(WalkProblem(confirmation_bounds=[0.2, 1.4, 0.3, 0.1]))
    assert selection.chosen.index == 0 and selection.stopped_at.index == 1
    assert [c.index for c, _ in selection.turned_down] == [3, 2, 1]  # best first
    assert confirmed_choice(WalkProblem(confirmation_bounds=[1.2, 0.0])).chosen is None


def test_many_plans_over_the_limit_are_kept_at_most_at_the_stated_rate():
    """Ten plans whose true loss is just over the limit, each passing confirmation by luck one time in ten:
    testing them one after another until one passes would keep one in 1 - 0.9**10 = 65% of searches; the
    fixed-sequence walk keeps one at most one time in ten."""
    rng = np.random.default_rng(0)
    searches, kept = 2000, 0
    for _ in range(searches):
        # the upper bound at 0.9 confidence of a loss of 1.05 with standard error 0.5: below 1.0 in ~10%
        uppers = 1.05 + 0.5 * rng.standard_normal(10) + 0.5 * 1.2816
        problem = WalkProblem(confirmation_bounds=list(uppers))
        kept += confirmed_choice(problem).chosen is not None
    assert kept / searches <= 0.10
