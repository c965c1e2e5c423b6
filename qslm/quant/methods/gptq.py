"""GPTQ (Frantar et al. 2022): rounding with Hessian-based error compensation, post-training.

The weight is a matrix W [rows, cols] whose columns are contracted with the unit's inputs, and
H = 2 X X^T (from ``qslm.quant.unit_inputs``) measures how much an error in each input direction
costs in the unit's output. Columns are quantized one at a time, in order (or, with act-order, by
descending diag(H)); the rounding error of a column, divided by the matching diagonal entry of the
upper Cholesky factor U of H^-1, is pushed onto the columns not yet quantized along U's row, so they
absorb what was lost. Updates are applied lazily in blocks of ``block_size`` columns: within a block
eagerly, to the rest of the matrix once per block (one matrix product).

The result is stored exactly as rtn's: codes + scales (+ zero-points) on the spec's uniform grid, in
the original column order (act-order's permutation is undone), so packing and bytes do not change
(float16 scales are rounded at the end, as rtn's).
Scales come from the spec's observer like rtn's: per-tensor and per-channel ones from the original
weight; a group's scale is chosen when its first column is reached, from the values its columns hold
at that moment (earlier columns' compensation included).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...errors import QslmError
from ..quantizer import (
    QuantizedTensor,
    QuantSpec,
    check_group_size,
    dequantize_groups,
    fit_groups,
    grid_codes,
    grouped,
    matrix_shape,
    with_stored_scales,
)
from ..context import GptqOptions
from ..widths import GRID_BITS
from .grid import GridMethod
from .registry import Needs

if TYPE_CHECKING:
    from ..context import QuantContext

NAME = "gptq"


def inverse_cholesky(hessian: torch.Tensor, damping: float, unit: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damping * mean(diag H) * I)^-1, float64. Inputs that were always
    zero (diag 0) get a unit diagonal: their weights meet no input, so their errors cost nothing and
    move nothing."""
    h = hessian.to(torch.float64).clone()
    dead = torch.diagonal(h) <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    mean_diag = float(torch.diagonal(h).mean())
    h.diagonal().add_(damping * mean_diag)
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info):
        raise QslmError(f"unit {unit!r}: its Hessian is not positive definite even with damping {damping}; "
                        "raise the GPTQ damping or give more calibration inputs")
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


