"""A deferred result is computed when it is first asked for, and only then."""
from __future__ import annotations

from qslm.search.futures import Deferred


def test_a_deferred_result_is_computed_once_when_first_asked_for():
    calls = []
    deferred = Deferred(lambda: calls.append(1) or len(calls))
    assert calls == []
    assert deferred.result() == 1 and deferred.result() == 1
    assert calls == [1]
