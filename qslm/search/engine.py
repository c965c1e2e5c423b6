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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..analysis.hierarchy import build_hierarchy
from ..analysis.sensitivity import default_cache_dir
from ..diskspace import native_write, require_free_space
from ..errors import QslmError
from ..export.targets import export_target
from ..outputs import OutputFolder, check_writable_folder
from ..quant.plan import QuantPlan
from ..report import search_report, write_report
from ..tasks.base import Task
from .config import SearchConfig, config_from
from .executors import ExecutorChoice
from .objective import Constraints
from .profiling import largest_tensor_bytes, latency, profile_float_model, unquantized_units
from .selection import confirmed_choice
from .stack import JOURNAL_FILE, build_measurements
from .strategies import StrategyContext, check_strategy, run_strategy
from .verify import REPORT_BYTES, certifiable, reported, verify_and_export

__all__ = ["JOURNAL_FILE", "ModelSource", "SearchResult", "check_quality_limit", "search"]


@dataclass
class SearchResult:
    out: Path
    report: dict
    plan: QuantPlan | None
    model: nn.Module | None = None  # the packed model, loaded back from the written files


@dataclass(frozen=True)
class ModelSource:
    """Where the searched model came from, when a wrapper loaded it (a model folder): how the user named it
    (``label``, for the report), folders the output must not be inside (``protect``), files written beside
    the model (name -> writer of that file into a folder, e.g. the folder's tokenizer) and ``notes``
    recorded in the report as given."""
    label: str | None = None
    protect: tuple[str | os.PathLike, ...] = ()
    companion_files: Mapping[str, Callable[[Path], None]] = field(default_factory=dict)
    notes: Mapping[str, object] = field(default_factory=dict)


def check_quality_limit(task_name: str, higher_is_better: bool, constraints: Constraints) -> None:
    """The quality limit that fits the metric's direction: max_drop or max_relative_increase."""
    if higher_is_better and constraints.max_relative_increase is not None:
        raise QslmError(f"the metric of task {task_name!r} is higher-is-better: limit its drop with max_drop "
                        "(absolute, in the metric's units), not max_relative_increase")
    if not higher_is_better and constraints.max_drop is not None:
        raise QslmError(f"the metric of task {task_name!r} is lower-is-better: limit it with "
                        "max_relative_increase (e.g. 0.03 for +3%), not max_drop")


def search(model: nn.Module, task: Task, out: str | os.PathLike, constraints: Constraints | None = None,
           config: SearchConfig | None = None, *, device: str | torch.device | None = None, progress: bool = True,
           cache_dir: str | os.PathLike | None = None, overwrite: bool = False, workers: int = 1,
           ray_address: str | None = None, source: ModelSource | None = None, **settings) -> SearchResult:
    """Search a mixed-precision plan for ``model`` on ``task`` and write the packed model and report to
    ``out`` (a search output folder, see ``qslm.outputs``). The settings are ``config`` or
    ``SearchConfig``'s fields as keywords (one place: both is an error). ``cache_dir`` keeps sensitivity
    measurements across runs (default ``$QSLM_CACHE_DIR`` or ``~/.cache/qslm``). ``workers`` > 1
    measures on that many Ray workers on this machine, ``ray_address`` on a Ray cluster (``pip install
    'qslm[ray]'``); the results are those of one process. ``source`` describes a model a wrapper loaded
    from a folder (``ModelSource``)."""
    from ..device import resolve_device

    started = time.perf_counter()
    constraints, config = constraints or Constraints(), config_from(config, settings)
    source = source or ModelSource()
    if not isinstance(task, Task):
        raise QslmError(f"task must be a qslm.Task (or a built-in task name), got {type(task).__name__}")
    check_quality_limit(task.name, task.higher_is_better, constraints)
    check_strategy(config.strategy)
    export_target(config.export_target)
    executors = ExecutorChoice(workers, ray_address)
    with executors:
        executors.connect()  # a cluster is joined before the folder is claimed: a wrong address costs nothing
        cache_dir = check_writable_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache folder")
        with OutputFolder.claim(out, "search", overwrite=overwrite, protect=source.protect) as folder:
            run = _SearchRun(model.to(resolve_device(device)).eval(), task, constraints, config, source,
                             folder, cache_dir, progress, executors, started)
            return run.run()


