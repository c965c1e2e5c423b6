"""Strategies by name: an unknown name is refused with the list of those registered."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.search.strategies import check_strategy, run_strategy, strategy_names


def test_the_registered_strategies():
    assert strategy_names() == ["tiered", "uniform", "hawq", "greedy", "random", "nsga2"]
    for name in strategy_names():
        check_strategy(name)


def test_an_unknown_strategy_is_refused_with_the_names_there_are():
    message = "unknown strategy 'anneal'; expected one of tiered, uniform, hawq, greedy, random, nsga2"
    with pytest.raises(QslmError, match=f"^{message}$"):
        check_strategy("anneal")
    with pytest.raises(QslmError, match=f"^{message}$"):
        run_strategy("anneal", None, None)
