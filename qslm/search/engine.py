"""The search engine: any PyTorch model, any ``Task`` (the user's data and metric), one ``SearchConfig``.

    result = search(model, task, out="out/mine", constraints=Constraints(max_drop=1.0, max_memory=0.14))
    result.report["baseline"], result.report["final"]
    qslm.load_quantized(MyModel(...), "out/mine")

Profile (hierarchy, op counts, firing rates) -> sensitivity of units and groups at bit-widths (damage to
the outputs on the calibration inputs, cached; measured when the strategy first asks for one, or all of
them first with ``SearchConfig(sensitivity_table="full")``; with several quantizer methods, each unit's
method at a width is chosen when the search first needs that width: ``qslm.search.methods``) -> a
strategy asks ``SearchProblem.evaluate`` for the task's metric of candidate plans (journaled, so a rerun
resumes) -> the best feasible plan is exported bit-packed, loaded back, and its test metric, memory
(bytes on disk) and energy are measured from the packed model -> report. Nothing here knows which data
set or architecture it serves.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from ..analysis.cost import (
    OpCounter,
    energy_per_inference,
    latency_per_inference,
    load_hardware_profile,
    measure_latency,
    power_mw,
)
from ..analysis.hessian import hutchinson_traces
from ..analysis.hierarchy import SpikeRecorder, build_hierarchy
from ..analysis.neurons import reset_neuron_states
from ..analysis.sensitivity import OutputReference, SensitivityCache, default_cache_dir, model_hash
from ..checkpoint import load_quantized, quantized_files_bytes, quantized_files_overhead, write_quantized_files
from ..diskspace import native_write, require_free_space
from ..errors import QslmError
from ..environment import environment
from ..headline import headline
from ..outputs import OutputFolder, check_writable_folder
from ..quant.apply import WeightCache
from ..quant.memory import fixed_bytes, safetensors_tensor_bytes, unit_bytes
from ..quant.pack import PLAN_FILE, WEIGHTS_FILE
from ..quant.plan import FLOAT_BITS, QuantPlan
from ..quant.quantizer import DEFAULT_METHOD, QuantSpec
from ..quant.units import Unit, find_units, unit_tensor
from ..report import write_report
from ..tasks.base import Task, inferences_in, run_inputs
from ..tasks.scores import Measured, check_same_examples
from .config import SearchConfig
from .executors import Deferred, ExecutorChoice, InProcess
from .journal import Journal, assignment_key, measured_of
from .measure import Measurements, SensitivityTable, cache_file
from .measure import task_metric as _metric
from .methods import BytesByWidth, MethodChoice, output_errors, record_context
from .confidence import Bound, QualityJudge
from .objective import Baseline, Constraints
from .problem import SearchProblem
from .selection import confirmed_choice
from .strategies import StrategyContext, run_strategy

JOURNAL_FILE = "journal.jsonl"
# Room kept for report.json, report.md and the three plots: under 0.5 MB on the bundled models
# (docs/results), growing with the candidates measured.
REPORT_BYTES = 2 * 2 ** 20


@dataclass
class SearchResult:
    out: Path
    report: dict
    plan: QuantPlan | None
    model: nn.Module | None = None  # the packed model, loaded back from the written files


def check_quality_limit(task_name: str, higher_is_better: bool, constraints: Constraints) -> None:
    """The quality limit that fits the metric's direction: max_drop or max_relative_increase."""
    if higher_is_better and constraints.max_relative_increase is not None:
        raise QslmError(f"the metric of task {task_name!r} is higher-is-better: limit its drop with max_drop "
                        "(absolute, in the metric's units), not max_relative_increase")
    if not higher_is_better and constraints.max_drop is not None:
        raise QslmError(f"the metric of task {task_name!r} is lower-is-better: limit it with "
                        "max_relative_increase (e.g. 0.03 for +3%), not max_drop")


