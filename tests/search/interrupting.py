"""Candidate measurements recorded, and optionally interrupted as Ctrl-C would interrupt them."""
from __future__ import annotations

from qslm.search.measure import Measurements


def interrupt_at(monkeypatch, call: int | None) -> list:
    """Record every plan ``Measurements.metric_of`` measures; the ``call``-th raises KeyboardInterrupt
    (None: none does)."""
    calls = []
    measure = Measurements.metric_of

    def interrupted(self, plan):
        calls.append(plan)
        if len(calls) == call:
            raise KeyboardInterrupt
        return measure(self, plan)
    monkeypatch.setattr(Measurements, "metric_of", interrupted)
    return calls
