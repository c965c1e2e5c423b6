"""A synthetic search problem with known answers: no model, just arithmetic.

Three blocks of three units plus a ``head`` outside the blocks. Memory is ``params * bits / 8`` plus a
fixed per-unit overhead (scales); accuracy loss (in points) is additive over units with a known
per-unit, per-bit-width loss, and the sensitivity proxy is the same sum, so every search decision can
be checked by hand. Modelled latency is ``params * bits`` ns; the measured
seconds are a constant, or noise when a test asks for it.
"""
from __future__ import annotations

import random

import pytest

from qslm.search.confidence import QualityJudge
from qslm.search.futures import Deferred
from qslm.search.journal import Journal
from qslm.search.objective import Baseline, Constraints, parse_weights
from qslm.search.problem import SearchProblem
from qslm.tasks.scores import Measured

BITS = [2, 4, 8]
PARAMS = {"a": 1000, "b": 4000, "c": 2000}
HEAD_PARAMS = 3000
OVERHEAD = 64  # per-unit scales
FIXED = 1000  # float tensors outside the units
BASE_ACCURACY = 90.0  # percent, as the built-in classification tasks report it
INSENSITIVE = {8: 0.0, 4: 0.0005, 2: 0.002}  # accuracy points lost
LOSS = {**{f"b{i}.{m}": INSENSITIVE for i in range(3) for m in "abc"},
        "b1.a": {8: 0.0, 4: 0.1, 2: 5.0},  # one very sensitive module inside block b1
        "head": {8: 0.0, 4: 0.2, 2: 3.0}}
GROUPS = {**{f"b{i}": [f"b{i}.{m}" for m in "abc"] for i in range(3)}, "head": ["head"]}
UNIT_PARAMS = {**{f"b{i}.{m}": PARAMS[m] for i in range(3) for m in "abc"}, "head": HEAD_PARAMS}
FP32_BYTES = FIXED + 4 * sum(UNIT_PARAMS.values())
FP32_ENERGY = float(sum(UNIT_PARAMS.values()) * 32)


def unit_bytes(unit: str, bits: int) -> int:
    return UNIT_PARAMS[unit] * bits // 8 + OVERHEAD


def energy(assignment: dict[str, int]) -> float:
    return float(sum(UNIT_PARAMS[unit] * bits for unit, bits in assignment.items()))


def latency(assignment: dict[str, int]) -> float:
    """Modelled seconds: weight traffic, 1 ns per weight bit moved."""
    return sum(UNIT_PARAMS[unit] * bits for unit, bits in assignment.items()) * 1e-9


FP32_LATENCY = latency({unit: 32 for unit in UNIT_PARAMS})


class Synthetic:
    """Builds fresh problems over the same units and records every (expensive) metric measurement."""

    def __init__(self, tmp_path, loss=None, timing_noise_seed: int | None = None):
        self.tmp_path = tmp_path
        self.loss = loss or LOSS
        self.measured: list[dict[str, int]] = []
        self.problems = 0
        # wall-clock seconds of each measurement: constant, or random like a busy machine's
        self.timings = None if timing_noise_seed is None else random.Random(timing_noise_seed)

    def loss_points(self, assignment: dict[str, int]) -> float:
        return sum(self.loss[unit][bits] for unit, bits in assignment.items())

    def measure(self, assignment: dict[str, int]) -> tuple[Measured, float]:
        self.measured.append(dict(assignment))
        seconds = 0.01 if self.timings is None else self.timings.uniform(0.001, 1.0)
        return Measured(BASE_ACCURACY - self.loss_points(assignment)), seconds

    def sensitivity(self, units, bits: int) -> float:
        return sum(self.loss[unit][bits] for unit in units)

    def submit(self, assignment: dict[str, int]) -> Deferred:
        """Measured at once, as a worker would: a plan measured ahead counts in ``measured`` even if no
        candidate is ever made of it."""
        result = self.measure(assignment)
        return Deferred(lambda: result)

    def problem(self, constraints: Constraints, max_evaluations: int | None = None, weights=None,
                bits=BITS, speculation: int = 1) -> SearchProblem:
        """``speculation`` > 1: plans are measured ahead of need, that many at a time (``submit``)."""
        self.problems += 1
        return SearchProblem(
            groups={name: list(units) for name, units in GROUPS.items()}, bit_choices=list(bits),
            measure_metric=self.measure,
            unit_bytes={u: {b: unit_bytes(u, b) for b in bits} for u in UNIT_PARAMS}, fixed_bytes=FIXED,
            energy_pj=energy, latency_s=latency, damage_of=self.sensitivity,
            baseline=Baseline(BASE_ACCURACY, True, FP32_BYTES, FP32_ENERGY, FP32_LATENCY),
            judge=QualityJudge(Measured(BASE_ACCURACY), True, False, constraints.confidence, seed=0),
            constraints=constraints, objective_weights=parse_weights(weights),
            journal=Journal(self.tmp_path / f"journal-{self.problems}.jsonl", {"problem": self.problems}),
            max_evaluations=max_evaluations, progress=False, speculation=speculation,
            submit_metric=self.submit if speculation > 1 else None)


@pytest.fixture
def synthetic(tmp_path) -> Synthetic:
    return Synthetic(tmp_path)