@dataclass
class _SearchRun:
    model: nn.Module
    task: Task
    constraints: Constraints
    config: SearchConfig
    source: ModelSource
    folder: OutputFolder
    cache_dir: Path
    progress: bool
    executors: ExecutorChoice
    started: float
    seconds: dict = field(default_factory=dict)

    def run(self) -> SearchResult:
        """Profile the float model -> build the measurements -> run the strategy -> verify and export the
        chosen plan -> report; the run's files are committed together."""
        torch.manual_seed(self.config.seed)
        label = self.source.label or type(self.model).__name__
        profile, companions = self._timed("profile", lambda: self._profile(label))
        stack = self._timed("sensitivity", lambda: build_measurements(
            self.model, self.task, self.config, self.constraints, profile, self.executors, self.folder,
            self.cache_dir, self.progress))
        if self.config.sensitivity_table == "full":
            self._timed("sensitivity", stack.measure_full_table, add=True)
        problem, selection = self._search(stack)
        started = time.perf_counter()
        float_reported, float_latency = reported(self.task, self.model), latency(self.model, self.task)
        quality = {**profile.judge.describe(), "limit": self.constraints.quality_limit(self.task.higher_is_better),
                   "selection": selection.to_dict()}
        verified = None
        if selection.chosen is None:
            quality["certifiable"] = certifiable(problem, profile.judge, quality["limit"])
        else:
            verified = verify_and_export(self.model, self.task, stack, selection.chosen,
                                         export_target(self.config.export_target), self.folder.staging(),
                                         self.folder.path, float_reported, quality)
        self.seconds["verify"] = time.perf_counter() - started
        self.seconds["total"] = time.perf_counter() - self.started
        report = search_report(
            label=label, task=self.task, constraints=self.constraints, config=self.config, notes=self.source.notes,
            profile=profile, stack=stack, problem=problem, selection=selection, quality=quality,
            float_reported=float_reported, float_latency=float_latency, verified=verified,
            workers_notes=self.executors.notes, seconds=self.seconds)
        model_files = {} if verified is None else {**verified.files, **companions}
        self.folder.commit(model_files, last=write_report(report, self.folder.staging()))
        return SearchResult(self.folder.path, report, None if verified is None else verified.plan,
                            None if verified is None else verified.packed)

    def _timed(self, step: str, work, add: bool = False):
        started = time.perf_counter()
        value = work()
        self.seconds[step] = self.seconds.get(step, 0.0) * add + time.perf_counter() - started
        return value

    def _profile(self, label: str):
        """The float model profiled, after the room for the run's files is checked: the companions are
        staged now (their bytes then on the disk already), the rest bounded from above."""
        all_units = unquantized_units(self.model, label)
        hierarchy = build_hierarchy(self.model, label, self.config.ignore)
        staging = self.folder.staging()
        companions = {}
        for name, write in self.source.companion_files.items():
            with native_write(staging / name):
                write(staging / name)
            companions[name] = staging / name
        largest = largest_tensor_bytes(self.model, all_units, dict(hierarchy.units), self.config,
                                       self.constraints)
        require_free_space(self.folder.path, largest + export_target(self.config.export_target).overhead_bytes(
            self.model) + REPORT_BYTES, "the largest model and report this search may write")
        return profile_float_model(self.model, self.task, self.config, self.constraints, hierarchy,
                                   all_units), companions

    def _search(self, stack):
        """The strategy's search, then the choice confirmed on the held-out part of the validation data.
        Sensitivities the strategy asked for count as sensitivity time, not search time."""
        started, measured_before = time.perf_counter(), stack.damages.seconds
        problem = stack.problem(self.constraints)
        run_strategy(self.config.strategy, problem,
                     StrategyContext(self.config.seed, self.config.budget, stack.hawq_omega))
        selection = confirmed_choice(problem)
        measured_in_search = stack.damages.seconds - measured_before
        self.seconds["sensitivity"] += measured_in_search
        self.seconds["search"] = time.perf_counter() - started - measured_in_search
        return problem, selection
