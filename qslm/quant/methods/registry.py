"""The registry of quantizer methods: what ``QuantSpec.method`` may name.

A method is a ``QuantMethod`` instance registered under its ``name``. It declares

* ``bits``: the widths it allows (within ``qslm.quant.quantizer.BITS``);
* ``needs`` / ``uses``: the data it cannot quantize without, and the richest data it reads when given
  (``Needs``: the weight alone, unit-input Hessians, or calibration inputs and gradients);
* ``grid``: whether its stored values are codes on the spec's uniform grid (scales, zero-points, the
  observer's clipping), or levels it fits itself, whose specs leave the grid settings at their defaults;
* ``quantize``: a weight -> its quantized form (anything with ``spec``, ``shape`` and ``dequantize()``);
* ``stored_layout`` / ``stored_tensors`` / ``dequantize_stored``: the tensors the packed file holds for
  a weight (their names, sizes and dtypes), those tensors from a quantized weight, and the weight back
  from them. The exact byte count is the layout's (``stored_bytes``);
* ``colour`` (for the report's plots) and ``default`` (a search tries it when no methods are named).

Every spec, plan file, search config, packing and byte count asks this registry, so registering a
method is all it takes to quantize, search, pack and load with it::

    register(MyMethod())      # MyMethod.name == "mine"
    QuantSpec(4, method="mine")
    unregister("mine")

The built-in methods (rtn, gptq, codebook) register on import of ``qslm.quant.methods``. The registry is
per process: a search on Ray workers (fresh processes) needs a method registered by a module they import
too.
"""
from __future__ import annotations

import enum
import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from ...errors import QslmError
from ..widths import BITS

# What methods are given, named here by their roles only: the quantizer (QuantSpec) and the context
# (QuantContext) build on this registry, so importing them here would make a circle.
QuantSpec = Any  # qslm.quant.quantizer.QuantSpec
QuantContext = Any  # qslm.quant.context.QuantContext


class Needs(enum.Enum):
    """What a method quantizes from, besides the weight (the kinds a ``QuantContext`` may carry)."""
    WEIGHT = "the weight alone"
    HESSIANS = "unit-input Hessians"
    GRADIENTS = "calibration inputs and gradients"


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of a packed weight: stored as ``{attribute}_{suffix}`` (``weight_codes``), flat."""
    suffix: str
    numel: int
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Quantized(Protocol):
    """A quantized weight, as a method's ``quantize`` returns it."""
    spec: "QuantSpec"
    shape: torch.Size

    def dequantize(self) -> torch.Tensor: ...


class QuantMethod(ABC):
    """A quantizer method; subclass it, set the class attributes, and ``register`` an instance."""
    name: ClassVar[str]
    bits: ClassVar[tuple[int, ...]]
    needs: ClassVar[Needs] = Needs.WEIGHT
    uses: ClassVar[Needs] = Needs.WEIGHT  # at least ``needs``: a codebook reads Hessians when given, needs none
    grid: ClassVar[bool] = True
    # every suffix the method may store (``stored_layout`` gives those a spec uses), bounding the file header
    stored_names: ClassVar[tuple[str, ...]]
    colour: ClassVar[str | None] = None  # None: the report picks a spare one
    default: ClassVar[bool] = False

    def check_spec(self, spec: "QuantSpec") -> None:
        """Raise a QslmError for a spec of this method it cannot honour (its bit-width, or settings
        ``settings_problem`` refuses)."""
        if spec.bits not in self.bits:
            takers = [m.name for m in registered_methods() if spec.bits in m.bits]
            raise QslmError(f"bits={spec.bits} is not supported by method {self.name!r}; expected one of "
                            f"{list(self.bits)}" + (f" (method {' or '.join(takers)} takes {spec.bits} bits)"
                                                    if takers else ""))
        problem = self.settings_problem(spec)
        if problem is not None:
            raise QslmError(problem)

    def settings_problem(self, spec: "QuantSpec") -> str | None:
        """Why this method cannot honour ``spec``'s settings other than its bit-width (None: it can). A method
        off the grid fits its own levels: no zero-point, no clipping range to observe."""
        if self.grid:
            return None
        if not spec.symmetric:
            return (f"symmetric=false makes no sense with method {self.name!r}: its levels are free, so there "
                    "is no zero-point; leave symmetric true")
        if spec.observer != "mse":
            return (f"observer={spec.observer!r} makes no sense with method {self.name!r}: it fits the levels "
                    "(minimising squared error) with no clipping range; leave observer 'mse'")
        return None

    @abstractmethod
    def quantize(self, weight: torch.Tensor, spec: "QuantSpec", context: "QuantContext | None", unit: str
                 ) -> Quantized:
        """``weight`` quantized by ``spec`` (whose method is this one). ``context`` holds what ``needs``
        asks for (checked before the call) and what ``uses`` reads when present."""

    @abstractmethod
    def stored_layout(self, shape: tuple[int, ...], spec: "QuantSpec") -> list[StoredTensor]:
        """The tensors a weight of ``shape`` is stored as under ``spec``, in the order they are written."""

    def stored_bytes(self, shape: tuple[int, ...], spec: "QuantSpec") -> int:
        """Exact bytes of a weight of ``shape`` in the packed file (and in memory once loaded)."""
        return sum(tensor.nbytes for tensor in self.stored_layout(shape, spec))

    @abstractmethod
    def stored_tensors(self, quantized: Quantized) -> dict[str, torch.Tensor]:
        """suffix -> the stored tensor, as ``stored_layout`` describes them."""

    @abstractmethod
    def dequantize_stored(self, stored: Mapping[str, torch.Tensor], spec: "QuantSpec", shape: torch.Size
                          ) -> torch.Tensor:
        """The float32 weight (any shape with ``shape``'s elements) from its stored tensors (suffix ->
        tensor), bit-identical to ``quantize(...).dequantize()``."""


