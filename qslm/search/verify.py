"""The last step of a search: the chosen plan written through its export target, read back, and every
final figure (the test metric and its loss against the limit, memory, energy, latency) measured on what
was read back, never on the fake-quantized model the search measured.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..analysis.energy import energy_per_inference, latency_per_inference, power_mw
from ..diskspace import require_free_space
from ..export.targets import ExportTarget
from ..quant.pack import PLAN_FILE
from ..quant.plan import QuantPlan
from ..tasks.base import Task
from ..tasks.scores import Measured, check_same_examples
from .confidence import Bound, QualityJudge
from .measure import task_metric
from .problem import Candidate, SearchProblem
from .profiling import latency, op_profile
from .stack import SearchMeasurements

# Room kept for report.json, report.md and the three plots: under 0.5 MB on the bundled models
# (docs/results), growing with the candidates measured.
REPORT_BYTES = 2 * 2 ** 20


@dataclass
class Verified:
    plan: QuantPlan
    packed: nn.Module  # loaded back from the written files
    files: dict[str, Path]
    final: dict  # the report's "final" section


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


def verify_and_export(model: nn.Module, task: Task, stack: SearchMeasurements, best: Candidate,
                      target: ExportTarget, staging: Path, out: Path, float_reported: Measured,
                      quality: dict) -> Verified:
    """Write ``best``'s plan into ``staging``, load it back and measure it; the chosen plan's losses go
    into ``quality`` (``quality_verified``)."""
    plan = stack.plans.plan(best.assignment)
    require_free_space(out, target.disk_bytes(model, plan) + REPORT_BYTES, "the chosen plan's model and report",
                       then="the journal keeps every measurement: free some space and rerun to resume")
    files = target.write(model, plan, staging, stack.context)
    packed = target.load(copy.deepcopy(model), staging)  # every final figure comes from what was written
    final_measured = reported(task, packed, float_reported)
    split = task.test_split if task.test is not None else "validation"
    test_loss = quality_verified(quality, stack.profile.judge, best, final_measured, float_reported, split)
    hardware = stack.profile.hardware
    final_ops = op_profile(packed, task)
    stored = {u: stack.bytes_table[u][b] for u, b in best.assignment.items()}
    energy = energy_per_inference(final_ops, best.assignment, hardware, unit_bytes=stored).total_pj
    final = {"split": split, "metric": final_measured.metric, "quality_loss": test_loss.estimate,
             "quality_within_limit": quality["test_within_limit"], "memory_bytes": target.memory_bytes(files),
             "memory_bytes_predicted": best.memory_bytes, "energy_pj": energy,
             "power_mw": power_mw(energy, hardware), "latency_s": latency(packed, task),
             "modelled_latency_s": latency_per_inference(final_ops, best.assignment, hardware, unit_bytes=stored),
             "plan_file": PLAN_FILE}
    return Verified(plan, packed, files, final)


def quality_verified(quality: dict, judge: QualityJudge, best: Candidate, final: Measured, float_reported: Measured,
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
