"""Non-uniform quantization: ``2**bits`` levels per group (per row, per group of columns, or one for the
tensor, as the spec's granularity says) fitted by weighted k-means, SqueezeLLM-style.

Each weight is stored as a ``bits``-bit index into its group's levels; the levels are float16
(``2**bits`` per group), sorted ascending. Fitting is deterministic: Lloyd's algorithm (nearest-level
assignment, then weighted means; an empty level keeps its value; at most ``LLOYD_ITERATIONS`` steps)
runs from two starts, the weighted quantiles ``(k + 1/2) / 2**bits`` of the group's values and
``2**bits`` evenly spaced levels over its range, and each group keeps the result with the lower
weighted squared error (quantiles alone can settle on a poor optimum for heavy-tailed groups). The weight
of an element is the Hessian diagonal of its input column when one is given (how much an error there
costs in the output), else 1. Indices are finally chosen against the float16 levels, so they are
nearest to the values actually stored.

Stored as ``codes`` (the indices, packed like any codes) and ``codebook`` float16 [G * 2**bits]: group g's
sorted levels at [g*2**bits, (g+1)*2**bits). Its levels are free, so there is no zero-point and no clipping
observer (a codebook spec keeps ``symmetric`` true and the ``mse`` observer), and bits are 2..8.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...errors import QslmError
from ..bits import pack_codes, packed_size, unpack_codes
from ..quantizer import QuantSpec, check_group_size, group_count, grouped, matrix_shape
from .registry import Needs, QuantMethod, StoredTensor

if TYPE_CHECKING:
    from ..context import QuantContext

NAME = "codebook"
BITS = (2, 3, 4, 5, 6, 8)  # 2**bits float16 levels per group: 16 bits would store more than float16 weights
LLOYD_ITERATIONS = 25
FLOAT16_MAX = float(torch.finfo(torch.float16).max)


@dataclass
class CodebookTensor:
    """Indices [n_groups, group_len] (int32 in [0, 2**bits)), codebook [n_groups, 2**bits] float16."""
    codes: torch.Tensor
    codebook: torch.Tensor
    spec: QuantSpec
    shape: torch.Size

    def dequantize(self) -> torch.Tensor:
        return dequantize_codebook(self.codes, self.codebook).reshape(self.shape)


def dequantize_codebook(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The one codebook look-up, shared by fake quantization and packed modules: level[group][index]."""
    return torch.gather(codebook.to(torch.float32), 1, codes.to(torch.int64))


