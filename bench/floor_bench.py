"""What stops a search's plan from going lower: each unit taken one width down, alone, measured paired.

    QSLM_DATA_DIR=../shared/data python bench/floor_bench.py REPORT_JSON [--candidate N] [--goal 6%]
        [--json bench-out/floor/NAME.json]

``REPORT_JSON`` is the ``report.json`` of a search of a bundled model (``docs/results/*/report.json``). The
plan studied is the chosen one, or the closest when none was kept (``--candidate`` picks another). It is
rebuilt from the report: each unit's width from the candidate, its method and grid at that width from the
search's choices (``methods`` and ``grids``), its bytes checked against the report's.

From that plan, each unit alone goes one width down (2 bits: to ternary, 1.6 bits, and to one bit), the
rest unchanged, and the model is scored on the search's whole validation slice. Every figure is paired
example by example: the plan against the float model, and each lowered plan against the plan (the change
that lowering one unit costs, with its 95% interval). A unit "refuses" to go lower when that change alone
exceeds what the limit leaves on the plan's estimate.

With ``--goal``, the cheapest units by change per byte saved are lowered together until the plan fits the
goal, and that plan is measured too: the additive estimate of the table checked once.

The bytes of the plan are split into codes (each unit's weights at its width), the scales, zero-points and
codebooks that come with them, and the tensors no unit holds (norms, time-mix, biases), which stay float.
Nothing here chooses among plans on the validation slice except the ``--goal`` plan's greedy order, which
the report states.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers_bench import bundled_target  # noqa: E402
from qslm.models.neuron_state import reset_neuron_states  # noqa: E402
from qslm.quant.apply import WeightCache, fake_quantized  # noqa: E402
from qslm.quant.memory import fixed_bytes, plan_bytes, plan_bytes_by_unit  # noqa: E402
from qslm.quant.plan import QuantPlan  # noqa: E402
from qslm.quant.quantizer import QuantSpec  # noqa: E402
from qslm.quant.units import quantizable_units  # noqa: E402
from qslm.search.confidence import QualityJudge  # noqa: E402
from qslm.search.measure import task_metric  # noqa: E402
from qslm.search.methods import record_context  # noqa: E402
from qslm.search.variants import Variant  # noqa: E402

# (bits, method, label): the rungs below a unit's width; a 2-bit unit goes to both sub-2-bit formats
SUB_TWO = ((2, "ternary", "1.6"), (1, "binary", "1"))


def parse_goal(text: str | None) -> float | None:
    if text is None:
        return None
    value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    if not 0 < value < 1:
        raise SystemExit(f"--goal must be a fraction of FP32 in (0, 1) or a percentage, got {text!r}")
    return value


class PlanBuilder:
    """Specs as the search chose them: ``methods``/``grids`` of the report give each unit's quantizer per
    width; a width the search never reached for a unit takes rtn on the symmetric grid (and says so)."""

    def __init__(self, report: dict):
        self.base = QuantSpec(**report["config"]["base_spec"])
        self.methods, self.grids = report.get("methods") or {}, report.get("grids") or {}

    def spec(self, unit: str, bits: int, method: str | None = None) -> tuple[QuantSpec, str]:
        if method is not None:  # the sub-2-bit formats: their own method, symmetric grid
            return Variant(method, "sym").spec(self.base, bits), method
        chosen = self.methods.get(unit, {}).get(str(bits))
        grid = self.grids.get(unit, {}).get(str(bits), "sym")
        if chosen is None:
            return Variant("rtn", "sym").spec(self.base, bits), "rtn sym (not chosen by the search)"
        return Variant(chosen, grid).spec(self.base, bits), f"{chosen} {grid}"


def lower_rungs(bits: int, widths: list[int], depth: int) -> list[tuple[int, str | None, str]]:
    """Up to ``depth`` rungs below ``bits``, nearest first: the search's widths down to 2, then ternary
    (1.6 bits) and one bit."""
    ladder = list(SUB_TWO[::-1]) + [(w, None, str(w)) for w in sorted(set(widths) | {2})]
    here = next(i for i, rung in enumerate(ladder) if rung[0] == bits and rung[1] is None)
    return ladder[max(0, here - depth):here][::-1]


def code_bytes(model, plan: QuantPlan) -> int:
    """The codes alone: each quantized weight at its width (ternary at log2(3) packed five to a byte)."""
    units = quantizable_units(model)
    total = 0
    for name, spec in plan.units.items():
        count = math.prod(units[name].shape)
        total += math.ceil(count / 5) if spec.method == "ternary" else math.ceil(count * spec.bits / 8)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--candidate", type=int, help="a candidate's index (default: the chosen, else the closest)")
    parser.add_argument("--goal", help="a memory goal (e.g. 6%%): lower the cheapest units until the plan fits it")
    parser.add_argument("--depth", type=int, default=2, help="rungs below each unit's width to measure (default 2)")
    parser.add_argument("--data-dir", default=os.environ.get("QSLM_DATA_DIR"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    goal = parse_goal(args.goal)
    candidates = {c["index"]: c for c in report["candidates"]}
    index = args.candidate if args.candidate is not None else (
        report["chosen"]["index"] if report.get("chosen") else report["closest"][0]["index"])
    candidate = candidates[index]
    name = report["model_name"]
    out = args.json or Path("bench-out/floor") / f"{args.report.parent.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    target = bundled_target(name, quick=False, data_dir=args.data_dir)
    task, model = target.task, target.fresh()
    builder = PlanBuilder(report)
    assignment = candidate["assignment"]
    specs = {u: builder.spec(u, b) for u, b in assignment.items()}
    plan = QuantPlan({u: s for u, (s, _) in specs.items()})
    fp32 = plan_bytes(model, QuantPlan())
    bytes_now = plan_bytes(model, plan)
    if bytes_now != candidate["memory_bytes"]:
        raise SystemExit(f"the rebuilt plan has {bytes_now} bytes where the report says {candidate['memory_bytes']}: "
                         "the report's choices do not rebuild this candidate")
    context = record_context(model, task.quantizer_inputs, tuple(report["config"]["methods"]) + ("ternary",),
                             reset_neuron_states)

    def measure(p: QuantPlan):
        with torch.no_grad(), fake_quantized(model, p, WeightCache(), context=context):
            return task_metric(task.evaluate, model, "evaluate", task.scores_are_nll)

    reference = task_metric(task.evaluate, model, "evaluate", task.scores_are_nll)
    judge = QualityJudge(reference, task.higher_is_better, task.scores_are_nll, 0.9, seed=0)
    started = time.perf_counter()
    measured = measure(plan)
    base_loss = judge.whole(measured)
    plan_judge = QualityJudge(measured, task.higher_is_better, task.scores_are_nll, 0.9, seed=0)
    limit = report["quality"]["limit"]
    by_unit = plan_bytes_by_unit(model, plan)
    codes = code_bytes(model, plan)
    floats = fixed_bytes(model)
    print(f"{name}, candidate {index} ({candidate['tier']}): {100 * bytes_now / fp32:.2f}% of FP32; validation "
          f"{reference.metric:.4g} -> {measured.metric:.4g}, loss {base_loss.estimate:.4g} "
          f"[{base_loss.interval[0]:.3g}, {base_loss.interval[1]:.3g}] against the limit {limit}")
    print(f"bytes: codes {100 * codes / fp32:.2f}%, scales/zero-points/codebooks "
          f"{100 * (bytes_now - codes - floats) / fp32:.2f}%, float tensors outside units {100 * floats / fp32:.2f}% "
          f"of FP32", flush=True)
    widths = sorted(set(report["config"]["bit_choices"]))
    rows = []
    print("| unit | now | lowered to | saves % FP32 | change vs the plan (95%) | loss vs FP32 | refuses |")
    print("|---|---|---|---:|---|---|---|")
    for unit, bits in assignment.items():
        for lower, method, label in lower_rungs(bits, widths, args.depth):
            spec, described = builder.spec(unit, lower, method)
            lowered = QuantPlan({**plan.units, unit: spec})
            saved = by_unit[unit] - plan_bytes_by_unit(model, lowered)[unit]
            scores = measure(lowered)
            change, total = plan_judge.whole(scores), judge.whole(scores)
            row = dict(unit=unit, now=f"{bits} {specs[unit][1]}", lowered=f"{label} {described}", bits=lower,
                       method=method,
                       saved_fraction=saved / fp32, change=change.to_dict(), loss=total.to_dict(),
                       refuses=total.estimate > limit)
            rows.append(row)
            print(f"| {unit} | {row['now']} | {row['lowered']} | {100 * saved / fp32:.2f} | {change.estimate:+.3g} "
                  f"[{change.interval[0]:+.3g}, {change.interval[1]:+.3g}] | {total.estimate:.3g} | "
                  f"{'yes' if row['refuses'] else ''} |", flush=True)
    tested = reported_split(model, task, plan, context)
    result = dict(report=str(args.report), model=name, candidate=index, memory_fraction=bytes_now / fp32,
                  fp32_bytes=fp32, codes_fraction=codes / fp32, float_fraction=floats / fp32,
                  limit=limit, loss=base_loss.to_dict(), validation_metric=measured.metric,
                  float_metric=reference.metric, reported=tested, rows=rows, seconds=time.perf_counter() - started,
                  threads=torch.get_num_threads())
    if goal is not None:
        result["goal"] = toward_goal(goal, plan, rows, builder, model, fp32, measure, judge)
        result["goal"]["reported"] = reported_split(model, task, QuantPlan(result["goal"].pop("plan")), context)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")


def reported_split(model, task, plan: QuantPlan, context) -> dict:
    """The loss on the reported split (``Task.test``), which no choice here has seen, paired with FP32."""
    reference = task_metric(task.test, model, "test", task.scores_are_nll)
    with torch.no_grad(), fake_quantized(model, plan, WeightCache(), context=context):
        measured = task_metric(task.test, model, "test", task.scores_are_nll)
    judge = QualityJudge(reference, task.higher_is_better, task.scores_are_nll, 0.9, seed=0)
    loss = judge.whole(measured)
    print(f"reported split: {reference.metric:.4g} -> {measured.metric:.4g}, loss {loss.estimate:.4g} "
          f"[{loss.interval[0]:.3g}, {loss.interval[1]:.3g}]", flush=True)
    return dict(float_metric=reference.metric, metric=measured.metric, loss=loss.to_dict())


def toward_goal(goal: float, plan: QuantPlan, rows: list[dict], builder: PlanBuilder, model, fp32: int, measure,
                judge: QualityJudge) -> dict:
    """Lower units, the cheapest change per byte saved first, until the plan fits ``goal``; a deeper rung of a
    unit replaces its shallower one. The order is read off the validation slice, so the plan is measured
    again there (optimistic) and on the reported split (not)."""
    def per_byte(row: dict) -> float:
        return max(row["change"]["estimate"], 0.0) / row["saved_fraction"] if row["saved_fraction"] > 0 else math.inf

    units, taken = dict(plan.units), {}
    for row in sorted((r for r in rows if r["saved_fraction"] > 0), key=per_byte):
        if plan_bytes(model, QuantPlan(units)) <= goal * fp32:
            break
        before = taken.get(row["unit"])
        if before is not None and before["saved_fraction"] >= row["saved_fraction"]:
            continue
        units[row["unit"]] = builder.spec(row["unit"], row["bits"], row["method"])[0]
        taken[row["unit"]] = row
    lowered = QuantPlan(units)
    memory = plan_bytes(model, lowered) / fp32
    loss = judge.whole(measure(lowered))
    predicted = sum(row["change"]["estimate"] for row in taken.values())
    print(f"toward {100 * goal:.1f}%: {len(taken)} units lowered, cheapest change per byte first, to "
          f"{100 * memory:.2f}% of FP32; summed changes {predicted:+.3g}, validation loss {loss.estimate:.3g} "
          f"[{loss.interval[0]:.3g}, {loss.interval[1]:.3g}]", flush=True)
    return dict(goal=goal, memory_fraction=memory, summed_change=predicted, loss=loss.to_dict(),
                units=[f"{unit} -> {row['lowered']}" for unit, row in taken.items()], plan=lowered.units)


if __name__ == "__main__":
    main()
