"""What every search strategy shares: the units and their grouping, the evaluator (real task metric on
the validation slice, journaled), exact memory, modelled energy and latency, and the objective.

Strategies only choose assignments (unit name -> bit-width) and call ``evaluate``; everything that
costs time is cached here, so strategies stay short and comparable. A strategy that knows which plans it
may ask for next hands them to ``prefetch`` (up to ``speculation`` of them), so parallel workers measure
them while it waits; only ``evaluate`` makes a measured plan a candidate (counted, journaled), in the
strategy's own order, so what it chooses never depends on how many workers measured.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tqdm import tqdm

from ..tasks.scores import Measured, check_same_examples
from .confidence import Bound, QualityJudge
from .futures import Deferred, Pending
from .journal import Journal, assignment_key, entry_of, measured_of
from .objective import Baseline, Constraints, Score, score

Assignment = dict[str, int]


@dataclass
class Candidate:
    index: int
    tier: str
    assignment: Assignment
    metric: float
    memory_bytes: int
    energy_pj: float
    modelled_latency_s: float  # per inference, from the hardware profile: what the objective uses
    measured_latency_s: float  # wall-clock seconds of the validation run: reported only (it is noisy)
    score: Score
    resumed: bool = False
    measured: Measured | None = None  # the metric and its per-example scores, when the task gave them

    def to_dict(self) -> dict:
        return {"index": self.index, "tier": self.tier, "metric": self.metric, "memory_bytes": self.memory_bytes,
                "energy_pj": self.energy_pj, "modelled_latency_s": self.modelled_latency_s,
                "measured_latency_s": self.measured_latency_s, "quality_loss": self.score.quality_loss,
                "memory_fraction": self.score.memory_fraction, "energy_fraction": self.score.energy_fraction,
                "latency_fraction": self.score.latency_fraction, "objective": self.score.objective,
                "quality_bound": self.score.quality_bound,
                "feasible": self.score.feasible, "violations": self.score.violations, "resumed": self.resumed,
                "assignment": self.assignment}


@dataclass
class SearchProblem:
    """``groups`` maps each block (and each top-level unit, as its own group) to its units, in model order.
    ``measure_metric(assignment) -> (Measured, seconds)`` runs the fake-quantized model on the validation
    slice; ``judge`` turns a measurement into its quality loss against the float model (on the search part
    of the examples, with its confidence bound).
    ``unit_bytes[unit][bits]`` and ``fixed_bytes`` give exact memory; ``energy_pj(assignment)`` the energy and
    ``latency_s(assignment)`` the modelled latency per inference (deterministic: the measured seconds
    are only recorded, so noisy timings never change which plan wins).
    ``damage_of(units, bits)`` is the proxy damage (KL to the float model) of quantizing only ``units``;
    ``measure_sensitivities([(units, bits), ...])``, when given, has several measured together (on workers,
    in parallel) before a strategy asks for them one by one.
    ``submit_metric(assignment)``, when given, starts ``measure_metric``'s work and returns at once (a
    ``Pending``); ``speculation`` is how many plans a strategy may have measured ahead of need."""
    groups: dict[str, list[str]]
    bit_choices: list[int]
    measure_metric: Callable[[Assignment], tuple[Measured, float]]
    unit_bytes: dict[str, dict[int, int]]
    fixed_bytes: int
    energy_pj: Callable[[Assignment], float]
    latency_s: Callable[[Assignment], float]
    damage_of: Callable[[tuple[str, ...], int], float]
    baseline: Baseline
    judge: QualityJudge
    constraints: Constraints
    objective_weights: dict[str, float]
    journal: Journal
    max_evaluations: int | None = None
    progress: bool = True
    submit_metric: Callable[[Assignment], Pending[tuple[Measured, float]]] | None = None
    speculation: int = 1
    measure_sensitivities: Callable[[list[tuple[tuple[str, ...], int]]], object] | None = None
    # what identifies a plan's measurement in the journal (by default its bit-widths)
    plan_key: Callable[[Assignment], str] = assignment_key
    candidates: list[Candidate] = field(default_factory=list)
    _seen: dict[str, Candidate] = field(default_factory=dict)
    # measurements submitted ahead of need: not candidates (nor journaled) until ``evaluate`` asks for them
    _pending: dict[str, Pending[tuple[Measured, float]]] = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        return [unit for members in self.groups.values() for unit in members]

    def memory_bytes(self, assignment: Assignment) -> int:
        return self.fixed_bytes + sum(self.unit_bytes[unit][bits] for unit, bits in assignment.items())

    def uniform(self, bits: int) -> Assignment:
        return {unit: bits for unit in self.units}

    @property
    def budget_left(self) -> bool:
        return self.max_evaluations is None or len(self.candidates) < self.max_evaluations

    @property
    def evaluations_left(self) -> int | None:
        return None if self.max_evaluations is None else max(0, self.max_evaluations - len(self.candidates))

    def evaluated(self, assignment: Assignment) -> bool:
        """A candidate already: evaluating it again returns it, uncounted."""
        return self.plan_key(assignment) in self._seen

    def prefetch_sensitivities(self, jobs: Iterable[tuple[tuple[str, ...], int]]) -> None:
        """Have the sensitivities of these (units, bits) measured now, together: a strategy about to ask
        for each of them in turn calls this first, so that workers measure them in parallel."""
        if self.measure_sensitivities is not None:
            self.measure_sensitivities(list(dict.fromkeys((tuple(units), bits) for units, bits in jobs)))

    def prefetch(self, assignments: Iterable[Assignment]) -> None:
        """Have the next ``speculation`` of ``assignments`` that are not known yet being measured (at most
        as many as the budget has evaluations left): the plans a strategy may ask for next, in the order
        it would. Nothing becomes a candidate here."""
        room = self.speculation if self.evaluations_left is None else min(self.speculation, self.evaluations_left)
        for assignment in assignments:
            if room <= 0:
                break
            key = self.plan_key(assignment)
            if key in self._seen or self.journal.get(key) is not None:
                continue
            if key not in self._pending:
                self._pending[key] = self._submit(assignment)
            room -= 1

    def evaluate_many(self, assignments: Iterable[Assignment], tier: str) -> list[Candidate]:
        """``evaluate`` of each, in order, with up to ``speculation`` of them measured at once, until the
        budget is spent (checked before each, as a strategy's own loop would)."""
        assignments = list(assignments)
        candidates = []
        for index, assignment in enumerate(assignments):
            if not self.budget_left:
                break
            self.prefetch(assignments[index:])
            candidates.append(self.evaluate(assignment, tier))
        return candidates

    def _submit(self, assignment: Assignment) -> Pending[tuple[Measured, float]]:
        if self.submit_metric is not None:
            return self.submit_metric(assignment)
        assignment = dict(assignment)
        return Deferred(lambda: self.measure_metric(assignment))

    def evaluate(self, assignment: Assignment, tier: str) -> Candidate:
        """The candidate's real task metric and costs; each distinct assignment is evaluated once."""
        key = self.plan_key(assignment)
        if key in self._seen:
            return self._seen[key]
        entry = self.journal.get(key)
        resumed = entry is not None
        if entry is None:
            pending = self._pending.pop(key, None) or self._submit(assignment)
            measured, seconds = pending.result()
            check_same_examples(measured, self.judge.reference, "Task.evaluate")
            entry = entry_of(key, measured, seconds)  # latency_s: the measured seconds
            self.journal.add(entry)
        else:
            measured = measured_of(entry)
            check_same_examples(measured, self.judge.reference, f"journal {self.journal.path} entry")
        memory = self.memory_bytes(assignment)
        energy = self.energy_pj(assignment)
        latency = self.latency_s(assignment)
        result = score(self.judge.search(measured), memory, energy, latency, self.baseline, self.constraints,
                       self.objective_weights)
        candidate = Candidate(len(self.candidates), tier, dict(assignment), measured.metric, memory, energy,
                              latency, entry["latency_s"], result, resumed, measured)
        self.candidates.append(candidate)
        self._seen[key] = candidate
        return candidate

    def quality_ok(self, candidate: Candidate) -> bool:
        return not any(v.startswith("quality") for v in candidate.score.violations)

    def violation(self, candidate: Candidate) -> float:
        """How far a candidate is from feasible, each constraint normalised by its limit (0 = feasible)."""
        total = 0.0
        limit = self.constraints.quality_limit(self.baseline.higher_is_better)
        if limit is not None:
            total += max(0.0, candidate.score.judged_loss - limit) / max(limit, 1e-9)
        memory_limit = self.constraints.memory_limit_bytes(self.baseline.memory_bytes)
        if memory_limit is not None:
            total += max(0.0, candidate.memory_bytes - memory_limit) / memory_limit
        energy_limit = self.constraints.energy_limit_pj(self.baseline.energy_pj)
        if energy_limit is not None:
            total += max(0.0, candidate.energy_pj - energy_limit) / energy_limit
        return total

    def better(self, new: Candidate, old: Candidate) -> bool:
        """Feasible beats infeasible; among infeasible, less violation wins; among feasible, lower objective."""
        if new.score.feasible != old.score.feasible:
            return new.score.feasible
        if not new.score.feasible:
            return self.violation(new) < self.violation(old) - 1e-12
        return new.score.objective < old.score.objective - 1e-12

    def best(self) -> Candidate | None:
        feasible = [c for c in self.candidates if c.score.feasible]
        if not feasible:
            return None
        return min(feasible, key=lambda c: (c.score.objective, c.index))

    def feasible_in_order(self) -> list[Candidate]:
        """The feasible candidates, best (lowest objective) first."""
        return sorted((c for c in self.candidates if c.score.feasible), key=lambda c: (c.score.objective, c.index))

    def confirmation(self, candidate: Candidate, confidence: float | None = None) -> Bound | None:
        """``candidate``'s loss on the validation examples that took no part in choosing (None: no scores),
        bounded at ``confidence`` (default the constraints')."""
        return self.judge.confirmation(candidate.measured, confidence)

    def closest(self, n: int = 3) -> list[Candidate]:
        return sorted(self.candidates, key=lambda c: (self.violation(c), c.score.objective, c.index))[:n]

    def progress_bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

