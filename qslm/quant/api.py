"""``quantize``: one call from a float model (any ``nn.Module``, a model folder or bundled name) to a
packed quantized folder, as torchao's ``quantize_(model, config)``.

    qslm.quantize(my_module, bits=4, out="mine-int4")        # then qslm.load_quantized(MyModel(), "mine-int4")
    qslm.quantize("spikegpt-wt2", bits=4, out="spikegpt-int4")
    qslm.quantize("spikegpt-sst2", plan="out/sst2/quant_plan.json", calibration=batches, out="mixed")

A plan file sets units one by one; ``bits`` (with granularity, symmetry and observer) applies to every
unit the plan does not mention, and ``neuron_bits`` to every LIF neuron it does not mention.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import QslmError
from ..models.neuron_state import reset_neuron_states
from ..models.neurons import lif_modules
from .apply import check_context
from .context import QuantContext
from .memory import plan_bytes
from .pack import PLAN_FILE
from .plan import QuantPlan
from .quantizer import DEFAULT_METHOD, DEFAULT_SCALE_DTYPE, QuantSpec, parse_granularity
from .neuron_spec import NeuronSpec
from .unit_inputs import record_hessians
from .units import find_units, quantizable_units


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
               all_levels: bool | None = None, method: str | None = None) -> QuantPlan:
    """The plan ``quantize`` applies: ``plan``'s entries, then ``bits`` & co. (``method``: a registered
    quantizer method, default rtn; 1 bit takes ``binary``) for every unit it leaves out, ``neuron_bits`` for every neuron it leaves out. Options that would have no effect are errors."""
    base = read_plan(plan)
    if bits is None:
        unused = {"granularity": granularity, "group_size": group_size, "symmetric": symmetric,
                  "observer": observer, "percentile": percentile, "scale_dtype": scale_dtype,
                  "all_levels": all_levels, "method": method}
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
                         method=method or DEFAULT_METHOD, scale_dtype=scale_dtype or DEFAULT_SCALE_DTYPE,
                         all_levels=bool(all_levels))
        units = {name: spec for name in quantizable_units(model)}
        units.update(base.units)  # unknown names stay, so validation names them
    neurons = dict(base.neurons)
    if neuron_bits is not None:
        for name in lif_modules(model):
            neurons.setdefault(name, NeuronSpec(neuron_bits))
    merged = QuantPlan(units, neurons)
    merged.validate(model, strict=strict)
    return merged


def quantize(model: str | os.PathLike | nn.Module, bits: int | None = None, granularity: str | None = None,
             group_size: int | None = None, symmetric: bool | None = None, observer: str | None = None,
             percentile: float | None = None, plan: QuantPlan | dict | str | os.PathLike | None = None,
             neuron_bits: int | None = None, strict: bool = False, out: str | os.PathLike | None = None,
             overwrite: bool = False, scale_dtype: str | None = None, all_levels: bool | None = None,
             calibration: list | None = None, method: str | None = None) -> QuantizeResult:
    """Quantize a float model, any ``nn.Module`` or a model folder (or bundled name), and write the packed
    result to ``out``: ``model.safetensors`` and ``quant_plan.json`` (plus the folder's config and
    tokenizer), which ``qslm.load_quantized(MyModel(), out)`` (or ``qslm.load(out)``) reads back.
    Defaults when ``bits`` is given: per-channel, symmetric, MSE clipping, float16 scales. ``granularity``
    may be ``group:G``; ``all_levels=True`` makes the symmetric grid signed, using every code (2-bit:
    -2, -1, 0, +1). ``calibration`` (model inputs: tensors, tuples or dicts) is what gptq and codebook
    units of a plan fit to; gptq units need it.

    ``out`` must be new, empty, or an earlier quantize output (see ``qslm.outputs``); ``overwrite``
    writes into another folder too, replacing only the files quantize writes. The input model's folder,
    or one above it, is always refused."""
    from ..checkpoint import commit_quantized, load_model  # model folders build on quant
    from ..models.zoo import resolve_model_path
    from ..outputs import OutputFolder

    if out is None:
        raise QslmError("quantize needs an output folder (out=...)")
    if isinstance(model, nn.Module):
        source = None
        if any(unit.packed is not None for unit in find_units(model).values()):
            raise QslmError(f"this {type(model).__name__} is already quantized; quantize the float model")
    else:
        source = resolve_model_path(model)
        if (source / PLAN_FILE).is_file():
            raise QslmError(f"{source} is already quantized ({PLAN_FILE} present); quantize the float model")
    # the folder is claimed first: an output that cannot be written costs no loading
    with OutputFolder.claim(out, "quantize", overwrite=overwrite, protect=[] if source is None else [source]) as folder:
        if source is None:
            float_model, tokenizer = model, None
        else:
            loaded = load_model(source)
            float_model, tokenizer = loaded.model, loaded.tokenizer
        final_plan = build_plan(float_model, bits, granularity, group_size, symmetric, observer, percentile,
                                plan, neuron_bits, strict, scale_dtype, all_levels, method)
        context = _calibration_context(float_model, final_plan, calibration)
        commit_quantized(folder, float_model, final_plan, tokenizer, context)
    return QuantizeResult(Path(out), final_plan, plan_bytes(float_model, final_plan),
                          plan_bytes(float_model, QuantPlan()))


def _calibration_context(model: nn.Module, plan: QuantPlan, calibration: list | None) -> QuantContext | None:
    """The unit-input Hessians gptq and codebook units fit to, from ``calibration``; a gptq unit without
    them is refused before anything is written."""
    context = None
    if calibration is not None:
        if isinstance(calibration, (torch.Tensor, dict)) or not calibration:
            raise QslmError("calibration must be a non-empty list of model inputs (tensors, tuples or dicts), "
                            f"got {type(calibration).__name__}")
        context = QuantContext(record_hessians(model, list(calibration), reset_neuron_states))
    check_context(plan, context)
    return context
