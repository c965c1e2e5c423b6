"""The first step of a search: the float model profiled. Its hierarchy of blocks and units, op counts and
firing rates, its metric on the validation data (the judge of every plan's quality loss), its memory,
energy and latency, which every plan is compared with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..analysis.energy import energy_per_inference, latency_per_inference, measure_latency
from ..analysis.hardware import HardwareProfile, load_hardware_profile
from ..analysis.hierarchy import Hierarchy, SpikeRecorder
from ..analysis.ops import OpCounter
from ..errors import QslmError
from ..model_inputs import run_inputs
from ..models.neuron_state import reset_neuron_states
from ..quant.memory import fixed_bytes, unit_bytes
from ..quant.units import Unit, find_units
from ..tasks.base import Task
from ..tasks.scores import Measured
from .confidence import QualityJudge
from .config import SearchConfig
from .measure import task_metric
from .methods import variants
from .objective import Baseline, Constraints


@dataclass
class FloatProfile:
    """What a search knows of the float model before it measures any plan."""
    hierarchy: Hierarchy
    all_units: dict[str, Unit]  # every unit, searched or kept float (``SearchConfig.ignore``)
    units: dict[str, Unit]  # the searched units
    hardware: HardwareProfile
    op_counts: object
    measured: Measured  # the float model's validation measurement
    judge: QualityJudge
    fixed_bytes: int  # bytes no plan changes: tensors that are not units, and units kept float
    baseline: Baseline

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.hierarchy.groups()


def unquantized_units(model: nn.Module, label: str) -> dict[str, Unit]:
    """The model's units, refused when some are already quantized: a search starts from a float model."""
    all_units = find_units(model)
    if any(u.packed is not None for u in all_units.values()):
        raise QslmError(f"{label} is already quantized; search starts from a float model")
    return all_units


def profile_float_model(model: nn.Module, task: Task, config: SearchConfig, constraints: Constraints,
                        hierarchy: Hierarchy, all_units: dict[str, Unit]) -> FloatProfile:
    hardware = load_hardware_profile(config.hardware)
    units = dict(hierarchy.units)
    op_counts = op_profile(model, task, hierarchy)
    measured = task_metric(task.evaluate, model, "evaluate", task.scores_are_nll)
    judge = QualityJudge(measured, task.higher_is_better, task.scores_are_nll, constraints.confidence, config.seed)
    fixed = fixed_bytes(model) + sum(unit_bytes(u, None) for n, u in all_units.items() if n not in units)
    baseline = Baseline(measured.metric, task.higher_is_better, fixed + sum(unit_bytes(u, None) for u in units.values()),
                        energy_per_inference(op_counts, None, hardware).total_pj,
                        latency_per_inference(op_counts, None, hardware))
    return FloatProfile(hierarchy, all_units, units, hardware, op_counts, measured, judge, fixed, baseline)


def op_profile(model: nn.Module, task: Task, hierarchy: Hierarchy | None = None):
    """Op counts per inference on the task's profile inputs, and (given a hierarchy) firing rates."""
    with SpikeRecorder(model) as spikes, OpCounter(model) as counter:
        inferences = run_inputs(model, task.profiling, reset_neuron_states)
    if hierarchy is not None:
        hierarchy.attach_firing_rates(spikes.records, spikes.fed_by)
    return counter.result(inferences)


def latency(model: nn.Module, task: Task) -> float:
    return measure_latency(model, lambda: run_inputs(model, task.calibration[:1], reset_neuron_states), repeats=5)


def largest_tensor_bytes(model: nn.Module, all_units: dict[str, Unit], units: dict[str, Unit],
                         config: SearchConfig, constraints: Constraints) -> int:
    """A bound above on the tensor bytes a search may write: every searched unit at the width and method
    that store the most (or float), the other units float, capped by the memory limit (a plan over it is
    never written)."""
    fp32 = fixed_bytes(model) + sum(unit_bytes(unit, None) for unit in all_units.values())
    largest = fp32 + sum(_largest_unit_bytes(unit, config) - unit_bytes(unit, None) for unit in units.values())
    limit = constraints.memory_limit_bytes(fp32)
    return largest if limit is None else min(largest, math.floor(limit))


def _largest_unit_bytes(unit: Unit, config: SearchConfig) -> int:
    """The most bytes ``unit`` may store in a plan of this search (scales can outweigh codes: 16 bits in
    groups of 2 store more than float)."""
    stored = [unit_bytes(unit, None)]
    for bits in config.bit_choices:
        for variant in variants(config.methods, config.grids, config.base_spec):
            try:
                stored.append(unit_bytes(unit, variant.spec(config.base_spec, bits)))
            except QslmError:
                continue  # a width the method does not take (codebook at 16 bits) is never chosen
    return max(stored)
