"""The second step of a search: everything that measures, wired once and complete when built.

``Measurements`` (one model replica) runs on an executor (this process or Ray workers); ``Damages``
caches unit damages on disk; ``MethodChoice`` picks each unit's quantizer per width from those damages;
``SensitivityTable`` and ``PlanSpecs`` ask the choice for specs; the journal keeps every plan's metric,
so a rerun resumes. ``SearchProblem`` is what a strategy sees of all this.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from tqdm import tqdm

from ..analysis.energy import energy_per_inference, latency_per_inference
from ..analysis.hessian import hutchinson_traces
from ..analysis.sensitivity import OutputReference, SensitivityCache, model_hash
from ..models.neuron_state import reset_neuron_states
from ..quant.apply import WeightCache
from ..quant.context import QuantContext
from ..quant.memory import unit_bytes
from ..quant.plan import QuantPlan
from ..quant.quantizer import DEFAULT_METHOD, QuantSpec
from ..quant.units import unit_tensor
from ..tasks.base import Task
from .config import SearchConfig
from .executors import InProcess
from .futures import Deferred, Executor
from .journal import Journal, measured_of
from .measure import Damages, Measurements, SensitivityTable, cache_file
from .methods import BytesByWidth, MethodChoice, output_errors, record_context
from .objective import Constraints
from .plans import PlanSpecs, specs_key
from .problem import SearchProblem
from .profiling import FloatProfile

JOURNAL_FILE = "journal.jsonl"


@dataclass
class SearchMeasurements:
    model: nn.Module
    config: SearchConfig
    profile: FloatProfile
    digest: str  # the float model's hash
    weight_cache: WeightCache
    reference: OutputReference
    context: QuantContext | None
    measurements: Measurements
    executor: Executor
    damages: Damages
    journal: Journal
    choice: MethodChoice
    sensitivities: SensitivityTable
    plans: PlanSpecs
    bytes_table: dict[str, BytesByWidth]
    dropped: list[str]  # damaged journal or cache lines dropped (and measured again), one note per file
    check: EqualBytesCheck
    progress: bool = True

    def submit(self, assignment: dict[str, int]):
        """Start measuring ``assignment``'s metric (or hand back the one the method choice measured)."""
        known = self.check.ahead.pop(self.plans.key(assignment), None)
        return Deferred(lambda: known) if known is not None else self.executor.metric(self.plans.plan(assignment))

    def hawq_omega(self) -> Callable[[str, int], float]:
        """HAWQ's sensitivity of a unit at a width: its Hessian trace per weight times its quantization error."""
        units = self.profile.units
        tensors = {u: unit_tensor(self.model, unit) for u, unit in units.items()}
        traces = hutchinson_traces(self.model, tensors, self.reference, seed=self.config.seed)
        return lambda u, b: traces[u] / tensors[u].numel() * float(
            (self.weight_cache.dequantized(u, tensors[u], self.plans.spec_of(u, b), self.context) - tensors[u])
            .detach().pow(2).sum())

    def problem(self, constraints: Constraints) -> SearchProblem:
        """What a strategy sees: groups, widths, and the metric, bytes, energy and latency of any plan."""
        profile, config = self.profile, self.config
        return SearchProblem(
            groups=profile.groups, bit_choices=list(config.bit_choices),
            measure_metric=lambda a: self.measurements.metric_of(self.plans.plan(a)),
            submit_metric=self.submit, speculation=self.executor.workers, plan_key=self.plans.key,
            unit_bytes=self.bytes_table, fixed_bytes=profile.fixed_bytes,
            energy_pj=lambda a: energy_per_inference(profile.op_counts, a, profile.hardware).total_pj,
            latency_s=lambda a: latency_per_inference(profile.op_counts, a, profile.hardware),
            damage_of=lambda members, bits: self.sensitivities.measure(tuple(members), bits)["damage"],
            measure_sensitivities=lambda jobs: self.sensitivities.measure_together(jobs, self.progress),
            baseline=profile.baseline, judge=profile.judge, constraints=constraints, objective_weights=config.objective_weights,
            journal=self.journal, max_evaluations=config.max_evaluations, progress=self.progress)

    def measure_full_table(self) -> None:
        """Every method and every sensitivity first (``SearchConfig(sensitivity_table="full")``)."""
        self.choice.decide_all()
        self.sensitivities.measure_table(self.profile.groups, list(self.profile.units), list(self.config.bit_choices),
                                       self.progress)

    def block_cache_report(self) -> dict | None:
        """The blocks whose outputs were reused, those left out and why; hits and misses are this process's
        (None when workers measured)."""
        cache = self.measurements.block_cache
        if cache is None:
            return None
        in_process = isinstance(self.executor, InProcess)
        return {**cache.describe(), **({"hits": cache.hits, "misses": cache.misses} if in_process
                                       else {"hits": None, "misses": None})}

    def asked_table(self) -> dict[str, dict[str, dict]]:
        return self.sensitivities.asked_table(self.profile.groups, list(self.profile.units),
                                            list(self.config.bit_choices))