class _GroupScales:
    """Scales (and zero-points) per stored group, chosen on first use from the then current weights."""

    def __init__(self, rows: int, cols: int, spec: QuantSpec):
        self.spec = spec
        self.group_len = spec.group_size if spec.granularity == "group" else cols
        self.per_row = spec.granularity != "per-tensor"
        n = (rows * cols // self.group_len) if self.per_row else 1
        self.scale = torch.zeros(n, dtype=torch.float32)
        self.zero_point = None if spec.symmetric else torch.zeros(n, dtype=torch.float32)
        self.groups_per_row = cols // self.group_len
        self.fitted: set[int] = set()
        self._columns: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}  # a fitted group's, read per column

    def fit(self, column_group: int, values: torch.Tensor) -> None:
        """values [rows, group_len]: the current weights of column group ``column_group``."""
        x = values if self.per_row else values.reshape(1, -1)
        scale, zero_point = fit_groups(x, self.spec)
        index = self.indices(column_group)
        self.scale[index] = scale.squeeze(1)
        if self.zero_point is not None:
            self.zero_point[index] = zero_point.squeeze(1)
        self.fitted.add(column_group)
        self._columns.pop(column_group, None)

    def indices(self, column_group: int) -> torch.Tensor | int:
        if not self.per_row:
            return 0
        rows = self.scale.numel() // self.groups_per_row
        return torch.arange(rows) * self.groups_per_row + column_group

    def column(self, column_group: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale and zero-point for every row of a column in ``column_group`` ([rows] or [1]), once fitted."""
        if column_group not in self._columns:
            index = self.indices(column_group)
            self._columns[column_group] = (self.scale[index].reshape(-1),
                                           None if self.zero_point is None else self.zero_point[index].reshape(-1))
        return self._columns[column_group]


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, spec: QuantSpec, hessian: torch.Tensor, options: GptqOptions = GptqOptions(),
                  unit: str = "weight") -> QuantizedTensor:
    """GPTQ codes for ``w`` (any shape; viewed as [rows, cols]) given its input Hessian [cols, cols]."""
    if spec.method != NAME:
        raise QslmError(f"unit {unit!r}: gptq_quantize needs a gptq spec, got {spec.describe()}")
    check_group_size(w.shape, spec, f"unit {unit!r}")
    rows, cols = matrix_shape(w.shape)
    if tuple(hessian.shape) != (cols, cols):
        raise QslmError(f"unit {unit!r}: its Hessian is {list(hessian.shape)} but its weight {list(w.shape)} "
                        f"has {cols} input columns; record the Hessians on this model")
    hessian = hessian.to("cpu")
    original = w.detach().to(device="cpu", dtype=torch.float32).reshape(rows, cols)  # beside the Hessian
    order = (torch.argsort(torch.diagonal(hessian), descending=True, stable=True) if options.act_order
             else torch.arange(cols))
    weight = original[:, order].clone()
    u = inverse_cholesky(hessian[order][:, order], options.damping, unit).to(torch.float32)
    scales = _GroupScales(rows, cols, spec)
    if spec.granularity != "group":
        scales.fit(0, original)  # one range per row (or tensor) from the weight as it is, as rtn
    position = torch.empty(cols, dtype=torch.long)
    position[order] = torch.arange(cols)  # original column -> its place in processing order
    codes = torch.zeros(rows, cols, dtype=torch.float32)
    for start in range(0, cols, options.block_size):
        end = min(start + options.block_size, cols)
        block = weight[:, start:end].clone()
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column = int(order[start + i])
            group = column // scales.group_len
            if group not in scales.fitted:
                members = position[group * scales.group_len:(group + 1) * scales.group_len]
                scales.fit(group, _current(weight, block, errors, u, members, start, i))
            scale, zero_point = scales.column(group)
            code = grid_codes(block[:, i:i + 1], scale[:, None], None if zero_point is None else zero_point[:, None],
                              spec)
            codes[:, column] = code.squeeze(1)
            quantized = dequantize_groups(code, scale, zero_point, spec).squeeze(1)
            error = (block[:, i] - quantized) / u[start + i, start + i]
            block[:, i:] -= error[:, None] * u[start + i, start + i:end][None, :]
            errors[:, i] = error
        weight[:, start:end] = block
        weight[:, end:] -= errors @ u[start:end, end:]
    zero_point = None if scales.zero_point is None else scales.zero_point.to(torch.int32)
    return with_stored_scales(QuantizedTensor(grouped(codes, spec).to(torch.int32), scales.scale, zero_point, spec,
                                              w.shape))


def _current(weight: torch.Tensor, block: torch.Tensor, errors: torch.Tensor, u: torch.Tensor,
             members: torch.Tensor, start: int, i: int) -> torch.Tensor:
    """Values the columns at processing positions ``members`` hold now, with column ``start + i``
    about to be quantized: inside the block its running copy, beyond it the weight plus the updates
    of the block's first ``i`` columns that the lazy batch has not applied yet."""
    end = start + block.shape[1]
    values = weight[:, members].clone()
    inside = (members >= start) & (members < end)
    values[:, inside] = block[:, members[inside] - start]
    beyond = members >= end
    if i and bool(beyond.any()):
        values[:, beyond] -= errors[:, :i] @ u[start:start + i][:, members[beyond]]
    return values


class Gptq(GridMethod):
    """rtn's grid and storage, codes chosen with Hessian-based error compensation (``QuantContext.gptq``
    options)."""
    name = NAME
    bits = GRID_BITS
    needs = uses = Needs.HESSIANS
    colour = "tab:orange"
    default = True

    def quantize(self, weight: torch.Tensor, spec: QuantSpec, context: "QuantContext | None", unit: str
                 ) -> QuantizedTensor:
        # the caller checked ``needs``: the context holds this unit's Hessian
        return gptq_quantize(weight, spec, context.hessian(unit).hessian, context.gptq, unit)
