"""Spiking neurons of any PyTorch model, found from how its modules behave, and their state.

    with SpikeRecorder(model) as spikes:
        run_calibration(model)
    spikes.records  # neuron name -> SpikeRecord
    spikes.rates    # neuron name -> firing rate (spikes per output element)

Detection is generic (no import of any SNN library), so qslm's ``LIF``, snnTorch (``Leaky``, ``Synaptic``,
``RLeaky``, ...), SpikingJelly (``LIFNode``, ``IFNode``, ``ParametricLIFNode``, ...) and hand-written
neurons are found by one rule. While the model runs, a module other than a quantizable unit is a neuron
when its output (the first tensor of a tuple, as snnTorch returns ``(spikes, membrane)``) was binary
on every call and it either has a threshold attribute (``threshold``, ``v_threshold``, ...; a float, a
buffer or a learnable parameter) or turned a non-binary input into spikes. qslm's ``LIF`` always is.
Non-leaf modules count too (a SpikingJelly node holds its surrogate function as a child), so nesting
is resolved afterwards:

* a module without a threshold inside a neuron with one is that neuron's spike function, not a neuron;
* any other module holding a neuron (a wrapper, a block returning spikes) is not a neuron.

``reset_neuron_states`` puts stateful neurons back to their initial state, so calibration forwards
are independent of each other (snnTorch and SpikingJelly neurons keep their membrane between calls).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..models.neurons import LIF
from ..quant.units import WEIGHT_HOLDERS

THRESHOLD_ATTRIBUTES = ("threshold", "v_threshold", "v_th", "vth", "thresh")


@dataclass
class SpikeRecord:
    """Spikes emitted and output elements seen by one neuron module."""
    spikes: float = 0.0
    elements: int = 0

    @property
    def rate(self) -> float:
        return self.spikes / self.elements if self.elements else 0.0


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    return None


def is_binary(x: torch.Tensor) -> bool:
    """All values in {0, 1} (spikes). Integer tensors (token ids) are never spikes."""
    if not x.is_floating_point() or x.numel() == 0:
        return False
    return bool(((x == 0) | (x == 1)).all())


def has_threshold(module: nn.Module) -> bool:
    return isinstance(module, LIF) or any(hasattr(module, a) for a in THRESHOLD_ATTRIBUTES)


def _is_unit(module: nn.Module) -> bool:
    """A layer whose job is its weight (Linear, Embedding, Conv, packed or not): never a neuron."""
    return isinstance(module, WEIGHT_HOLDERS)


def _below(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + ".")


@dataclass
class _Behaviour:
    """What one candidate module did over all calls seen."""
    spikes: float = 0.0
    elements: int = 0
    binary: bool = True
    input_dense: bool = False


def _neurons_among(spiking: dict[str, nn.Module]) -> list[str]:
    """The neurons among modules that spiked, with spike functions and wrappers removed (model order)."""
    with_threshold = [name for name, module in spiking.items() if has_threshold(module)]
    not_spike_functions = [name for name in spiking if name in with_threshold
                           or not any(_below(name, owner) for owner in with_threshold)]
    return [name for name in not_spike_functions
            if not any(_below(inner, name) for inner in not_spike_functions)]


class SpikeRecorder:
    """Context manager: find the neurons of ``model`` while it runs and count their spikes.

    ``records`` (after the block) maps neuron name -> SpikeRecord, in model order. Candidates are all
    named modules except quantizable units; see the module docstring for the rule.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.records: dict[str, SpikeRecord] = {}
        # neuron -> the module whose output it was fed (data flow, for neurons kept apart from their layer,
        # e.g. a list of Linear layers and a separate list of neurons)
        self.fed_by: dict[str, str] = {}
        self._producers: dict[int, tuple[weakref.ref, str]] = {}
        self._candidates = {name: m for name, m in model.named_modules() if name and not _is_unit(m)}
        self._behaviour: dict[str, _Behaviour] = {}
        self._handles: list = []

    def __enter__(self) -> "SpikeRecorder":
        self._behaviour = {name: _Behaviour() for name in self._candidates}
        self.fed_by, self._producers = {}, {}
        for name, module in self.model.named_modules():
            if name:
                self._handles.append(module.register_forward_hook(self._producer_hook(name)))
        for name, module in self._candidates.items():
            # with_kwargs: a neuron called as neuron(input_=x) still shows its input
            self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def _producer_hook(self, name: str) -> Callable:
        def hook(module, args, output):
            out = _first_tensor(output)
            if out is not None:
                known = self._producers.get(id(out))
                if known is None or known[0]() is not out:  # the innermost module that made it keeps it
                    self._producers[id(out)] = (weakref.ref(out), name)
        return hook

    def _hook(self, name: str) -> Callable:
        seen = self._behaviour[name]
        known = isinstance(self._candidates[name], LIF)

        def hook(module, args, kwargs, output):
            if not seen.binary:
                return  # ruled out on an earlier call: skip the check on large block outputs
            out = _first_tensor(output)
            if out is None or not (known or is_binary(out.detach())):
                seen.binary = False
                return
            seen.spikes += float(out.detach().sum())
            seen.elements += out.numel()
            x = _first_tensor(list(args) + list(kwargs.values()))
            # once a dense input is seen, it stays seen: spare the check on every later call
            if not seen.input_dense and x is not None and x.is_floating_point() and not is_binary(x.detach()):
                seen.input_dense = True
            producer = self._producers.get(id(x)) if x is not None else None
            if producer is not None and producer[0]() is x and producer[1] != name:
                self.fed_by.setdefault(name, producer[1])
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        spiking = {name: module for name, module in self._candidates.items()
                   if self._spiked(name, module)}
        self.records = {name: SpikeRecord(self._behaviour[name].spikes, self._behaviour[name].elements)
                        for name in _neurons_among(spiking)}
        self.fed_by = {name: producer for name, producer in self.fed_by.items() if name in self.records}
        self._producers = {}

    @property
    def rates(self) -> dict[str, float]:
        """Each neuron's firing rate over everything it saw in the block, in model order."""
        return {name: record.rate for name, record in self.records.items()}

    def _spiked(self, name: str, module: nn.Module) -> bool:
        seen = self._behaviour[name]
        if not seen.elements:
            return False
        return isinstance(module, LIF) or (seen.binary and (seen.input_dense or has_threshold(module)))


def measure_firing_rates(model: nn.Module, run_fn: Callable[[], object]) -> dict[str, SpikeRecord]:
    """Run ``run_fn()`` (which runs ``model`` on calibration data) and return each neuron's spike record."""
    with SpikeRecorder(model) as recorder:
        run_fn()
    return recorder.records
