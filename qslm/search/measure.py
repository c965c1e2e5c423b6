"""What a search measures on the model: sensitivity of units and groups to each bit-width (cached on disk),
and candidate plans' metric, each under fake quantization so nothing is copied.

``Measurements`` computes one measurement on one model replica, uncached; an executor
(``qslm.search.executors``) runs it in this process or on workers; ``SensitivityTable`` decides what is
measured, reads and writes the cache, and assembles the table in a fixed order, so the result never
depends on where or in which order the measurements ran.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..analysis.hierarchy import Hierarchy
from ..analysis.local_sensitivity import BlockLocalSensitivity
from ..analysis.sensitivity import OutputReference, SensitivityCache
from ..model_inputs import inputs_digest
from ..models.neuron_state import reset_neuron_states
from ..quant.apply import WeightCache, fake_quantized
from ..quant.context import QuantContext
from ..quant.methods import Needs, method_named
from ..quant.plan import QuantPlan
from ..quant.quantizer import QuantSpec
from ..tasks.base import Task
from ..tasks.scores import Measured, read_measurement
from .block_cache import BlockOutputCache
from .config import SearchConfig
from .futures import Executor
from .methods import SpecOf


def task_metric(function: Callable[[nn.Module], object], model: nn.Module, what: str,
                scores_are_nll: bool = False, allow_non_finite: bool = False) -> Measured:
    """``function(model)`` without gradients, read as the task's metric and its per-example scores
    (``qslm.tasks.scores``); ``what`` names the call in errors (``evaluate``, ``test``)."""
    with torch.no_grad():
        value = function(model)
    return read_measurement(value, f"Task.{what}", scores_are_nll, allow_non_finite)


def block_routes(hierarchy: Hierarchy, method: str) -> dict[str, str]:
    """unit -> the block it is measured in when ``method`` is local (empty for exact)."""
    if method != "local":
        return {}
    return {unit: block.name for block in hierarchy.blocks for unit in block.modules}


class Measurements:
    """The measurements of a search on one model replica, uncached: ``damage_of(specs)`` (the sensitivity
    of quantizing only those units with those specs) and ``metric_of(plan)`` (the task's metric of a plan).

    Each starts from the same random state (``config.seed``) and from reset neuron states, so its value
    depends only on its arguments, never on which measurements ran before it on this replica: a
    replica on a worker gives the numbers this process would."""

    def __init__(self, model: nn.Module, task: Task, hierarchy: Hierarchy, config: SearchConfig, *,
                 reference: OutputReference | None = None, weight_cache: WeightCache | None = None,
                 context: QuantContext | None = None):
        self.model, self.task, self.hierarchy, self.seed = model, task, hierarchy, config.seed
        self.config, self.base_spec = config, config.base_spec
        self.context = context  # calibration Hessians, when a method needs them
        self.reference = reference or OutputReference(model, task.calibration, task.damage_measure, task.output,
                                                      reset=reset_neuron_states)
        self.weight_cache = weight_cache if weight_cache is not None else WeightCache()
        self.routes = block_routes(hierarchy, config.sensitivity_method)
        self._local: BlockLocalSensitivity | None = None
        # built on the float model, before any measurement applies a plan
        self.block_cache = (BlockOutputCache.build(model, hierarchy, task.calibration[0], reset_neuron_states,
                                                   config.block_cache_mb * 2 ** 20)
                            if config.block_cache_mb else None)

    def block_holding(self, members: tuple[str, ...]) -> str | None:
        """The block whose local measurement covers ``members``, or None: measured on the whole model."""
        owners = {self.routes.get(u) for u in members}
        return owners.pop() if len(owners) == 1 and None not in owners else None

    def _fresh_state(self) -> None:
        torch.manual_seed(self.seed)
        reset_neuron_states(self.model)

    def damage_of(self, specs: dict[str, QuantSpec]) -> dict:
        """The damage of quantizing exactly these units with these specs, everything else float."""
        block = self.block_holding(tuple(specs))
        if block is not None and self._local is None:  # built on first use: one float pass with gradients
            self._local = BlockLocalSensitivity.for_hierarchy(self.model, self.hierarchy, self.reference)
        self._fresh_state()
        with fake_quantized(self.model, QuantPlan(dict(specs)), self.weight_cache, self.context):
            if block is not None:
                return self._local.damage(block)
            with self._reusing_blocks():
                return self.reference.damage()

    def metric_of(self, plan: QuantPlan) -> tuple[Measured, float]:
        """(the metric of ``plan``, seconds it took)."""
        self._fresh_state()
        with fake_quantized(self.model, plan, self.weight_cache, self.context), \
                self._reusing_blocks(store_first=True):
            return timed(lambda: task_metric(self.task.evaluate, self.model, "evaluate", self.task.scores_are_nll))

    def _reusing_blocks(self, store_first: bool = False):
        return self.block_cache.serving(store_first) if self.block_cache is not None else nullcontext()


class Damages:
    """Damage of quantizing some units with given specs, everything else float, measured exactly (whole
    model) or block-locally by ``executor``, and cached in ``cache`` across runs. Only this object writes
    the cache, and only with finished measurements."""

    def __init__(self, measurements: Measurements, cache: SensitivityCache, model_digest: str,
                 executor: Executor):
        self.measurements, self.cache, self.digest, self.executor = measurements, cache, model_digest, executor
        self.calibration_digest = inputs_digest(measurements.reference.inputs) + f":{measurements.reference.measure}"
        # what gptq and codebook fitted the weights to, for the keys of their measurements
        self.quantizer_digest = (inputs_digest(measurements.task.quantizer_inputs)
                                 if measurements.context is not None else None)
        self.seconds = 0.0  # spent in measure_specs: measuring, or waiting for workers to

    def _key_of(self, specs: dict[str, QuantSpec]) -> tuple[str, str]:
        members = tuple(specs)
        block = self.measurements.block_holding(members)
        described = {spec.describe() for spec in specs.values()}
        spec_key = described.pop() if len(described) == 1 else "|".join(
            sorted(f"{u}={s.describe()}" for u, s in specs.items()))
        calibration = self.calibration_digest + (":local" if block else "")
        if self.quantizer_digest is not None and any(method_named(spec.method).uses is not Needs.WEIGHT
                                                      for spec in specs.values()):
            calibration += f":fitted:{self.quantizer_digest}"
        key = SensitivityCache.key(self.digest, calibration, members, spec_key)
        return key, "local" if block is not None else "exact"  # units outside blocks: measured exactly

    def measure_specs(self, jobs: list[dict[str, QuantSpec]], bar: tqdm | None = None) -> list[dict]:
        """The damage of each job (these units with these specs, everything else float), in order; those not
        cached are submitted together and cached as they finish (``bar`` advances as each finishes)."""
        started = time.perf_counter()
        keyed = [self._key_of(specs) for specs in jobs]
        values = [self.cache.get(key) for key, _ in keyed]
        missing = [i for i, value in enumerate(values) if value is None]
        if bar is not None:
            bar.update(len(jobs) - len(missing))
        pending = [self.executor.damage(jobs[i]) for i in missing]
        for position in self.executor.completed(pending):
            index = missing[position]
            values[index] = pending[position].result()
            self.cache.put(keyed[index][0], values[index])
            if bar is not None:
                bar.update(1)
        self.seconds += time.perf_counter() - started
        return [{**value, "method": method} for value, (_, method) in zip(values, keyed)]


class SensitivityTable:
    """Damage of quantizing ``members`` (one unit, or a whole group) to ``bits``, everything else float,
    each unit with its spec at that width (``spec_of``: the search's method choice, which may measure
    first), and every (members, bits) asked for, for the report."""

    def __init__(self, damages: Damages, spec_of: SpecOf):
        self.damages, self.spec_of = damages, spec_of
        self.asked: dict[tuple[tuple[str, ...], int], dict] = {}  # every (members, bits) asked for, in order

    def measure(self, members: tuple[str, ...], bits: int) -> dict:
        return self.measure_all([(members, bits)])[0]

    def measure_all(self, jobs: list[tuple[tuple[str, ...], int]], bar: tqdm | None = None) -> list[dict]:
        """Each (members, bits) of ``jobs``, in order, as ``Damages.measure_specs``."""
        specs = [{u: self.spec_of(u, bits) for u in members} for members, bits in jobs]  # may choose methods first
        results = self.damages.measure_specs(specs, bar)
        for job, result in zip(jobs, results):
            self.asked.setdefault((tuple(job[0]), job[1]), result)
        return results

    def measure_together(self, jobs: list[tuple[tuple[str, ...], int]], progress: bool) -> None:
        """Have ``jobs`` measured now, together (in parallel on workers), with a progress bar."""
        with tqdm(total=len(jobs), desc="sensitivity", disable=not progress, leave=False) as bar:
            self.measure_all(jobs, bar)

    def measure_table(self, groups: dict[str, list[str]], units: list[str], bit_choices: list[int],
                      progress: bool) -> None:
        """Every group and every unit alone at every bit-width, measured now."""
        self.measure_together([(members, bits) for members in _scopes(groups, units) for bits in bit_choices],
                              progress)

    def asked_table(self, groups: dict[str, list[str]], units: list[str], bit_choices: list[int]
                    ) -> dict[str, dict[str, dict]]:
        """What was asked for so far, as {name: {str(bits): measurement}}: groups and units in model order,
        widths ascending, scopes and widths never asked for left out."""
        table: dict[str, dict[str, dict]] = {}
        for members in _scopes(groups, units):
            row = {str(bits): self.asked[(members, bits)] for bits in bit_choices if (members, bits) in self.asked}
            if row:
                table[next((g for g, m in groups.items() if tuple(m) == members), members[0])] = row
        return table


def _scopes(groups: dict[str, list[str]], units: list[str]) -> list[tuple[str, ...]]:
    """Every group's members, then every unit alone (a group of one unit once)."""
    return list(dict.fromkeys([tuple(m) for m in groups.values()] + [(u,) for u in units]))


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def cache_file(cache_dir: Path, model_digest: str) -> Path:
    return Path(cache_dir) / f"sensitivity-{model_digest[:16]}.jsonl"
