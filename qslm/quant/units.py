"""Quantizable units: the weight tensors a plan can quantize, found in any PyTorch model.

    units = find_units(model, ignore=["*.pos"])
    units["blocks.0.att.key"].path       # 'blocks.0.att.key.weight'
    units["emb"].aliases                 # ('head.weight',): a tied head is the same tensor

Rules (no model-specific code):

* A **unit** is one floating parameter tensor that is a weight: the ``weight`` of a Linear, Bilinear,
  Embedding(Bag) or Conv of any dimension, and any other parameter with at least two dimensions of size
  above 1, whatever module holds it (a bare ``nn.Parameter`` applied with ``F.linear`` or ``@``). Vectors
  stored as ``[1, 1, d]`` (RWKV's time-mix), biases, norms and neuron parameters are not units: they stay
  float and are counted as such.
* A tensor registered in several places (tied embedding and head, a module shared by two blocks) is
  **one** unit: quantized once, stored once, counted once. Its first place in model order names it;
  the others are its ``aliases``.
* A unit is named by the path of the module that holds it when that module holds no other unit
  (``blocks.0.att.key``, as every plan has named them), else by the parameter's own path
  (``stages.0.proj``).
* In a loaded quantized model a packed unit (see ``qslm.quant.pack``) has no float parameter any more;
  it is still found here, under the same name, with ``packed`` set to its spec.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QslmError
from .quantizer import QuantSpec

# Modules whose ``weight`` is always a unit, even when one of its dimensions is 1 (Linear(d, 1)).
WEIGHT_HOLDERS = (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, nn.modules.conv._ConvNd)
PACKED_ATTRIBUTE = "_qslm_packed"  # on a module: {attribute: PackedTensor}, set by qslm.quant.pack


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def inside(name: str, scope: str) -> bool:
    """``name`` is ``scope`` or a path below it (the root scope "" holds everything)."""
    return not scope or name == scope or name.startswith(scope + ".")


@dataclass(frozen=True)
class Unit:
    name: str  # what plans call it
    module: str  # path of the module that holds it (its first place)
    attribute: str  # the attribute of that module
    shape: tuple[int, ...]
    kind: str  # class name of the holding module, or "Parameter" for a bare parameter of a custom module
    aliases: tuple[str, ...] = ()  # parameter paths of its other places
    packed: QuantSpec | None = None  # the spec it is stored with, in a loaded quantized model

    @property
    def path(self) -> str:
        return join(self.module, self.attribute)

    @property
    def places(self) -> tuple[str, ...]:
        return (self.path,) + self.aliases

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "shape": list(self.shape),
                "parameters": self.numel, "bytes_fp32": 4 * self.numel, "aliases": list(self.aliases)}


def float_class(module: nn.Module) -> type:
    """The module's own class, also for a module whose weights were packed (its class is a subclass)."""
    return getattr(type(module), "_qslm_float_class", type(module))


def is_unit_parameter(module: nn.Module, attribute: str, tensor: torch.Tensor) -> bool:
    if isinstance(tensor, nn.parameter.UninitializedParameter) or not tensor.is_floating_point():
        return False
    if attribute == "weight" and issubclass(float_class(module), WEIGHT_HOLDERS):
        return tensor.dim() >= 2
    return tensor.dim() >= 2 and sum(size > 1 for size in tensor.shape) >= 2


def _places(model: nn.Module):
    """(module path, module, attribute, key, shape, spec) for every unit place, in model order; ``key``
    is the same object for every place of one tensor."""
    for path, module in model.named_modules(remove_duplicate=False):
        for attribute, tensor in module._parameters.items():
            if tensor is not None and is_unit_parameter(module, attribute, tensor):
                yield path, module, attribute, tensor, tuple(tensor.shape), None
        for attribute, packed in getattr(module, PACKED_ATTRIBUTE, {}).items():
            yield path, module, attribute, packed, tuple(packed.shape), packed.spec


def find_units(model: nn.Module, ignore: Sequence[str] = ()) -> dict[str, Unit]:
    """Every unit of ``model`` by name, in model order, except those matching an ``ignore`` glob (matched
    against the unit's name and each of its parameter paths, e.g. ``"*.pos"``, ``"head"``)."""
    groups: dict[int, list[tuple]] = {}
    for place in _places(model):
        groups.setdefault(id(place[3]), []).append(place)
    holders: dict[int, int] = {}  # id(module) -> how many distinct units it holds directly
    for places in groups.values():
        holders[id(places[0][1])] = holders.get(id(places[0][1]), 0) + 1
    units: dict[str, Unit] = {}
    for places in groups.values():
        path, module, attribute, _, shape, spec = places[0]
        own_name = path if path and holders[id(module)] == 1 else join(path, attribute)
        kind = float_class(module).__name__ if attribute == "weight" or path == own_name else "Parameter"
        seen = {join(path, attribute)}
        aliases = []
        for other_path, _, other_attribute, *_ in places[1:]:
            place = join(other_path, other_attribute)
            if place not in seen:
                seen.add(place)
                aliases.append(place)
        units[own_name] = Unit(own_name, path, attribute, shape, kind, tuple(aliases), spec)
    _check_patterns(ignore)
    unmatched = [p for p in ignore if not any(ignored(unit, [p]) for unit in units.values())]
    if unmatched:
        raise QslmError(f"ignore pattern {unmatched[0]!r} matches no unit of the model (units are named like "
                        f"{', '.join(list(units)[:3])}, or by their parameter paths)")
    return {name: unit for name, unit in units.items() if not ignored(unit, ignore)}


def _check_patterns(patterns: Sequence[str]) -> None:
    if isinstance(patterns, str):
        raise QslmError(f"ignore must be a list of glob patterns, got the string {patterns!r}; write [{patterns!r}]")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise QslmError(f"ignore patterns must be non-empty strings, got {pattern!r}")


def ignored(unit: Unit, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(place, pattern) for pattern in patterns for place in (unit.name,) + unit.places)


def quantizable_units(model: nn.Module) -> dict[str, Unit]:
    """Every unit of ``model`` (nothing ignored)."""
    return find_units(model)


def unit_tensor(model: nn.Module, unit: Unit) -> torch.Tensor:
    """The unit's float parameter (for a packed unit: its dequantized weight)."""
    return getattr(model.get_submodule(unit.module), unit.attribute)


def alias_owner(model: nn.Module, name: str) -> str | None:
    """The unit that ``name`` (a parameter path, or a module path holding one) is an alias of, if any."""
    for unit in quantizable_units(model).values():
        if any(name == place or name == place.rpartition(".")[0] for place in unit.aliases):
            return unit.name
    return None


def weight_view_ops() -> frozenset:
    """Ops whose output is the same weight seen another way (a view, a cast): a unit keeps its identity
    through them wherever the code uses it (op counting, recording its inputs)."""
    T = torch.Tensor
    return frozenset([T.t, torch.t, T.transpose, torch.transpose, T.permute, torch.permute, T.view, T.reshape,
                      torch.reshape, T.to, T.float, T.half, T.bfloat16, T.double, T.contiguous, T.type_as,
                      T.unsqueeze, torch.unsqueeze, T.squeeze, torch.squeeze, T.detach, T.clone, T.flatten,
                      T.T.__get__, T.mT.__get__, T.data.__get__])


def matmul_ops() -> frozenset:
    """The matrix products a weight may be applied through besides ``F.linear``."""
    T = torch.Tensor
    return frozenset([torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mm, T.mm, torch.bmm, T.bmm])
