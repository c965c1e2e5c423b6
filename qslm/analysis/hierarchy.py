"""Model -> block -> module hierarchy of any PyTorch model, found from its module tree.

    from qslm.analysis.hierarchy import build_hierarchy, SpikeRecorder
    hierarchy = build_hierarchy(model)
    with SpikeRecorder(model) as spikes:
        run_calibration(model)
    hierarchy.attach_firing_rates(spikes.records)

Rules (no model-specific code):

* **Units** are weight tensors, as ``qslm.quant.units`` defines them: the weight of every Linear,
  Embedding or Conv, any bare matrix parameter of a custom module, a tied tensor once; a loaded
  quantized model's packed units keep the float model's names. A unit sits where its module sits.
* A **repeated container** is an ``nn.ModuleList`` or ``nn.Sequential`` with at least two children of
  the same class that hold units. Its unit-holding children are the **blocks** (``blocks.3``). The
  search stops descending at the outermost repeated container, so repeated containers nested inside
  a block (e.g. a list of heads) stay inside that block.
* Units inside a block are its **modules**; units outside every block (embedding, LM head,
  classifier, or everything when the model has no repeated container) are **top-level** units.
* **Neurons** are found while the model runs, by ``qslm.analysis.neurons`` (qslm's LIF, snnTorch,
  SpikingJelly and hand-written neurons: binary output, and a threshold or dense input turned into
  spikes). A neuron belongs to the block whose
  subtree holds it; a neuron that sits directly in a repeated container between blocks (as in
  ``Sequential(Linear, Leaky, Linear, Leaky)``) belongs to the block before it, whose output it spikes on.
  A block's firing rate is its neurons' spikes over their output elements (so larger layers weigh more).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..errors import QslmError
from ..quant.units import Unit, find_units, inside, join

# Neuron detection lives in .neurons; re-exported so this module's API stays.
from .neurons import THRESHOLD_ATTRIBUTES, SpikeRecord, SpikeRecorder, _first_tensor, is_binary, measure_firing_rates  # noqa: F401

REPEATED_CONTAINER_TYPES = (nn.ModuleList, nn.Sequential)
FP32_BYTES = 4


def _holds_units(path: str, units: dict[str, Unit]) -> bool:
    return any(inside(place, path) for u in units.values() for place in u.places)


def is_repeated_container(module: nn.Module, path: str = "", units: dict[str, Unit] | None = None) -> bool:
    """A ModuleList/Sequential with at least two children of one class that hold units."""
    if not isinstance(module, REPEATED_CONTAINER_TYPES):
        return False
    units = find_units(module) if units is None else units
    classes = Counter(type(child) for name, child in module.named_children() if _holds_units(join(path, name), units))
    return any(count >= 2 for count in classes.values())


@dataclass
class Block:
    name: str
    modules: list[str]
    parameters: int = 0  # of its units
    other_parameters: int = 0  # the rest of its subtree (norms, time-mix vectors, ...): kept in float
    neurons: dict[str, SpikeRecord] = field(default_factory=dict)

    @property
    def bytes_fp32(self) -> int:
        return FP32_BYTES * self.parameters

    @property
    def firing_rate(self) -> float | None:
        """Spikes over output elements of the block's neurons; None before rates are attached or without neurons."""
        elements = sum(r.elements for r in self.neurons.values())
        if not elements:
            return None
        return sum(r.spikes for r in self.neurons.values()) / elements

    def to_dict(self, units: dict[str, Unit]) -> dict:
        return {"name": self.name, "parameters": self.parameters, "bytes_fp32": self.bytes_fp32,
                "other_parameters": self.other_parameters, "firing_rate": self.firing_rate,
                "neurons": {name: r.rate for name, r in self.neurons.items()},
                "modules": [units[m].to_dict() for m in self.modules]}


