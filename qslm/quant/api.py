"""``quantize``: one call from a float model folder (or bundled name) to a packed quantized folder.

    from qslm.quant.api import quantize
    quantize("spikegpt-wikitext2", bits=4, out="spikegpt-int4")
    quantize("spikegpt-sst2", plan="plan.json", bits=8, neuron_bits=8, out="mixed")

A plan file sets units one by one; ``bits`` (with granularity, symmetry and observer) applies to every
unit the plan does not mention, and ``neuron_bits`` to every LIF neuron it does not mention.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import QslmError
from ..models.neurons import lif_modules
from .memory import plan_bytes
from .pack import PLAN_FILE
from .plan import QuantPlan
from .quantizer import DEFAULT_SCALE_DTYPE, NeuronSpec, QuantSpec, parse_granularity
from .units import quantizable_units


@dataclass
class QuantizeResult:
    path: Path
    plan: QuantPlan
    bytes: int
    bytes_fp32: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "bytes": self.bytes, "bytes_fp32": self.bytes_fp32,
                "fraction_of_fp32": self.bytes / self.bytes_fp32, "plan": self.plan.to_dict()}


def read_plan(plan: QuantPlan | dict | str | os.PathLike | None) -> QuantPlan:
    if plan is None:
        return QuantPlan()
    if isinstance(plan, QuantPlan):
        return plan
    if isinstance(plan, dict):
        return QuantPlan.from_dict(plan)
    return QuantPlan.load(plan)


def build_plan(model: nn.Module, bits: int | None = None, granularity: str | None = None,
               group_size: int | None = None, symmetric: bool | None = None, observer: str | None = None,
               percentile: float | None = None, plan: QuantPlan | dict | str | os.PathLike | None = None,
               neuron_bits: int | None = None, strict: bool = False, scale_dtype: str | None = None,
               all_levels: bool | None = None) -> QuantPlan:
    """The plan ``quantize`` applies: ``plan``'s entries, then ``bits`` & co. for every unit it leaves
    out, ``neuron_bits`` for every neuron it leaves out. Options that would have no effect are errors."""
    base = read_plan(plan)
    if bits is None:
        unused = {"granularity": granularity, "group_size": group_size, "symmetric": symmetric,
                  "observer": observer, "percentile": percentile, "scale_dtype": scale_dtype,
                  "all_levels": all_levels}
        given = sorted(key for key, value in unused.items() if value is not None)
        if given:
            raise QslmError(f"{', '.join(given)} given without bits: they only shape the default spec that "
                            "bits sets for units the plan does not mention")
        if plan is None and neuron_bits is None:
            raise QslmError("nothing to quantize: give bits, a plan, or neuron_bits")
        units = dict(base.units)
    else:
        if granularity is not None and granularity != "group":  # "per-channel", "group:G", ...
            if group_size is not None:
                raise QslmError(f"group_size={group_size} needs granularity 'group', got {granularity!r}")
            granularity, group_size = parse_granularity(granularity)
        spec = QuantSpec(bits, granularity or "per-channel", group_size,
                         True if symmetric is None else symmetric, observer or "mse", percentile,
                         scale_dtype=scale_dtype or DEFAULT_SCALE_DTYPE, all_levels=bool(all_levels))
        units = {name: spec for name in quantizable_units(model)}
        units.update(base.units)  # unknown names stay, so validation names them
    neurons = dict(base.neurons)
    if neuron_bits is not None:
        for name in lif_modules(model):
            neurons.setdefault(name, NeuronSpec(neuron_bits))
    merged = QuantPlan(units, neurons)
    merged.validate(model, strict=strict)
    return merged


def quantize(model_ref: str | os.PathLike, bits: int | None = None, granularity: str | None = None,
             group_size: int | None = None, symmetric: bool | None = None, observer: str | None = None,
             percentile: float | None = None, plan: QuantPlan | dict | str | os.PathLike | None = None,
             neuron_bits: int | None = None, strict: bool = False, out: str | os.PathLike | None = None,
             overwrite: bool = False, scale_dtype: str | None = None, all_levels: bool | None = None
             ) -> QuantizeResult:
    """Quantize a float model folder and write the packed result to ``out``. Defaults when ``bits`` is
    given: per-channel, symmetric, MSE clipping, float16 scales. ``granularity`` may be ``group:G``;
    ``all_levels=True`` makes the symmetric grid signed, using every code (2-bit: -2, -1, 0, +1).

    ``out`` must be new, empty, or an earlier quantize output (see ``qslm.outputs``); ``overwrite``
    writes into another folder too, replacing only the files quantize writes. The input model's folder,
    or one above it, is always refused."""
    from ..checkpoint import load_model, quantized_files_bytes, write_quantized_files  # model folders build on quant
    from ..diskspace import require_free_space
    from ..models.zoo import resolve_model_path
    from ..outputs import OutputFolder

    if out is None:
        raise QslmError("quantize needs an output folder (out=...)")
    source = resolve_model_path(model_ref)
    if (source / PLAN_FILE).is_file():
        raise QslmError(f"{source} is already quantized ({PLAN_FILE} present); quantize the float model")
    with OutputFolder.claim(out, "quantize", overwrite=overwrite, protect=[source]) as folder:
        loaded = load_model(source)
        final_plan = build_plan(loaded.model, bits, granularity, group_size, symmetric, observer, percentile,
                                plan, neuron_bits, strict, scale_dtype, all_levels)
        require_free_space(folder.path, quantized_files_bytes(loaded.model, final_plan, loaded.tokenizer),
                           "the quantized model")
        folder.commit(write_quantized_files(loaded.model, final_plan, folder.staging(), loaded.tokenizer))
    return QuantizeResult(Path(out), final_plan, plan_bytes(loaded.model, final_plan),
                          plan_bytes(loaded.model, QuantPlan()))
