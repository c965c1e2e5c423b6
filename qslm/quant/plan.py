"""A quantization plan: unit name -> QuantSpec (or None: kept fp32), LIF name -> NeuronSpec.

Names are ``model.named_modules()`` paths (``emb``, ``blocks.3.att.key``, ``head``,
``blocks.0.lif1``). JSON form (``version`` guards the format)::

    {"version": 1,
     "units": {"blocks.0.att.key": {"bits": 4, "granularity": "per-channel", "group_size": null,
                                    "symmetric": true, "observer": "mse", "percentile": null},
               "blocks.0.att.value": {"bits": 3, "method": "gptq"},
               "head": null},
     "neurons": {"blocks.0.lif1": {"bits": 8, "range_multiple": 2.0}}}

A spec's ``method`` (``rtn``, ``gptq``, ``codebook``) is written only when it is not ``rtn``, so
plans from before methods existed read, and are written, unchanged.

A setting is never silently ignored: unknown keys, unknown names and names that are not
quantizable units (or not LIF neurons) are errors that list the closest valid names.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..errors import QslmError
from ..jsonfile import parse_json, read_json_file
from ..models.neurons import lif_modules
from .quantizer import QuantSpec, check_group_size
from .neuron_spec import NeuronSpec
from .units import alias_owner, quantizable_units

PLAN_VERSION = 1
FLOAT_BITS = 32  # in a bit assignment, "keep this unit fp32"


def closest_names(name: str, valid: list[str], n: int = 5) -> str:
    """The valid names most like ``name`` (difflib), else the first few, for error messages."""
    if not valid:
        return "none"
    close = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if close:
        return ", ".join(close)
    return ", ".join(valid[:n]) + (", ..." if len(valid) > n else "")


@dataclass
class QuantPlan:
    units: dict[str, QuantSpec | None] = field(default_factory=dict)
    neurons: dict[str, NeuronSpec] = field(default_factory=dict)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def uniform(cls, model: nn.Module, spec: QuantSpec | None, neuron_bits: int | None = None) -> "QuantPlan":
        """Every quantizable unit at ``spec`` (and, with ``neuron_bits``, every LIF's state fixed point)."""
        neurons = ({name: NeuronSpec(neuron_bits) for name in lif_modules(model)} if neuron_bits is not None
                   else {})
        return cls({name: spec for name in quantizable_units(model)}, neurons)

    @classmethod
    def from_bits(cls, assignment: dict[str, int], base: QuantSpec, neurons: dict[str, NeuronSpec] | None = None
                  ) -> "QuantPlan":
        """unit -> bit-width (``FLOAT_BITS`` = keep fp32), every other setting from ``base``."""
        specs = {}
        for name, bits in assignment.items():
            if bits == FLOAT_BITS:
                specs[name] = None
            elif bits == base.bits:
                specs[name] = base
            else:
                try:
                    specs[name] = dataclasses.replace(base, bits=bits)
                except QslmError as err:
                    raise QslmError(f"unit {name!r}: {err}") from None
        return cls(specs, dict(neurons or {}))

    @property
    def quantized(self) -> dict[str, QuantSpec]:
        """The units this plan quantizes (entries that are not None)."""
        return {name: spec for name, spec in self.units.items() if spec is not None}

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": PLAN_VERSION,
                "units": {name: None if spec is None else spec.to_dict() for name, spec in self.units.items()},
                "neurons": {name: spec.to_dict() for name, spec in self.neurons.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict, source: str = "quant plan") -> "QuantPlan":
        if not isinstance(raw, dict):
            raise QslmError(f"{source}: expected a JSON object with 'version', 'units' and 'neurons'")
        unknown = sorted(set(raw) - {"version", "units", "neurons"})
        if unknown:
            raise QslmError(f"{source}: unknown keys {unknown}; expected 'version', 'units', 'neurons'")
        version = raw.get("version")
        if type(version) is not int or version != PLAN_VERSION:  # 1.0 and true equal 1 but are no version
            raise QslmError(f"{source}: unsupported plan version {version!r}; this qslm reads "
                            f"version {PLAN_VERSION}")
        units_raw, neurons_raw = raw.get("units", {}), raw.get("neurons", {})
        for key, value in (("units", units_raw), ("neurons", neurons_raw)):
            if not isinstance(value, dict):
                raise QslmError(f"{source}: {key!r} must be an object mapping module names to specs")
        units = {name: None if spec is None else QuantSpec.from_dict(spec, f"{source}: unit {name!r}")
                 for name, spec in units_raw.items()}
        neurons = {name: NeuronSpec.from_dict(spec, f"{source}: neuron {name!r}")
                   for name, spec in neurons_raw.items()}
        return cls(units, neurons)

    @classmethod
    def from_json(cls, text: str, source: str = "quant plan") -> "QuantPlan":
        """A unit or neuron named twice is an error: with plain JSON the last entry would silently win."""
        return cls.from_dict(parse_json(text, source), source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QuantPlan":
        path = Path(path)
        if not path.is_file():
            raise QslmError(f"plan file {path} not found")
        return cls.from_dict(read_json_file(path), str(path))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json())

    # --- validation ---------------------------------------------------------------------------
    def validate(self, model: nn.Module, strict: bool = False) -> None:
        """Raise one QslmError listing every problem: names that are not quantizable units / LIF neurons
        of ``model`` (with the closest valid names), group sizes that do not divide a unit's input size,
        and, when ``strict``, quantizable units the plan does not mention."""
        units = quantizable_units(model)
        neurons = lif_modules(model)
        problems = []
        modules = None
        for name, spec in self.units.items():
            unit = units.get(name)
            if unit is None:
                modules = modules if modules is not None else dict(model.named_modules())
                tied_to = alias_owner(model, name)
                if tied_to is not None:
                    what = f"is tied to unit {tied_to!r} (one tensor, quantized once): name it {tied_to!r}"
                elif name in modules:
                    what = f"is a {type(modules[name]).__name__}, not a quantizable unit (it holds no weight matrix)"
                else:
                    what = "is not a module or weight of this model"
                problems.append(f"unit {name!r} {what}; closest units: {closest_names(name, list(units))}")
            elif spec is not None:
                if unit.packed is not None:
                    problems.append(f"unit {name!r} is already quantized ({unit.packed.describe()}); "
                                    "quantize the float model instead")
                    continue
                try:
                    check_group_size(unit.shape, spec, f"unit {name!r}")
                except QslmError as err:
                    problems.append(str(err))
        for name in self.neurons:
            if name not in neurons:
                problems.append(f"neuron {name!r} is not a LIF module of this model; closest neurons: "
                                f"{closest_names(name, list(neurons))}")
        if strict:
            missing = [name for name in units if name not in self.units]
            if missing:
                problems.append(f"strict plan leaves {len(missing)} quantizable units unmentioned (give a spec, "
                                f"or null to keep fp32): {', '.join(missing)}")
        if problems:
            raise QslmError("quantization plan does not fit the model:\n  " + "\n  ".join(problems))