@dataclass
class Hierarchy:
    model: str  # the model's class name (or a label the caller gave)
    blocks: list[Block]
    top_level: list[str]
    units: dict[str, Unit]  # every unit, in model order
    containers: list[str]  # the repeated containers the blocks came from
    parameters: int  # all parameters of the model
    neurons_outside_blocks: dict[str, SpikeRecord] = field(default_factory=dict)
    _container_children: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def all_units(self) -> list[str]:
        return list(self.units)

    @property
    def quantizable_parameters(self) -> int:
        return sum(u.numel for u in self.units.values())

    @property
    def bytes_fp32(self) -> int:
        return FP32_BYTES * self.parameters

    def block(self, name: str) -> Block:
        for block in self.blocks:
            if block.name == name:
                return block
        raise QslmError(f"no block {name!r}; blocks are {[b.name for b in self.blocks]}")

    def block_of(self, unit: str) -> str | None:
        """The block holding ``unit``, or None for a top-level unit."""
        if unit not in self.units:
            raise QslmError(f"{unit!r} is not a quantizable unit of {self.model}")
        for block in self.blocks:
            if unit in block.modules:
                return block.name
        return None

    def groups(self) -> dict[str, list[str]]:
        """Blocks and top-level units (each its own group), in model order: group name -> units."""
        groups: dict[str, list[str]] = {}
        owner = {m: b.name for b in self.blocks for m in b.modules}
        for unit in self.units:
            groups.setdefault(owner.get(unit, unit), []).append(unit)
        return groups

    def attach_firing_rates(self, records: Mapping[str, SpikeRecord | float],
                            fed_by: Mapping[str, str] | None = None) -> None:
        """Assign neuron records (or bare rates, weighted equally) to blocks; replaces earlier ones.
        ``fed_by`` (neuron -> the module whose output it spiked on, ``SpikeRecorder.fed_by``) places a
        neuron kept outside every block in the block that fed it."""
        for block in self.blocks:
            block.neurons = {}
        self.neurons_outside_blocks = {}
        for name, record in records.items():
            if not isinstance(record, SpikeRecord):
                record = SpikeRecord(spikes=float(record), elements=1)
            block = self._block_for_neuron(name)
            if block is None and fed_by and name in fed_by:
                block = next((b for b in self.blocks if inside(fed_by[name], b.name)), None)
            (block.neurons if block is not None else self.neurons_outside_blocks)[name] = record

    def _block_for_neuron(self, name: str) -> Block | None:
        for block in self.blocks:
            if inside(name, block.name):
                return block
        # A neuron sitting in a repeated container between blocks spikes on the previous block's output.
        parent, _, _ = name.rpartition(".")
        children = self._container_children.get(parent)
        if children is None or name not in children:
            return None
        block_names = {b.name: b for b in self.blocks}
        for sibling in reversed(children[: children.index(name)]):
            if sibling in block_names:
                return block_names[sibling]
        return None

    def firing_rates(self) -> dict[str, float | None]:
        return {block.name: block.firing_rate for block in self.blocks}

    def to_dict(self) -> dict:
        return {"model": self.model, "parameters": self.parameters, "bytes_fp32": self.bytes_fp32,
                "quantizable_parameters": self.quantizable_parameters, "containers": self.containers,
                "blocks": [b.to_dict(self.units) for b in self.blocks],
                "top_level": [self.units[u].to_dict() for u in self.top_level],
                "neurons_outside_blocks": {n: r.rate for n, r in self.neurons_outside_blocks.items()}}


def build_hierarchy(model: nn.Module, label: str | None = None, ignore=()) -> Hierarchy:
    """The block/module tree of ``model`` (see the module docstring for the rules); units matching an
    ``ignore`` glob are left out (they stay float)."""
    label = label or type(model).__name__
    all_units = find_units(model)
    units = find_units(model, ignore)
    if not units:
        reason = (f"every one of its {len(all_units)} units matches the ignore patterns {list(ignore)}" if all_units
                  else "it has no floating weight of two or more dimensions (Linear, Embedding, Conv, or a "
                       "bare matrix parameter)")
        raise QslmError(f"the profiler found no quantizable units in {label}: {reason}")

    block_names: list[str] = []
    containers: list[str] = []
    container_children: dict[str, list[str]] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        if is_repeated_container(module, prefix, units):
            containers.append(prefix)
            container_children[prefix] = [join(prefix, n) for n, _ in module.named_children()]
            block_names.extend(join(prefix, n) for n, _ in module.named_children()
                               if _holds_units(join(prefix, n), units))
            return
        for name, child in module.named_children():
            visit(child, join(prefix, name))

    visit(model, "")
    blocks = [Block(name, [u for u, unit in units.items() if inside(unit.module, name)]) for name in block_names]
    blocks = [b for b in blocks if b.modules]  # a block holding only aliases of other units' tensors
    in_blocks = {m for b in blocks for m in b.modules}
    top_level = [u for u in units if u not in in_blocks]
    unit_tensors = {id(t) for u in all_units.values() for t in _unit_tensors(model, u)}
    modules = dict(model.named_modules())

    def other_parameters(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if id(p) not in unit_tensors)

    for block in blocks:
        block.parameters = sum(units[m].numel for m in block.modules)
        block.other_parameters = other_parameters(modules[block.name])
    # every tensor once (parameters() skips shared ones); units by their weights, packed or float
    total = sum(u.numel for u in all_units.values()) + other_parameters(model)
    return Hierarchy(label, blocks, top_level, units, containers, total, _container_children=container_children)


def _unit_tensors(model: nn.Module, unit: Unit) -> list[torch.Tensor]:
    return [] if unit.packed is not None else [getattr(model.get_submodule(unit.module), unit.attribute)]