def _check(task: Task, constraints: Constraints) -> None:
    if not isinstance(task, Task):
        raise QslmError(f"task must be a qslm.Task (or a built-in task name), got {type(task).__name__}")
    check_quality_limit(task.name, task.higher_is_better, constraints)


def search(model: nn.Module, task: Task, out: str | os.PathLike, constraints: Constraints | None = None,
           config: SearchConfig | None = None, *, device: str | torch.device | None = None, progress: bool = True,
           label: str | None = None, cache_dir: str | os.PathLike | None = None, overwrite: bool = False,
           protect: tuple[str | os.PathLike, ...] = (),
           companion_files: Mapping[str, Callable[[Path], None]] | None = None,
           notes: Mapping[str, object] | None = None, workers: int = 1,
           ray_address: str | None = None) -> SearchResult:
    """Search a mixed-precision plan for ``model`` on ``task`` and write the packed model and report to
    ``out`` (a search output folder, see ``qslm.outputs``; ``protect`` names folders it must not be in).
    ``label`` names the model in the report; ``cache_dir`` keeps sensitivity measurements across runs
    (default ``$QSLM_CACHE_DIR`` or ``~/.cache/qslm``); ``companion_files`` (name -> writer of that file
    into a folder) go beside the model, e.g. a model folder's tokenizer; ``notes`` are recorded in the
    report as given. ``workers`` > 1 measures on that many Ray workers on this machine, ``ray_address``
    on a Ray cluster (``pip install 'qslm[ray]'``); the results are those of one process."""
    from ..device import resolve_device

    started, seconds = time.perf_counter(), {}
    constraints, config = constraints or Constraints(), config or SearchConfig()
    _check(task, constraints)
    executors = ExecutorChoice(workers, ray_address)
    with executors:
        executors.connect()  # a cluster is joined before the folder is claimed: a wrong address costs nothing
        cache_dir = check_writable_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache folder")
        with OutputFolder.claim(out, "search", overwrite=overwrite, protect=protect) as folder:
            result = _search(model, task, folder, constraints, config, resolve_device(device), progress,
                             label or type(model).__name__, cache_dir, companion_files or {}, dict(notes or {}),
                             started, seconds, executors)
    return result


