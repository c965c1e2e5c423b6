"""Learned rounding (AdaRound, Nagel et al. 2020): rtn's grid, each weight's rounding direction learned.

rtn's scales and zero-points are kept (the same grid, the same bytes); only whether each weight rounds
down or up is chosen, to move the unit's outputs on its calibration inputs least. With the unit's input
second moments H (``qslm.quant.unit_inputs``: the quantizer calibration, never the validation data) the
output error of a weight change D is ``sum(D H * D)``, so no forward pass is needed.

Each weight w = (floor(w / s) + h) * s on its group's grid, with h = clamp(sigmoid(v) * 1.2 - 0.1, 0, 1)
relaxed to [0, 1] and v started where h is w's fractional position (rtn's choice after rounding). Adam
minimises the output error (relative to rtn's) plus, after a warm-up, a term that pushes every h to 0
or 1, its exponent annealed from 20 to 2 (``LearnedOptions``). Then h is rounded (v >= 0: up).

The result is kept only when its output error is no larger than rtn's, measured exactly (float64), so
the method never does worse than rtn on its own objective. Nothing is random: the same weight, Hessian,
options and torch thread count give the same codes. The codes are ordinary grid codes: packing, bytes
and loading are rtn's.

Opt-in: a search tries it when ``methods`` names it (``--methods rtn,gptq,codebook,learned``); a plan
names it per unit (``{"bits": 3, "method": "learned"}``) with a ``QuantContext`` holding the Hessians.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from ...errors import QslmError
from ..context import LearnedOptions
from ..quantizer import DEFAULT_METHOD, QuantizedTensor, QuantSpec, code_range, grouped, matrix_shape, quantize_tensor
from ..unit_inputs import UnitHessian
from ..widths import GRID_BITS
from .grid import GridMethod
from .registry import Needs

if TYPE_CHECKING:
    from ..context import QuantContext

NAME = "learned"
# AdaRound's stretch of the sigmoid, so h reaches 0 and 1 exactly at finite v
_LOW, _HIGH = -0.1, 1.1


def _relaxed(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (_HIGH - _LOW) + _LOW, 0.0, 1.0)


def learned_rounding(w: torch.Tensor, spec: QuantSpec, hessian: UnitHessian,
                     options: LearnedOptions = LearnedOptions(), unit: str = "weight") -> QuantizedTensor:
    """Codes on rtn's grid for ``w`` (any shape; viewed as [rows, cols]) whose rounding minimises the output
    error on the inputs ``hessian`` summarises; rtn's codes where learning finds nothing better."""
    if spec.method != NAME:
        raise QslmError(f"unit {unit!r}: learned_rounding needs a {NAME!r} spec, got {spec.describe()}")
    rows, cols = matrix_shape(w.shape)
    if tuple(hessian.xtx.shape) != (cols, cols):
        raise QslmError(f"unit {unit!r}: its Hessian is {list(hessian.xtx.shape)} but its weight {list(w.shape)} "
                        f"has {cols} input columns; record the Hessians on this model")
    weight = w.detach().to(torch.float32)
    # rtn's grid, float16 scales applied
    nearest = quantize_tensor(weight, dataclasses.replace(spec, method=DEFAULT_METHOD))
    result = dataclasses.replace(nearest, spec=spec)
    nearest_error = hessian.output_error(nearest.dequantize() - weight)
    if nearest_error <= 0.0:
        return result  # nothing to learn: rtn already reproduces the outputs
    # the search and fake quantization call methods under no_grad or inference mode; learning needs autograd,
    # and tensors made in inference mode cannot be saved for backward, so the inputs are cloned out of it
    with torch.inference_mode(False), torch.enable_grad():
        codes = _learn_codes(grouped(weight, spec).clone(), nearest, hessian, options, rows, cols)
    learned = dataclasses.replace(result, codes=codes)
    if hessian.output_error(learned.dequantize() - weight) > nearest_error:
        return result
    return learned


def _learn_codes(x: torch.Tensor, nearest: QuantizedTensor, hessian: UnitHessian, options: LearnedOptions,
                 rows: int, cols: int) -> torch.Tensor:
    """The learned codes [n_groups, group_len] (int32) of the grouped weight ``x`` on ``nearest``'s grid."""
    spec = nearest.spec
    scale = nearest.scale[:, None].clone()
    centre = (nearest.zero_point.to(torch.float32)[:, None].clone() if nearest.zero_point is not None
              else float(2 ** (spec.bits - 1)))
    low, high = code_range(spec)
    ratio = x / scale
    floor = torch.floor(ratio)
    fraction = (ratio - floor).clamp(1e-4, 1 - 1e-4)
    # v where the relaxed h equals the fraction: the start is rtn's rounding, softened
    v = torch.log((fraction - _LOW) / (_HIGH - fraction)).requires_grad_(True)
    h_matrix = (hessian.xtx / max(hessian.samples, 1)).to(device=x.device, dtype=torch.float32).clone()
    target = x.reshape(rows, cols)

    def output_error(h: torch.Tensor) -> torch.Tensor:
        values = (torch.clamp(floor + centre + h, low, high) - centre) * scale
        d = target - values.reshape(rows, cols)
        return ((d @ h_matrix) * d).sum()

    with torch.no_grad():
        reference = float(output_error((fraction >= 0.5).to(torch.float32)))  # rtn's error, to scale the loss
    optimiser = torch.optim.Adam([v], lr=options.learning_rate)
    warm = int(options.warmup * options.iterations)
    for step in range(options.iterations):
        h = _relaxed(v)
        loss = output_error(h) / max(reference, 1e-30)
        if step >= warm:
            progress = (step - warm) / max(options.iterations - warm - 1, 1)
            beta = options.beta_start + (options.beta_end - options.beta_start) * progress
            loss = loss + options.regularisation * (1 - (2 * h - 1).abs().pow(beta)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return torch.clamp(floor + centre + (v >= 0).to(torch.float32), low, high).to(torch.int32)


class LearnedRounding(GridMethod):
    """rtn's grid and storage, each weight's rounding direction learned on the unit's calibration Hessian
    (``QuantContext.learned`` options)."""
    name = NAME
    bits = GRID_BITS
    needs = uses = Needs.HESSIANS
    colour = "tab:red"
    default = False

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> QuantizedTensor:
        # the caller checked ``needs``: the context holds this unit's Hessian
        return learned_rounding(weight, spec, context.hessian(unit), context.learned, unit)
