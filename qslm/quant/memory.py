"""Exact memory accounting: the bytes a plan's export stores (codes, float32 or float16 scales,
packed zero-points, or a codebook unit's indices and float16 levels; float32 everything else), computed
without exporting, and the per-unit report ``qslm info`` prints.

``plan_bytes(model, plan)`` equals the sum of tensor bytes in the ``model.safetensors`` that
``write_quantized_folder(model, plan, ...)`` writes, to the byte (the file adds only its JSON header).
Neuron-state fixed point changes run-time state, not stored weights, so it costs no bytes here.
"""
from __future__ import annotations

import math
import os
import struct
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..jsonfile import parse_json
from .pack import PLAN_FILE, stored_weight_bytes, unique_state
from .plan import QuantPlan
from .quantizer import QuantSpec
from .units import Unit, float_class, quantizable_units


def fp32_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t`` stored as float32 (non-float tensors keep their own dtype)."""
    return t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()


def unit_bytes(unit: Unit | nn.Module, spec: QuantSpec | None) -> int:
    """Stored bytes of a unit's weight under ``spec`` (None: fp32): codes + scales + zero-points.
    A module stands for its ``weight``."""
    shape = unit.shape if isinstance(unit, Unit) else tuple(unit.weight.shape)
    if spec is None:
        return 4 * math.prod(shape)
    return stored_weight_bytes(shape, spec)


def _unit_keys(units: dict[str, Unit]) -> set[str]:
    return {place for unit in units.values() for place in unit.places}


def fixed_bytes(model: nn.Module) -> int:
    """Bytes of every tensor that is not a unit weight (biases, norms, time-mix, buffers), stored as
    float32, each shared tensor once."""
    claimed = _unit_keys(quantizable_units(model))
    return sum(fp32_bytes(t) for key, t in unique_state(model).items() if key not in claimed)


def plan_bytes_by_unit(model: nn.Module, plan: QuantPlan) -> dict[str, int]:
    """Stored bytes of every unit under ``plan`` (units it does not quantize: fp32)."""
    plan.validate(model)
    return {name: unit_bytes(unit, plan.units.get(name)) for name, unit in quantizable_units(model).items()}


def plan_bytes(model: nn.Module, plan: QuantPlan) -> int:
    """Total stored bytes of ``model`` quantized by ``plan``: codes + scales + zero-points + float tensors."""
    return fixed_bytes(model) + sum(plan_bytes_by_unit(model, plan).values())


def safetensors_tensor_bytes(path: str | os.PathLike) -> int:
    """Sum of tensor bytes in a safetensors file, read from its header (the header itself not counted)."""
    with open(path, "rb") as handle:
        header = parse_json(handle.read(struct.unpack("<Q", handle.read(8))[0]), f"{path} header")
    return sum(end - start for key, entry in header.items() if key != "__metadata__"
               for start, end in [entry["data_offsets"]])


def memory_report(model: nn.Module, folder: str | os.PathLike | None = None) -> dict:
    """Parameters and bytes (as stored vs as FP32) per unit and in total, for a float or loaded packed
    model, each shared tensor once. Tensors outside the units are grouped by the kind of module that
    owns them."""
    units = quantizable_units(model)
    state = unique_state(model)
    rows = []
    for name, unit in units.items():
        if unit.packed is not None:
            prefix = f"{unit.module}." if unit.module else ""
            stored = sum(state[prefix + buffer].nbytes for buffer in
                         model.get_submodule(unit.module)._qslm_packed[unit.attribute].buffer_names().values())
            spec = unit.packed.describe()
        else:
            stored, spec = state[unit.path].nbytes, "fp32"
        rows.append({"name": name, "parameters": unit.numel, "spec": spec, "bytes_fp32": 4 * unit.numel,
                     "bytes": stored, "aliases": list(unit.aliases)})
    packed_buffers = {f"{u.module}.{b}" if u.module else b for u in units.values() if u.packed is not None
                      for b in model.get_submodule(u.module)._qslm_packed[u.attribute].buffer_names().values()}
    claimed = _unit_keys(units) | packed_buffers
    parameter_names = {name for name, _ in model.named_parameters()}
    others: dict[str, dict] = defaultdict(lambda: {"parameters": 0, "bytes_fp32": 0, "bytes": 0})
    for key, tensor in state.items():
        if key in claimed:
            continue
        owner = float_class(model.get_submodule(key.rpartition(".")[0])).__name__
        group = others[owner]
        group["parameters"] += tensor.numel() if key in parameter_names else 0
        group["bytes_fp32"] += fp32_bytes(tensor)
        group["bytes"] += tensor.nbytes
    rows += [{"name": f"other: {owner}", "spec": "fp32", **group} for owner, group in others.items()]
    report = {"parameters": sum(r["parameters"] for r in rows), "bytes_fp32": sum(r["bytes_fp32"] for r in rows),
              "bytes": sum(r["bytes"] for r in rows), "units": rows}
    if folder is not None:
        from .pack import WEIGHTS_FILE

        folder = Path(folder)
        if (folder / WEIGHTS_FILE).is_file():
            report["file_bytes"] = (folder / WEIGHTS_FILE).stat().st_size
        if (folder / PLAN_FILE).is_file():
            plan = QuantPlan.load(folder / PLAN_FILE)
            report["neurons"] = {name: spec.describe() for name, spec in plan.neurons.items()}
    return report