def _search(model, task, folder, constraints, config, device, progress, label, cache_dir, companions, notes,
            started, seconds, executors) -> SearchResult:
    out = folder.path
    torch.manual_seed(config.seed)
    profile = load_hardware_profile(config.hardware)
    model = model.to(device).eval()

    # ---- profile: hierarchy, float metric, memory, op counts
    t0 = time.perf_counter()
    hierarchy = build_hierarchy(model, label, config.ignore)
    all_units = find_units(model)
    if any(u.packed is not None for u in all_units.values()):
        raise QslmError(f"{label} is already quantized; search starts from a float model")
    groups, units = hierarchy.groups(), dict(hierarchy.units)
    # ---- room for the run's files, checked before any measurement rather than after the search: the
    # companions are staged now (their bytes then on the disk already), the rest bounded from above
    staging = folder.staging()
    companion_files = {}
    for name, write in companions.items():
        with native_write(staging / name):
            write(staging / name)
        companion_files[name] = staging / name
    require_free_space(out, _largest_export_bytes(model, all_units, units, config, constraints) + REPORT_BYTES,
                       "the largest model and report this search may write")
    op_counts = _profile(model, task, hierarchy)
    float_measured = _metric(task.evaluate, model, "evaluate", task.scores_are_nll)
    judge = QualityJudge(float_measured, task.higher_is_better, task.scores_are_nll, constraints.confidence,
                         config.seed)
    fixed = fixed_bytes(model) + sum(unit_bytes(u, None) for n, u in all_units.items() if n not in units)
    baseline = Baseline(float_measured.metric, task.higher_is_better, fixed + sum(unit_bytes(u, None) for u in units.values()),
                        energy_per_inference(op_counts, None, profile).total_pj,
                        latency_per_inference(op_counts, None, profile))
    seconds["profile"] = time.perf_counter() - t0

    # ---- sensitivity of every group and unit at every bit-width
    t0 = time.perf_counter()
    digest = model_hash(model)
    weight_cache = WeightCache()
    reference = OutputReference(model, task.calibration, task.damage, task.output, reset=reset_neuron_states)
    context = record_context(model, task.quantizer_inputs, config.methods, reset_neuron_states)
    measurements = Measurements(model, task, hierarchy, config, reference=reference, weights=weight_cache,
                                context=context)
    executor = executors.start(measurements)
    cache = SensitivityCache(cache_file(cache_dir, digest))
    sensitivity = SensitivityTable(measurements, cache, digest, executor)
    # ---- a journal entry (one plan's metric) depends only on the header and its key, so a rerun with other
    # constraints, weights, strategy or budget reuses every measurement already made (with several
    # methods the key names each unit's method too: a memory limit that changes a unit's method at the
    # lowest width changes its plans' keys). Made now, before the first measurement.
    header = {"model": digest, "task": task.identity(), "metric": task.metric_name,
              "spec": config.base_spec.to_dict(), "ignore": list(config.ignore)}
    if list(config.methods) != [DEFAULT_METHOD]:
        header["methods"] = list(config.methods)
        header["quantizer_calibration"] = sensitivity.quantizer_digest
    journal = _journal(folder, header)
    # damaged journal or cache lines were dropped, not trusted: said once, now and in the report
    dropped = [note for note in (journal.note(), cache.note()) if note is not None]
    for note in dropped:
        tqdm.write(f"note: {note}", file=sys.stderr)
    # plans the choice of methods measured (every unit at one width): the search takes them from here
    ahead: dict[str, tuple[float, float]] = {}
    checked: list[dict] = []  # each width whose equal-bytes choices were checked, and the plans it measured

    def no_worse_together(chosen: dict, back: dict) -> bool:
        keys = [_specs_key(chosen), _specs_key(back)]
        pending = {k: executor.metric(QuantPlan(dict(specs))) for k, specs in zip(keys, (chosen, back))
                   if journal.get(k) is None and k not in ahead}
        ahead.update({k: p.result() for k, p in pending.items()})
        checked.append({"bits": next(iter(chosen.values())).bits, "measured": len(pending)})
        # compared on the search part only: the confirmation part takes no part in any choice
        ours, theirs = (judge.search(measured_of(journal.get(k)) if journal.get(k) is not None else ahead[k][0])
                        .estimate for k in keys)
        return ours <= theirs

    # each width's methods chosen when the search first needs that width, all units together
    stored_bytes = lambda name, spec: unit_bytes(units[name], spec)  # noqa: E731
    errors = output_errors(model, context, weight_cache) if context is not None else None
    choice = MethodChoice(list(units), list(config.bit_choices), config.methods, config.base_spec, context,
                          lambda jobs: _method_damages(sensitivity, jobs, progress), stored_bytes,
                          units_budget=_units_budget(constraints, baseline, fixed),
                          no_worse_together=no_worse_together,
                          local=None if errors is None else lambda jobs: _method_errors(errors, jobs, progress))
    measurements.spec_of = spec_of = choice.spec
    if config.sensitivity_table == "full":
        choice.decide_all()
        sensitivity.measure_table(groups, list(units), list(config.bit_choices), progress)
    seconds["sensitivity"] = time.perf_counter() - t0  # the table, when measured first
    measured_before_search = sensitivity.seconds

    # ---- search
    t0 = time.perf_counter()
    plan_key = assignment_key if list(config.methods) == [DEFAULT_METHOD] else (
        lambda a: _specs_key(measurements.plan(a).units))

    def submit(assignment):
        known = ahead.pop(plan_key(assignment), None)
        return Deferred(lambda: known) if known is not None else executor.metric(measurements.plan(assignment))

    bytes_table = {u: BytesByWidth(u, list(config.bit_choices), spec_of, stored_bytes) for u in units}

    problem = SearchProblem(
        groups=groups, bit_choices=list(config.bit_choices), measure_metric=measurements.metric,
        submit_metric=submit, speculation=executor.workers,
        plan_key=plan_key,
        unit_bytes=bytes_table, fixed_bytes=fixed,
        energy_pj=lambda a: energy_per_inference(op_counts, a, profile).total_pj,
        latency_s=lambda a: latency_per_inference(op_counts, a, profile),
        sensitivity=lambda members, bits: sensitivity.measure(tuple(members), bits)["damage"],
        measure_sensitivities=lambda jobs: sensitivity.measure_together(jobs, progress),
        baseline=baseline, judge=judge,
        constraints=constraints, weights=config.weights, journal=journal,
        max_evaluations=config.max_evaluations, progress=progress)

    def hawq_omega():
        weights = {u: unit_tensor(model, unit) for u, unit in units.items()}
        traces = hutchinson_traces(model, weights, reference, seed=config.seed)
        return lambda u, b: traces[u] / weights[u].numel() * float(
            (weight_cache.dequantized(u, weights[u], spec_of(u, b), context) - weights[u]).detach().pow(2).sum())

    run_strategy(config.strategy, problem, StrategyContext(config.seed, config.budget, hawq_omega))
    selection = confirmed_choice(problem)
    best = selection.chosen
    measured_in_search = sensitivity.seconds - measured_before_search  # sensitivities the strategy asked for
    seconds["sensitivity"] += measured_in_search
    seconds["search"] = time.perf_counter() - t0 - measured_in_search
    table = sensitivity.asked_table(groups, list(units), list(config.bit_choices))

    # ---- verify the chosen plan on the packed model, report; the run's files are committed together
    t0 = time.perf_counter()
    split = task.test_split if task.test is not None else "validation"
    float_reported = _reported(task, model)
    reported_metric = float_reported.metric
    report = {
        **notes, "model": label, "model_hash": digest, "task": task.name, "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "constraints": constraints.to_dict(baseline.memory_bytes, baseline.energy_pj), "config": config.to_dict(),
        "hardware": profile.name, "environment": environment(), "calibration_batches": len(task.calibration),
        "calibration_size": sum(inferences_in(item) for item in task.calibration), "damage_measure": reference.measure,
        "quantizer_calibration_size": (sum(inferences_in(item) for item in task.quantizer_inputs)
                                       if context is not None else None),
        "hierarchy": hierarchy.to_dict(), "sensitivity": table,
        "methods": {u: {str(b): m for b, m in by_bits.items()} for u, by_bits in choice.decided().items()},
        "candidates": [c.to_dict() for c in problem.candidates],
        "evaluations": {"total": len(problem.candidates), "new": sum(not c.resumed for c in problem.candidates)},
        "method_checks": checked,
        "dropped_lines": dropped,
        "workers": executor.workers,
        "workers_note": "; ".join(executors.notes) or None,  # asked for more workers than there are CPUs/GPUs
        "block_cache": _block_cache_report(measurements, in_process=isinstance(executor, InProcess)),
        "baseline": {"metric_validation": baseline.metric, f"metric_{split}": reported_metric,
                     "memory_bytes": baseline.memory_bytes, "energy_pj": baseline.energy_pj,
                     "power_mw": power_mw(baseline.energy_pj, profile), "latency_s": _latency(model, task),
                     "modelled_latency_s": baseline.latency_s},
    }
    plan, packed, model_files = None, None, {}
    quality = {**judge.describe(), "limit": constraints.quality_limit(task.higher_is_better),
               "selection": selection.to_dict()}
    report["quality"] = quality
    if best is None:
        report.update(status="infeasible", closest=[c.to_dict() for c in problem.closest()], final=None, chosen=None)
        quality["certifiable"] = _certifiable(problem, judge, quality["limit"])
    else:
        plan = measurements.plan(best.assignment)
        require_free_space(out, quantized_files_bytes(model, plan) + REPORT_BYTES,
                           "the chosen plan's model and report",
                           then="the journal keeps every measurement: free some space and rerun to resume")
        model_files = {**write_quantized_files(model, plan, staging, context=context), **companion_files}
        packed = load_quantized(copy.deepcopy(model), staging)  # every final figure comes from what was written
        final_measured = _reported(task, packed, float_reported)
        final_metric = final_measured.metric
        test_loss = _quality_verified(quality, judge, best, final_measured, float_reported, split)
        final_ops = _profile(packed, task)
        stored = {u: bytes_table[u][b] for u, b in best.assignment.items()}
        final_energy = energy_per_inference(final_ops, best.assignment, profile, unit_bytes=stored).total_pj
        # "feasible": a plan met the constraints on the validation data; the headline and
        # quality.test_within_limit say whether the limit also held on the test split
        report.update(status="feasible", chosen=best.to_dict(), final={
            "split": split, "metric": final_metric, "quality_loss": test_loss.estimate,
            "quality_within_limit": quality["test_within_limit"],
            "memory_bytes": safetensors_tensor_bytes(model_files[WEIGHTS_FILE]),
            "memory_bytes_predicted": best.memory_bytes, "energy_pj": final_energy,
            "power_mw": power_mw(final_energy, profile), "latency_s": _latency(packed, task),
            "modelled_latency_s": latency_per_inference(final_ops, best.assignment, profile, unit_bytes=stored),
            "plan_file": PLAN_FILE})
    report["headline"] = headline(report)
    seconds["verify"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = seconds
    report_files = write_report(report, staging)
    folder.commit(model_files, last=report_files)
    return SearchResult(out, report, plan, packed)


def _largest_export_bytes(model: nn.Module, all_units: dict[str, Unit], units: dict[str, Unit],
                          config: SearchConfig, constraints: Constraints) -> int:
    """A bound above on the model files a search may write: every searched unit at the width and method
    that store the most (or float), the other units float, capped by the memory limit (a plan over it is
    never written), plus the files' headers and JSON."""
    fp32 = fixed_bytes(model) + sum(unit_bytes(unit, None) for unit in all_units.values())
    largest = fp32 + sum(_largest_unit_bytes(unit, config) - unit_bytes(unit, None) for unit in units.values())
    limit = constraints.memory_limit_bytes(fp32)
    tensors = largest if limit is None else min(largest, math.floor(limit))
    return tensors + quantized_files_overhead(model)


def _largest_unit_bytes(unit: Unit, config: SearchConfig) -> int:
    """The most bytes ``unit`` may store in a plan of this search (scales can outweigh codes: 16 bits in
    groups of 2 store more than float)."""
    stored = [unit_bytes(unit, None)]
    for bits in config.bit_choices:
        for method in config.methods:
            try:
                stored.append(unit_bytes(unit, dataclasses.replace(config.base_spec, bits=bits, method=method)))
            except QslmError:
                continue  # a width the method does not take (codebook at 16 bits) is never chosen
    return max(stored)


def _reported(task: Task, model: nn.Module, float_reported: Measured | None = None) -> Measured:
    """The task's test measurement of ``model`` (its validation one without a test), checked to pair with
    the float model's ``float_reported`` when given."""
    what = "test" if task.test is not None else "evaluate"
    # a test figure decides nothing, so a non-finite one is reported (as null), not refused
    measured = _metric(task.test or task.evaluate, model, what, task.scores_are_nll,
                       allow_non_finite=task.test is not None)
    if float_reported is not None:
        check_same_examples(measured, float_reported, f"Task.{what}")
    return measured


def _quality_verified(quality: dict, judge: QualityJudge, best, final: Measured, float_reported: Measured,
                      split: str) -> Bound:
    """Record the chosen plan's loss on the search part, the whole validation data and the test split
    (with 95% intervals) in ``quality``; returns the test loss. A test figure that is not finite (the
    float model's or the plan's) leaves the test loss NaN and whether the limit held there unknown (None),
    and ``quality["test_not_finite"]`` names whose figure it was."""
    not_finite = [who for who, measured in (("float model", float_reported), ("quantized model", final))
                  if not measured.finite]
    test_loss = Bound(math.nan) if not_finite else judge.whole(final, float_reported)
    limit = quality["limit"]
    quality.update(search=judge.search(best.measured).to_dict(), validation=judge.whole(best.measured).to_dict(),
                   test=test_loss.to_dict() | {"split": split}, test_not_finite=not_finite,
                   test_within_limit=None if not_finite else limit is None or test_loss.estimate <= limit + 1e-12)
    return test_loss


def _certifiable(problem: SearchProblem, judge: QualityJudge, limit: float | None) -> dict | None:
    """When no plan held the quality limit with confidence: what the validation data can certify, from the
    candidate with the lowest bound (None without a limit or a bound)."""
    bounded = [c for c in problem.candidates if c.score.quality_bound is not None]
    if limit is None or not bounded or any(problem.quality_ok(c) for c in problem.candidates):
        return None
    least = min(bounded, key=lambda c: (c.score.quality_bound, c.index))
    return {"candidate": least.index, **judge.certifiable(judge.search(least.measured), limit)}


def _specs_key(specs: Mapping[str, QuantSpec | None]) -> str:
    """A plan's journal key when units may differ in method: each unit's width and method."""
    return assignment_key({u: FLOAT_BITS if s is None else [s.bits, s.method] for u, s in specs.items()})


def _method_damages(sensitivity: SensitivityTable, jobs, progress: bool) -> list[float]:
    """The damage of each (unit, spec) alone, measured together (in parallel on workers), for the choice of
    methods at a width."""
    with tqdm(total=len(jobs), desc="methods", disable=not progress, leave=False) as bar:
        return [r["damage"] for r in sensitivity.measure_specs([{u: spec} for u, spec in jobs], bar)]


def _method_errors(error, jobs, progress: bool) -> list[float]:
    """The output error of each (unit, spec) on the unit's calibration inputs, for the choice of methods."""
    return [error(unit, spec) for unit, spec in tqdm(jobs, desc="methods", disable=not progress, leave=False)]


def _units_budget(constraints: Constraints, baseline: Baseline, fixed: int) -> float | None:
    """The bytes the units may store under the memory limit (None without one)."""
    limit = constraints.memory_limit_bytes(baseline.memory_bytes)
    return None if limit is None else limit - fixed


def _block_cache_report(measurements: Measurements, in_process: bool) -> dict | None:
    """The blocks whose outputs were reused, those left out and why; hits and misses are this process's
    (None when workers measured)."""
    cache = measurements.block_cache
    if cache is None:
        return None
    counts = {"hits": cache.hits, "misses": cache.misses} if in_process else {"hits": None, "misses": None}
    return {**cache.describe(), **counts}


def _journal(folder, header: dict) -> Journal:
    """The search's journal, recorded as kept in the output folder only now, when the first measurement is
    about to be made: a run refused earlier leaves no trace of itself."""
    folder.keep(JOURNAL_FILE)
    return Journal(folder.path / JOURNAL_FILE, header)


def _profile(model: nn.Module, task: Task, hierarchy=None):
    """Op counts per inference on the task's profile inputs, and (given a hierarchy) firing rates."""
    with SpikeRecorder(model) as spikes, OpCounter(model) as counter:
        inferences = run_inputs(model, task.profiling, reset_neuron_states)
    if hierarchy is not None:
        hierarchy.attach_firing_rates(spikes.records, spikes.fed_by)
    return counter.result(inferences)


def _latency(model: nn.Module, task: Task) -> float:
    return measure_latency(model, lambda: run_inputs(model, task.calibration[:1], reset_neuron_states), repeats=5)
