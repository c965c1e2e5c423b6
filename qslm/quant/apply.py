"""Fake quantization in place, cheap enough to call thousands of times from a search.

``apply_plan(model, plan, cache)`` makes ``model`` compute exactly as ``plan`` quantized it: each
quantized unit's weight storage is swapped for its dequantized values (the float original is kept
aside, nothing is deep-copied), LIF neurons named by the plan get a fixed-point state quantizer, and
every unit or neuron the previous plan touched but this one does not is restored. Only units whose
spec changed are touched, and a ``WeightCache`` keyed by (unit name, spec) makes switching back to a
spec seen before a dictionary look-up.

    cache = WeightCache()
    with fake_quantized(model, plan, cache):
        logits = model(ids)
    # float weights are back here

Each unit is quantized by its spec's method (``qslm.quant.methods``). Methods that need calibration
Hessians (gptq) or use them when present (codebook, as k-means weights) read them from a
``QuantContext`` built from ``qslm.quant.unit_inputs.record_hessians``::

    context = QuantContext(record_hessians(model, batches))
    apply_plan(model, plan, cache, context=context)

Methods that need nothing (rtn) never look at it, so their callers need not pass one. A unit whose method
needs a Hessian it lacks (an embedding, a convolution, a unit never called on float inputs) is an error
naming it, never a silent fall-back to another method. ``apply_plan`` re-quantizes a unit only when its
spec changes: after recording new Hessians, start from a restored model (and a fresh or cleared cache is
not needed: cache entries remember which Hessian they came from).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..errors import QslmError
from ..models.neurons import lif_modules
from .methods import Needs, Quantized, QuantMethod, method_named, registered_methods
from .plan import QuantPlan
from .quantizer import QuantSpec
from .neuron_spec import NeuronSpec
from .context import QuantContext
from .units import quantizable_units, unit_tensor


def quantize_unit(name: str, weight: torch.Tensor, spec: QuantSpec, context: QuantContext | None = None
                  ) -> Quantized:
    """Quantize unit ``name``'s float ``weight`` by its spec's method (the one entry point that fake
    quantization and export share, so both store the same values)."""
    method = method_named(spec.method)
    problem = _missing(name, spec, method, context)
    if problem is not None:
        raise problem
    return method.quantize(weight, spec, context, name)


def _missing(name: str, spec: QuantSpec, method: QuantMethod, context: QuantContext | None) -> QslmError | None:
    """The error for a unit whose method needs what ``context`` lacks (None: it has what it needs)."""
    if method.needs is Needs.WEIGHT or (method.needs is Needs.HESSIANS and context is not None
                                        and context.hessian(name) is not None):
        return None
    others = " or ".join(m.name for m in registered_methods() if m.needs is Needs.WEIGHT)
    if method.needs is Needs.GRADIENTS:
        return QslmError(f"unit {name!r} ({spec.describe()}) needs {Needs.GRADIENTS.value} for {spec.method}, "
                         f"which a QuantContext does not carry yet; use {others} for this unit")
    why = ("no QuantContext was given" if context is None
           else "no calibration inputs were recorded for it (an embedding, a convolution, or a unit never "
                "applied to float inputs through F.linear or a matmul)")
    return QslmError(f"unit {name!r} ({spec.describe()}) needs its calibration Hessian for {spec.method}, but "
                     f"{why}; record Hessians with qslm.quant.unit_inputs.record_hessians, or use {others} "
                     "for this unit")


def check_context(plan: QuantPlan, context: QuantContext | None) -> None:
    """Refuse, before anything is changed or written, a plan whose units lack what their methods need."""
    for name, spec in plan.quantized.items():
        problem = _missing(name, spec, method_named(spec.method), context)
        if problem is not None:
            raise problem


class WeightCache:
    """Dequantized weights keyed by (unit name, spec), for one model's float weights.

    An entry remembers which float tensor it came from (storage pointer and shape) and is recomputed if
    asked for with another one, so a cache mistakenly shared between models is slow, never wrong.
    ``max_bytes`` bounds the memory held (least recently used entries go first); ``quantize_calls``
    counts the quantizations actually run."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self.quantize_calls = 0
        self.hits = 0
        self._entries: OrderedDict[tuple[str, QuantSpec], tuple[tuple, torch.Tensor]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def dequantized(self, name: str, weight: torch.Tensor, spec: QuantSpec, context: QuantContext | None = None
                    ) -> torch.Tensor:
        key = (name, spec)
        source = (weight.data_ptr(), tuple(weight.shape), weight.dtype, weight.device, _hessian_identity(name, spec,
                                                                                                   context))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == source:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        # a method may work on another device than the weight's (gptq on the CPU, beside its Hessian)
        values = quantize_unit(name, weight, spec, context).dequantize().to(device=weight.device, dtype=weight.dtype)
        self.quantize_calls += 1
        if entry is not None:
            self._bytes -= entry[1].nbytes
        self._entries[key] = (source, values)
        self._entries.move_to_end(key)
        self._bytes += values.nbytes
        while self.max_bytes is not None and self._bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
        return values

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


def _hessian_identity(name: str, spec: QuantSpec, context: QuantContext | None) -> tuple:
    """What a cached entry of a method that reads the context (gptq, codebook) depends on besides the
    weight: the Hessian object and options."""
    if method_named(spec.method).uses is Needs.WEIGHT or context is None:
        return ()
    hessian = context.hessian(name)
    return (None if hessian is None else id(hessian.xtx), context.gptq, context.learned)


@dataclass
class _Applied:
    """What apply_plan changed on one model: float weights set aside, specs in force, neuron quantizers
    replaced (with the value to put back)."""
    float_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    specs: dict[str, QuantSpec] = field(default_factory=dict)
    neuron_specs: dict[str, NeuronSpec] = field(default_factory=dict)
    previous_quantizers: dict[str, object] = field(default_factory=dict)


_APPLIED: "weakref.WeakKeyDictionary[nn.Module, _Applied]" = weakref.WeakKeyDictionary()


def applied_plan(model: nn.Module) -> QuantPlan | None:
    """The plan ``model`` is currently fake-quantized with (None when it computes in float)."""
    state = _APPLIED.get(model)
    if state is None or not (state.specs or state.neuron_specs):
        return None
    return QuantPlan(dict(state.specs), dict(state.neuron_specs))


def float_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The float weight of unit ``name``, whether or not the model is fake-quantized now."""
    state = _APPLIED.get(model)
    if state is not None and name in state.float_weights:
        return state.float_weights[name]
    units = quantizable_units(model)
    if name not in units:
        raise QslmError(f"{name!r} is not a quantizable unit of the model")
    return unit_tensor(model, units[name]).data


@torch.no_grad()
def apply_plan(model: nn.Module, plan: QuantPlan, cache: WeightCache | None = None, validate: bool = True,
               context: QuantContext | None = None) -> None:
    """Fake-quantize ``model`` in place so it computes as ``plan`` says (see the module docstring).
    Units and neurons not in ``plan`` compute in float, whatever an earlier call did. ``context``
    carries the calibration Hessians gptq units need."""
    if validate:
        plan.validate(model)
    check_context(plan, context)
    state = _APPLIED.setdefault(model, _Applied())
    wanted = plan.quantized
    units = quantizable_units(model) if (wanted or state.specs) else {}
    for name in list(state.specs) + [n for n in wanted if n not in state.specs]:
        spec = wanted.get(name)
        if state.specs.get(name) == spec:
            continue
        weight = unit_tensor(model, units[name])
        original = state.float_weights.get(name, weight.data)
        if spec is None:
            weight.data = original
            del state.float_weights[name], state.specs[name]
            continue
        if cache is not None:
            weight.data = cache.dequantized(name, original, spec, context)
        else:
            weight.data = quantize_unit(name, original, spec, context).dequantize().to(original.dtype)
        state.float_weights[name] = original
        state.specs[name] = spec
    if plan.neurons or state.neuron_specs:
        _apply_neurons(model, plan, state)
    if not state.specs and not state.neuron_specs:
        del _APPLIED[model]


def _apply_neurons(model: nn.Module, plan: QuantPlan, state: _Applied) -> None:
    neurons = lif_modules(model)
    for name in list(state.neuron_specs) + [n for n in plan.neurons if n not in state.neuron_specs]:
        spec = plan.neurons.get(name)
        if state.neuron_specs.get(name) == spec:
            continue
        neuron = neurons[name]
        if name not in state.previous_quantizers:
            state.previous_quantizers[name] = neuron.state_quantizer
        if spec is None:
            neuron.state_quantizer = state.previous_quantizers.pop(name)
            del state.neuron_specs[name]
        else:
            neuron.state_quantizer = spec.quantizer(neuron.v_threshold)
            state.neuron_specs[name] = spec


def restore(model: nn.Module) -> None:
    """Put every float weight and neuron quantizer back as it was before any ``apply_plan``."""
    apply_plan(model, QuantPlan(), validate=False)


@contextmanager
def fake_quantized(model: nn.Module, plan: QuantPlan, cache: WeightCache | None = None,
                   context: QuantContext | None = None) -> Iterator[nn.Module]:
    """``model`` fake-quantized by ``plan`` inside the block; on exit it computes as it did on entry."""
    previous = applied_plan(model)
    apply_plan(model, plan, cache, context=context)
    try:
        yield model
    finally:
        apply_plan(model, previous or QuantPlan(), cache, validate=False, context=context)