_METHODS: dict[str, QuantMethod] = {}


def register(method: QuantMethod) -> QuantMethod:
    """Add ``method`` under its name; a name registered already is an error."""
    _load_built_in()
    if not isinstance(method, QuantMethod):
        raise QslmError(f"a quantizer method must be a QuantMethod instance, got {type(method).__name__}")
    name = getattr(method, "name", None)
    if not isinstance(name, str) or not name:
        raise QslmError(f"a quantizer method needs a non-empty string name, got {name!r}")
    bits = getattr(method, "bits", None)
    if not isinstance(bits, tuple) or not bits or any(b not in BITS for b in bits):
        raise QslmError(f"quantizer method {name!r}: bits must be a non-empty tuple of widths among {list(BITS)}, "
                        f"got {bits!r}")
    if not isinstance(method.needs, Needs) or not isinstance(method.uses, Needs):
        raise QslmError(f"quantizer method {name!r}: needs and uses must be Needs members, got {method.needs!r} "
                        f"and {method.uses!r}")
    stored = getattr(method, "stored_names", None)
    if not isinstance(stored, tuple) or not stored or not all(isinstance(n, str) and n for n in stored):
        raise QslmError(f"quantizer method {name!r}: stored_names must name every tensor it may store, got "
                        f"{stored!r}")
    kinds = list(Needs)
    if kinds.index(method.uses) < kinds.index(method.needs):
        raise QslmError(f"quantizer method {name!r} uses {method.uses.value} but needs {method.needs.value}: "
                        "what it needs it uses, so declare uses at least needs")
    if name in _METHODS:
        raise QslmError(f"quantizer method {name!r} is registered already ({type(_METHODS[name]).__name__})")
    _METHODS[name] = method
    return method


def unregister(name: str) -> None:
    if name not in _METHODS:
        raise QslmError(f"no quantizer method {name!r} is registered; registered: {method_names()}")
    del _METHODS[name]


_built_in_loaded = False


def _load_built_in() -> None:
    """Register rtn, gptq and codebook, once, when the registry is first asked: they build on the
    quantizer, which asks this registry, so they are loaded on use rather than imported here."""
    global _built_in_loaded
    if not _built_in_loaded:
        _built_in_loaded = True
        importlib.import_module(f"{__name__.rpartition('.')[0]}.builtin")


def method_named(name: str) -> QuantMethod:
    """The registered method ``name``; an unknown name is an error naming the registered ones."""
    _load_built_in()
    method = _METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise QslmError(f"unknown method {name!r}; expected one of {method_names()}")
    return method


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    _load_built_in()
    return list(_METHODS)


def registered_methods() -> list[QuantMethod]:
    _load_built_in()
    return list(_METHODS.values())