class EqualBytesCheck:
    """Whether every unit at one width with the methods ``chosen`` scores no worse on the task's metric than
    with the methods ``back`` (``MethodChoice``'s check where methods store equal bytes). Compared on the
    search part only: the confirmation part takes no part in any choice. The plans it measures are kept in
    ``ahead`` for the search to take, and each check is recorded in ``checked`` for the report."""

    def __init__(self, executor: Executor, journal: Journal, judge):
        self.executor, self.journal, self.judge = executor, journal, judge
        self.ahead: dict[str, tuple] = {}
        self.checked: list[dict] = []

    def __call__(self, chosen: dict[str, QuantSpec], back: dict[str, QuantSpec]) -> bool:
        keys = [specs_key(chosen), specs_key(back)]
        pending = {k: self.executor.metric(QuantPlan(dict(specs))) for k, specs in zip(keys, (chosen, back))
                   if self.journal.get(k) is None and k not in self.ahead}
        self.ahead.update({k: p.result() for k, p in pending.items()})
        self.checked.append({"bits": next(iter(chosen.values())).bits, "measured": len(pending)})
        ours, theirs = (self.judge.search(measured_of(self.journal.get(k)) if self.journal.get(k) is not None
                                          else self.ahead[k][0]).estimate for k in keys)
        return ours <= theirs


def build_measurements(model: nn.Module, task: Task, config: SearchConfig, constraints: Constraints,
                       profile: FloatProfile, executors, folder, cache_dir: Path,
                       progress: bool) -> SearchMeasurements:
    """Wire the measurements of a search, each part built after those it needs; the journal is made just
    before the first measurement (a run refused earlier leaves no trace of itself)."""
    units = profile.units
    digest = model_hash(model)
    weight_cache = WeightCache()
    reference = OutputReference(model, task.calibration, task.damage_measure, task.output, reset=reset_neuron_states)
    context = record_context(model, task.quantizer_inputs, config.methods, reset_neuron_states,
                             weigh_grids=len(config.grids) > 1)
    measurements = Measurements(model, task, profile.hierarchy, config, reference=reference, weight_cache=weight_cache,
                                context=context)
    executor = executors.start(measurements)
    cache = SensitivityCache(cache_file(cache_dir, digest))
    damages = Damages(measurements, cache, digest, executor)
    journal = _journal(folder, _journal_header(digest, task, config, damages))
    # damaged journal or cache lines were dropped, not trusted: said once, now and in the report
    dropped = [note for note in (journal.note(), cache.note()) if note is not None]
    for note in dropped:
        tqdm.write(f"note: {note}", file=sys.stderr)
    stored_bytes = lambda name, spec: unit_bytes(units[name], spec)  # noqa: E731
    errors = output_errors(model, context, weight_cache) if context is not None else None
    check = EqualBytesCheck(executor, journal, profile.judge)
    limit = constraints.memory_limit_bytes(profile.baseline.memory_bytes)
    choice = MethodChoice(list(units), list(config.bit_choices), config.methods, config.base_spec, context,
                          lambda jobs: _method_damages(damages, jobs, progress), stored_bytes,
                          units_budget=None if limit is None else limit - profile.fixed_bytes,
                          no_worse_together=check,
                          local=None if errors is None else lambda jobs: _method_errors(errors, jobs, progress),
                          grids=config.grids)
    return SearchMeasurements(
        model, config, profile, digest, weight_cache, reference, context, measurements, executor, damages, journal,
        choice, SensitivityTable(damages, choice.spec), PlanSpecs(choice.spec, config.chooses_per_unit),
        {u: BytesByWidth(u, list(config.bit_choices), choice.spec, stored_bytes) for u in units}, dropped, check,
        progress)


def _journal_header(digest: str, task: Task, config: SearchConfig, damages: Damages) -> dict:
    """A journal entry (one plan's metric) depends only on the header and its key, so a rerun with other
    constraints, weights, strategy or budget reuses every measurement already made."""
    header = {"model": digest, "task": task.identity(), "metric": task.metric_name,
              "spec": config.base_spec.to_dict(), "ignore": list(config.ignore)}
    if list(config.methods) != [DEFAULT_METHOD]:
        header["methods"] = list(config.methods)
    if damages.quantizer_digest is not None:  # the methods were fitted, or chosen, on these inputs
        header["quantizer_calibration"] = damages.quantizer_digest
    if config.grids != (config.base_spec.grid,):
        header["grids"] = list(config.grids)
    return header


def _journal(folder, header: dict) -> Journal:
    """The search's journal, recorded as kept in the output folder only now, when the first measurement is
    about to be made."""
    folder.keep(JOURNAL_FILE)
    return Journal(folder.path / JOURNAL_FILE, header)


def _method_damages(damages: Damages, jobs, progress: bool) -> list[float]:
    """The damage of each (unit, spec) alone, measured together (in parallel on workers), for the choice of
    methods at a width."""
    with tqdm(total=len(jobs), desc="methods", disable=not progress, leave=False) as bar:
        return [r["damage"] for r in damages.measure_specs([{u: spec} for u, spec in jobs], bar)]


def _method_errors(error, jobs, progress: bool) -> list[float]:
    """The output error of each (unit, spec) on the unit's calibration inputs, for the choice of methods."""
    return [error(unit, spec) for unit, spec in tqdm(jobs, desc="methods", disable=not progress, leave=False)]
