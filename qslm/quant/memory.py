"""Exact memory accounting: the bytes a plan's export stores (codes, float32 scales, packed zero-points,
float32 everything else), computed without exporting, and the per-unit report ``qslm info`` prints.

``plan_bytes(model, plan)`` equals the sum of tensor bytes in the ``model.safetensors`` that
``export_quantized(model, plan, ...)`` writes, to the byte (the file adds only its JSON header).
Neuron-state fixed point changes run-time state, not stored weights, so it costs no bytes here.
"""
from __future__ import annotations

import json
import os
import struct
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from .pack import PLAN_FILE, stored_weight_bytes
from .plan import QuantPlan
from .quantizer import QuantSpec
from .units import PackedUnit, quantizable_units, unit_parameter_count


def fp32_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t`` stored as float32 (non-float tensors keep their own dtype)."""
    return t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def unit_bytes(module: nn.Module, spec: QuantSpec | None) -> int:
    """Stored bytes of float unit ``module`` under ``spec`` (None: fp32): its weight quantized and
    packed, its bias and any other tensor of its own as float32."""
    total = 0
    for key, tensor in module.state_dict().items():
        if key == "weight" and spec is not None:
            total += stored_weight_bytes(tensor.shape, spec)
        else:
            total += fp32_bytes(tensor)
    return total


def _unit_keys(model: nn.Module, units: dict[str, nn.Module]) -> set[str]:
    return {_prefix(name) + key for name, module in units.items() for key in module.state_dict()}


def fixed_bytes(model: nn.Module) -> int:
    """Bytes of everything outside the quantizable units (norms, time-mix, ...), stored as float32."""
    claimed = _unit_keys(model, quantizable_units(model))
    return sum(fp32_bytes(t) for key, t in model.state_dict().items() if key not in claimed)


def plan_bytes_by_unit(model: nn.Module, plan: QuantPlan) -> dict[str, int]:
    """Stored bytes of every quantizable unit under ``plan`` (units it does not quantize: fp32)."""
    plan.validate(model)
    return {name: unit_bytes(module, plan.units.get(name)) for name, module in quantizable_units(model).items()}


def plan_bytes(model: nn.Module, plan: QuantPlan) -> int:
    """Total stored bytes of ``model`` quantized by ``plan``: codes + scales + zero-points + float tensors."""
    return fixed_bytes(model) + sum(plan_bytes_by_unit(model, plan).values())


def safetensors_tensor_bytes(path: str | os.PathLike) -> int:
    """Sum of tensor bytes in a safetensors file, read from its header (the header itself not counted)."""
    with open(path, "rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    return sum(end - start for key, entry in header.items() if key != "__metadata__"
               for start, end in [entry["data_offsets"]])


def memory_report(model: nn.Module, folder: str | os.PathLike | None = None) -> dict:
    """Parameters and bytes (as stored vs as FP32) per unit and in total, for a float or loaded packed
    model. Tensors outside the quantizable units are grouped by the kind of module that owns them."""
    units = quantizable_units(model)
    rows = []
    for name, module in units.items():
        parameters = unit_parameter_count(module)
        stored = sum(t.nbytes for t in module.state_dict().values())
        if isinstance(module, PackedUnit):
            rows.append({"name": name, "parameters": parameters, "spec": module.spec.describe(),
                         "bytes_fp32": 4 * parameters, "bytes": stored})
        else:
            rows.append({"name": name, "parameters": parameters, "spec": "fp32",
                         "bytes_fp32": sum(fp32_bytes(t) for t in module.state_dict().values()), "bytes": stored})
    claimed = _unit_keys(model, units)
    parameter_names = {name for name, _ in model.named_parameters()}
    others: dict[str, dict] = defaultdict(lambda: {"parameters": 0, "bytes_fp32": 0, "bytes": 0})
    for key, tensor in model.state_dict().items():
        if key in claimed:
            continue
        owner = type(model.get_submodule(key.rpartition(".")[0])).__name__
        group = others[owner]
        group["parameters"] += tensor.numel() if key in parameter_names else 0
        group["bytes_fp32"] += fp32_bytes(tensor)
        group["bytes"] += tensor.nbytes
    rows += [{"name": f"other: {owner}", "spec": "fp32", **group} for owner, group in others.items()]
    report = {"parameters": sum(r["parameters"] for r in rows), "bytes_fp32": sum(r["bytes_fp32"] for r in rows),
              "bytes": sum(r["bytes"] for r in rows), "units": rows}
    if folder is not None:
        from ..models.zoo import WEIGHTS_FILE

        folder = Path(folder)
        if (folder / WEIGHTS_FILE).is_file():
            report["file_bytes"] = (folder / WEIGHTS_FILE).stat().st_size
        if (folder / PLAN_FILE).is_file():
            plan = QuantPlan.load(folder / PLAN_FILE)
            report["neurons"] = {name: spec.describe() for name, spec in plan.neurons.items()}
    return report