def _nearest(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``levels`` [n, K] for every x [n, len] (ties to the lower)."""
    midpoints = (levels[:, 1:] + levels[:, :-1]) / 2
    if midpoints.shape[1] > 7:
        return torch.searchsorted(midpoints.contiguous(), x.contiguous(), side="left")
    # few levels: counting the midpoints below x is the same index, and faster than a search per element
    index = torch.zeros(x.shape, dtype=torch.int64)
    for k in range(midpoints.shape[1]):
        index += x > midpoints[:, k:k + 1]
    return index


def _weighted_quantiles(x: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.argsort(x, dim=1, stable=True)
    values, w = torch.gather(x, 1, order), torch.gather(weights, 1, order)
    cumulative = torch.cumsum(w, dim=1)
    cumulative = cumulative / cumulative[:, -1:]
    targets = (torch.arange(k, dtype=x.dtype) + 0.5) / k
    index = torch.searchsorted(cumulative.contiguous(), targets.expand(x.shape[0], k).contiguous())
    return torch.gather(values, 1, index.clamp_(max=x.shape[1] - 1))


def _lloyd(x: torch.Tensor, weights: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Lloyd steps on every group whose levels still move; a group whose step left them unchanged stays
    so (the step is a function of its levels alone), so it leaves the loop with the same result."""
    levels = levels.clone()
    moving = torch.arange(x.shape[0])
    for _ in range(LLOYD_ITERATIONS):
        if not len(moving):
            break
        xs, ws, current = x[moving], weights[moving], levels[moving]
        index = _nearest(xs, current)
        mass = torch.zeros_like(current).scatter_add_(1, index, ws)
        total = torch.zeros_like(current).scatter_add_(1, index, ws * xs)
        updated = torch.where(mass > 0, total / mass.clamp_min(1e-30), current)
        updated, _ = torch.sort(updated, dim=1)
        levels[moving] = updated
        moving = moving[(updated != current).any(dim=1)]
    return levels


def _weighted_error(x: torch.Tensor, weights: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Weighted squared error [n] of x [n, len] at its nearest levels."""
    return (weights * (x - torch.gather(levels, 1, _nearest(x, levels))).square()).sum(dim=1)


def element_weights(shape: torch.Size | tuple[int, ...], hessian_diagonal: torch.Tensor | None) -> torch.Tensor:
    """Per-element k-means weights [rows, cols]: the input column's Hessian diagonal, floored so that
    no group has zero total weight; all ones without a Hessian."""
    rows, cols = matrix_shape(shape)
    if hessian_diagonal is None:
        return torch.ones(rows, cols)
    diagonal = hessian_diagonal.to(torch.float32).reshape(-1)
    mean = float(diagonal.mean()) if diagonal.numel() else 0.0
    if not mean > 0:
        return torch.ones(rows, cols)
    return (diagonal / mean).clamp_min(1e-6).expand(rows, cols)


@torch.no_grad()
def codebook_quantize(w: torch.Tensor, spec: QuantSpec, hessian_diagonal: torch.Tensor | None = None,
                      unit: str = "weight") -> CodebookTensor:
    """Fit ``2**bits`` float16 levels per group of ``w`` and index every weight to its nearest level."""
    if spec.method != NAME:
        raise QslmError(f"unit {unit!r}: codebook_quantize needs a codebook spec, got {spec.describe()}")
    check_group_size(w.shape, spec, f"unit {unit!r}")
    cols = matrix_shape(w.shape)[1]
    if hessian_diagonal is not None and hessian_diagonal.numel() != cols:
        raise QslmError(f"unit {unit!r}: its Hessian diagonal has {hessian_diagonal.numel()} entries but its "
                        f"weight {list(w.shape)} has {cols} input columns")
    x = grouped(w.detach().to(device="cpu", dtype=torch.float32), spec)  # fitted on the CPU, beside the Hessian
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak > FLOAT16_MAX:
        raise QslmError(f"unit {unit!r}: a weight of magnitude {peak:g} does not fit a float16 codebook "
                        f"(at most {FLOAT16_MAX:g}); use method rtn for it")
    weights = grouped(element_weights(w.shape, hessian_diagonal).contiguous(), spec)
    k = 2 ** spec.bits
    lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    even = lo + (hi - lo) * torch.linspace(0.0, 1.0, k)[None, :]
    candidates = [_lloyd(x, weights, start) for start in (_weighted_quantiles(x, weights, k), even)]
    errors = [_weighted_error(x, weights, levels) for levels in candidates]
    levels = torch.where((errors[1] < errors[0])[:, None], candidates[1], candidates[0])
    codebook = levels.to(torch.float16)
    codes = _nearest(x, codebook.to(torch.float32))
    return CodebookTensor(codes.to(torch.int32), codebook, spec, w.shape)


class Codebook(QuantMethod):
    """Weighted k-means levels per group, weighted by the Hessian diagonal when the context has one."""
    name = NAME
    bits = BITS
    needs = Needs.WEIGHT
    uses = Needs.HESSIANS
    grid = False
    stored_names = ("codes", "codebook")
    colour = "tab:green"
    default = True

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> CodebookTensor:
        hessian = context.hessian(unit) if context is not None else None
        return codebook_quantize(weight, spec, None if hessian is None else torch.diagonal(hessian.xtx), unit)

    def stored_layout(self, shape: tuple[int, ...], spec: QuantSpec) -> list[StoredTensor]:
        return [StoredTensor("codes", packed_size(math.prod(shape), spec.bits), torch.uint8),
                StoredTensor("codebook", group_count(shape, spec) * 2 ** spec.bits, torch.float16)]

    def stored_tensors(self, quantized: CodebookTensor) -> dict[str, torch.Tensor]:
        return {"codes": pack_codes(quantized.codes, quantized.spec.bits),
                "codebook": quantized.codebook.to(torch.float16).reshape(-1)}

    def dequantize_stored(self, stored: Mapping[str, torch.Tensor], spec: QuantSpec, shape: torch.Size
                          ) -> torch.Tensor:
        codebook = stored["codebook"].view(-1, 2 ** spec.bits)
        codes = unpack_codes(stored["codes"], spec.bits, math.prod(shape))
        return dequantize_codebook(codes.view(codebook.shape[0], -1), codebook)
