"""The strategy registry: names, refusal of unknown ones, and dispatch to what was registered."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.search import strategies
from qslm.search.objective import Constraints
from qslm.search.strategies import StrategyContext, check_strategy, run_strategy, strategy_names


def test_the_built_in_strategies_are_registered():
    assert strategy_names() == ["tiered", "uniform", "hawq", "greedy", "random", "nsga2"]


def test_a_registered_strategy_runs_on_the_problem_it_is_given(synthetic, monkeypatch):
    monkeypatch.setattr(strategies, "_STRATEGIES", dict(strategies._STRATEGIES))  # registered for this test only
    problem = synthetic.problem(Constraints(max_drop=1.0))

    @strategies.register("all-8-bit")
    def all_eight(problem, context):
        problem.evaluate({u: 8 for members in problem.groups.values() for u in members}, "global")

    run_strategy("all-8-bit", problem, StrategyContext(seed=0, budget=1, hawq_omega=lambda: None))
    assert [c.assignment for c in problem.candidates] == [{u: 8 for u in problem.unit_bytes}]
    with pytest.raises(ValueError, match="strategy 'all-8-bit' is registered twice"):
        strategies.register("all-8-bit")(all_eight)



def test_an_unknown_strategy_is_refused_with_the_names_there_are():
    message = "unknown strategy 'anneal'; expected one of tiered, uniform, hawq, greedy, random, nsga2"
    with pytest.raises(QslmError, match=f"^{message}$"):
        check_strategy("anneal")
    with pytest.raises(QslmError, match=f"^{message}$"):
        run_strategy("anneal", None, None)
