"""Bit-packed storage of quantized units: packed modules, export and load.

A quantized unit ``NAME`` (its weight's attribute ``weight``) is stored as the tensors its method's
``stored_layout`` names, each ``NAME.weight_<suffix>`` (see ``qslm.quant.methods``; codes are packed
by ``qslm.quant.bits``):

* rtn and gptq: ``NAME.weight_codes``, ``NAME.weight_scale`` (+ ``NAME.weight_scale_exponent``)
  (+ ``NAME.weight_zero_point``), see ``qslm.quant.methods.grid``;
* codebook: ``NAME.weight_codes`` and ``NAME.weight_codebook``, see ``qslm.quant.methods.codebook``;
* ``NAME.bias``: float32, as in the float model.

Everything else in the state dict is stored as float32 (non-float buffers keep their dtype). Shapes
come from the model built from ``config.json``; ``quant_plan.json`` says which units are packed how.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file
from torch import nn

from ..diskspace import native_write
from ..errors import QslmError
from ..models.neurons import lif_modules
from .methods import Quantized, method_named
from .plan import QuantPlan
from .quantizer import QuantSpec
from .units import PACKED_ATTRIBUTE, Unit, find_units, unit_tensor

if TYPE_CHECKING:
    from .context import QuantContext

PLAN_FILE = "quant_plan.json"
WEIGHTS_FILE = "model.safetensors"


def stored_weight_bytes(shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> int:
    """Exact bytes of a quantized weight on disk and in RAM, as its method stores it."""
    return method_named(spec.method).stored_bytes(tuple(shape), spec)


# --- packed units --------------------------------------------------------------------------------
# A packed unit keeps only its codes, scales and zero-points, as uint8/float32 buffers of the module that
# held the float weight (``NAME.weight_codes`` ...), and the module's class is swapped for a subclass in
# which the weight's attribute dequantizes on every access (the way torch.nn.utils.parametrize works).
# The module's own forward runs unchanged, so any module packs without per-class code: Linear, Conv,
# Embedding, a custom module using a bare parameter through F.linear or @. A tied tensor is packed once,
# in its first place; its other places read the same buffers.

def buffer_names(attribute: str, shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> dict[str, str]:
    """Suffix -> buffer name of a packed weight ``attribute`` (``codes`` -> ``weight_codes``), in the
    order its method stores them."""
    return {t.suffix: f"{attribute}_{t.suffix}" for t in method_named(spec.method).stored_layout(tuple(shape), spec)}


class PackedTensor:
    """The packed form of one unit, in the buffers of its ``holder`` module."""

    def __init__(self, holder: nn.Module, attribute: str, spec: QuantSpec, shape: torch.Size, dtype: torch.dtype,
                 unit: str):
        self.holder, self.attribute, self.spec, self.unit = holder, attribute, spec, unit
        self.shape, self.dtype = torch.Size(shape), dtype

    def buffer_names(self) -> dict[str, str]:
        return buffer_names(self.attribute, self.shape, self.spec)

    def allocate(self) -> None:
        for tensor in method_named(self.spec.method).stored_layout(tuple(self.shape), self.spec):
            self.holder.register_buffer(f"{self.attribute}_{tensor.suffix}",
                                        torch.zeros(tensor.numel, dtype=tensor.dtype))

    def dequantize(self) -> torch.Tensor:
        stored = {suffix: getattr(self.holder, name) for suffix, name in self.buffer_names().items()}
        return self._as_weight(method_named(self.spec.method).dequantize_stored(stored, self.spec, self.shape))

    def _as_weight(self, values: torch.Tensor) -> torch.Tensor:
        weight = values.view(self.shape).to(self.dtype)
        weight.qslm_unit = self.unit  # lets the op counter (qslm.analysis.ops) know the weight it sees
        return weight


class _DequantizedAttribute:
    """Class attribute standing for a packed tensor: reading it dequantizes (only codes are kept)."""

    def __init__(self, attribute: str):
        self.attribute = attribute

    def __get__(self, module, owner=None):
        if module is None:
            return self
        return getattr(module, PACKED_ATTRIBUTE)[self.attribute].dequantize()


_PACKED_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def _packed_class(cls: type, attributes: tuple[str, ...]) -> type:
    base = getattr(cls, "_qslm_float_class", cls)
    key = (base, attributes)
    if key not in _PACKED_CLASSES:
        namespace = {a: _DequantizedAttribute(a) for a in attributes}
        _PACKED_CLASSES[key] = type(f"Packed{base.__name__}", (base,), {**namespace, "_qslm_float_class": base})
    return _PACKED_CLASSES[key]


def _attach(module: nn.Module, attribute: str, packed: PackedTensor) -> None:
    """Make ``module.attribute`` read ``packed`` instead of a float parameter."""
    if attribute in module._parameters:
        del module._parameters[attribute]
    table = dict(getattr(module, PACKED_ATTRIBUTE, {}))
    table[attribute] = packed
    object.__setattr__(module, PACKED_ATTRIBUTE, table)  # plain attribute: not a submodule, not in the state dict
    module.__class__ = _packed_class(type(module), tuple(sorted(table)))


def _check_packable(model: nn.Module, unit: Unit) -> None:
    for place in unit.places:
        module_path = place.rpartition(".")[0]
        module = model.get_submodule(module_path)
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.max_norm is not None:
            raise QslmError(f"unit {unit.name!r}: an Embedding with max_norm renormalises its weight in place, "
                            "so it cannot be packed; leave it out (ignore) or set max_norm=None")


def pack_units(model: nn.Module, plan: QuantPlan) -> dict[str, PackedTensor]:
    """Turn every unit ``plan`` quantizes into empty packed buffers (to fill by ``store`` or a state dict)."""
    units = find_units(model)
    packed = {}
    for name, spec in plan.quantized.items():
        unit = units[name]
        if unit.packed is not None:
            raise QslmError(f"unit {name!r} is already packed ({unit.packed.describe()})")
        _check_packable(model, unit)
        tensor = unit_tensor(model, unit)
        holder = model.get_submodule(unit.module)
        packed[name] = PackedTensor(holder, unit.attribute, spec, tensor.shape, tensor.dtype, name)
        packed[name].allocate()
        done = set()
        for place in unit.places:
            module_path, _, attribute = place.rpartition(".")
            module = model.get_submodule(module_path)
            if (id(module), attribute) not in done:
                done.add((id(module), attribute))
                _attach(module, attribute, packed[name])
    return packed


# --- export and load ---------------------------------------------------------------------------

def _fp32(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return (t.to(torch.float32) if t.is_floating_point() else t).contiguous()


def tied_key_groups(model: nn.Module) -> list[list[str]]:
    """State-dict keys that name one tensor, first key first (tied weights, shared modules)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return list(groups.values())


def unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every shared tensor once, under its first key."""
    state = model.state_dict()
    return {keys[0]: state[keys[0]] for keys in tied_key_groups(model)}


def packed_state_dict(model: nn.Module, plan: QuantPlan, context: "QuantContext | None" = None
                      ) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds for ``model`` quantized by ``plan``: every tensor once, quantized
    units as their methods store them (float weights of a model fake-quantized now are
    taken from the saved originals). ``context`` carries the calibration Hessians gptq units need."""
    from .apply import float_weight, quantize_unit  # apply builds on plan and pack's siblings; import on use

    plan.validate(model)
    units = find_units(model)
    state = {key: _fp32(value) for key, value in unique_state(model).items()}
    for name, spec in plan.quantized.items():
        unit = units[name]
        for place in unit.places:
            state.pop(place, None)
        quantized = quantize_unit(name, float_weight(model, name), spec, context)
        prefix = f"{unit.module}." if unit.module else ""
        for key, tensor in stored_tensors(quantized, unit.attribute).items():
            state[prefix + key] = tensor.detach().cpu().contiguous()
    return state


def stored_tensors(quantized: Quantized, attribute: str) -> dict[str, torch.Tensor]:
    """The buffers (by name) that hold a quantized weight, as its method stores it."""
    stored = method_named(quantized.spec.method).stored_tensors(quantized)
    return {f"{attribute}_{suffix}": tensor for suffix, tensor in stored.items()}


def set_neuron_quantizers(model: nn.Module, plan: QuantPlan) -> None:
    """Fixed-point state for every LIF the plan names (range from each neuron's own threshold)."""
    neurons = lif_modules(model)
    for name, spec in plan.neurons.items():
        neurons[name].state_quantizer = spec.quantizer(neurons[name].v_threshold)


def write_packed(model: nn.Module, plan: QuantPlan, folder: Path, context: "QuantContext | None" = None
                 ) -> dict[str, Path]:
    """``model.safetensors`` (packed) and ``quant_plan.json`` of ``model`` under ``plan`` into ``folder``;
    returns name -> path."""
    state = packed_state_dict(model, plan, context)
    with native_write(folder / WEIGHTS_FILE):  # a full disk as an OSError naming the file
        # one metadata key: safetensors orders several at random
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / PLAN_FILE).write_text(plan.to_json())
    return {WEIGHTS_FILE: folder / WEIGHTS_FILE, PLAN_FILE: folder / PLAN_FILE}


def fill_tied_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict stored with each shared tensor once, completed with the other keys of that tensor
    so that a strict ``load_state_dict`` accepts it."""
    filled = dict(state_dict)
    for keys in tied_key_groups(model):
        if keys[0] in filled:
            for key in keys[1:]:
                filled.setdefault(key, filled[keys[0]])
    return filled


def load_packed_into(model: nn.Module, state_dict: dict[str, torch.Tensor], plan: QuantPlan | str | os.PathLike
                     ) -> None:
    """Turn float ``model`` (freshly built) into the packed model ``plan`` describes and load
    ``state_dict`` into it strictly. Quantized units keep only codes and scales in memory."""
    source = plan if isinstance(plan, QuantPlan) else str(plan)
    plan = plan if isinstance(plan, QuantPlan) else QuantPlan.load(plan)
    plan.validate(model)
    pack_units(model, plan)
    try:
        model.load_state_dict(fill_tied_keys(model, state_dict), strict=True)
    except RuntimeError as err:
        raise QslmError(f"packed weights do not match {source if isinstance(source, str) else 'the plan'}: "
                        f"{err}") from None
    set_neuron_quantizers(model, plan)
