"""The headline of a search report, in words: whether the quality limit held, on the validation data and
on the test split, each with its 95% interval, and with what confidence. ``report.md`` opens with it and
``qslm search`` prints it, so neither ever shows "feasible" above a broken limit.
"""
from __future__ import annotations

import math


def format_loss(value: float | None, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "not finite"
    return f"{-value:+.3g} points" if higher_is_better else f"{100 * value:+.2f}%"


def loss_in_words(value: float, higher_is_better: bool) -> str:
    return f"a drop of {value:.3g} points" if higher_is_better else f"an increase of {100 * value:+.2f}%"


def _interval(bound: dict | None, higher_is_better: bool) -> str:
    """A loss with its 95% interval, in the metric's terms (a drop as a negative change)."""
    if bound is None:
        return "n/a"
    text = format_loss(bound["estimate"], higher_is_better)
    if bound.get("interval95") is None:
        return text
    low, high = bound["interval95"]
    ends = (format_loss(high, True), format_loss(low, True)) if higher_is_better else (
        format_loss(low, False), format_loss(high, False))
    return f"{text} (95% interval {ends[0]} to {ends[1]}; {bound['examples']} examples)"


def headline(report: dict) -> list[str]:
    """Sentences, most important first."""
    hib, quality = report["higher_is_better"], report.get("quality") or {}
    limit, confidence = quality.get("limit"), quality.get("confidence")
    limit_text = None if limit is None else (f"a drop of {limit:g} points" if hib else f"+{100 * limit:g}%")
    final = report.get("final")
    lines = []
    if final is None:
        lines.append("Status: **infeasible**: no plan met the constraints.")
        certifiable = quality.get("certifiable")
        if certifiable is not None:
            what = loss_in_words(certifiable["certifiable_loss"], hib)
            needed = certifiable.get("examples_needed")
            lines.append(f"The validation data cannot certify {limit_text} at {confidence:g} confidence: the least "
                         f"damaging plan measured (candidate {certifiable['candidate']}) is bounded at {what}"
                         + (f"; the asked limit needs about {needed:,} validation examples." if needed else
                            "; its estimated loss alone reaches the limit, so more data will not do."))
    else:
        split = final["split"]
        memory = f"{100 * final['memory_bytes'] / report['baseline']['memory_bytes']:.2f}% of FP32 memory"
        not_finite = quality.get("test_not_finite")
        if not_finite:
            lines.append(f"Status: **feasible** on the validation data: {memory}"
                         + ("" if limit_text is None else f", within {limit_text} there")
                         + f"; the {split} {'value' if len(not_finite) == 1 else 'values'} of the "
                         f"{' and the '.join(not_finite)} {'was' if len(not_finite) == 1 else 'were'} not finite, "
                         f"so the limit could not be checked on {split}.")
        elif final["quality_within_limit"]:
            lines.append(f"Status: **feasible**: {memory}"
                         + ("" if limit_text is None else f", within {limit_text} on {split}") + ".")
        else:
            lines.append(f"Status: **over the limit on {split}**: the plan shows {loss_in_words(final['quality_loss'], hib)} "
                         f"on {split}, beyond {limit_text}, though it held the limit on the validation data.")
        lines.append(f"Quality change on validation: {_interval(quality.get('validation'), hib)}; on {split}: "
                     f"{_interval(quality.get('test'), hib)}.")
    if quality and not quality.get("bounded"):
        lines.append("No confidence bound could be applied: the task's metric gave one number, not per-example "
                     "scores, so the limit was checked on the estimate alone.")
    elif quality and limit is not None:
        lines.append(f"Plans were judged by the upper bound of their loss at {confidence:g} confidence on "
                     f"{quality['search_examples']} validation examples, and the chosen plan confirmed on "
                     f"{quality['confirmation_examples']} others that took no part in choosing it.")
    lines.extend(_selection_lines(quality.get("selection") or {}, hib))
    return lines


def _selection_lines(selection: dict, hib: bool) -> list[str]:
    """Which better plans failed on the confirmation part (``qslm.search.selection``), and at what confidence."""
    turned = selection.get("turned_down", [])
    if not turned:
        return []
    failed = "; ".join(f"candidate {t['index']} ({100 * t['memory_fraction']:.2f}% of FP32) bounded at "
                       f"{loss_in_words(t['confirmation']['upper'], hib)} at {t['confidence']:g}" for t in turned)
    kept = ("no plan passed, so none is kept" if selection.get("chosen") is None else
            f"candidate {selection['chosen']} passed at {selection['confirmed_at']:g} and is kept")
    return [f"Confirmation tried the plans best first, each held to a higher confidence than the one before, so "
            f"that a plan over the limit is kept with a chance of at most one minus the confidence however many "
            f"are tried. Failed there: {failed}; {kept}."]
