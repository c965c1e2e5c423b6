"""Search strategies by name. Each is ``run(problem, context)``: it chooses assignments and calls
``problem.evaluate``; the problem keeps every result. ``qslm search --strategy NAME`` and
``SearchConfig(strategy=NAME)`` pick one; an unknown name is an error that lists these, raised by
``check_strategy`` when a search starts (a SearchConfig names a strategy without importing them all)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import QslmError
from . import baselines, tiered
from .problem import SearchProblem


@dataclass
class StrategyContext:
    """What some strategies need beyond the problem: the seed and budget of sampling strategies, and
    HAWQ's per-(unit, bits) perturbation cost, computed only if HAWQ runs."""
    seed: int
    budget: int
    hawq_omega: Callable[[], Callable[[str, int], float]]


Strategy = Callable[[SearchProblem, StrategyContext], object]
_STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def add(function: Strategy) -> Strategy:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        _STRATEGIES[name] = function
        return function
    return add


def strategy_names() -> list[str]:
    return list(_STRATEGIES)


def check_strategy(name: str) -> None:
    """Refuse a name no strategy is registered under, listing those that are."""
    if name not in _STRATEGIES:
        raise QslmError(f"unknown strategy {name!r}; expected one of {', '.join(_STRATEGIES)}")


def run_strategy(name: str, problem: SearchProblem, context: StrategyContext) -> None:
    check_strategy(name)
    _STRATEGIES[name](problem, context)


register("tiered")(lambda problem, context: tiered.tiered_search(problem))
register("uniform")(lambda problem, context: baselines.uniform_search(problem))
register("hawq")(lambda problem, context: baselines.hawq_search(problem, context.hawq_omega()))
register("greedy")(lambda problem, context: baselines.greedy_search(problem))
register("random")(lambda problem, context: baselines.random_search(problem, context.budget, context.seed))
register("nsga2")(lambda problem, context: baselines.nsga2_search(problem, context.budget, context.seed))
