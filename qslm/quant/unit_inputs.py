"""Calibration inputs of every unit, kept as second moments: ``H = 2/n * sum x x^T`` per unit.

    with UnitInputRecorder(model) as recorder:
        for ids in batches:
            model(ids)
    hessians = recorder.hessians()          # unit name -> UnitHessian

A unit's input is what it is contracted with, wherever it is used: ``F.linear`` (an ``nn.Linear`` or a
bare parameter), ``x @ W.t()`` / ``W @ x`` / ``torch.matmul``; views and casts of the weight keep its
identity (the same rules as the op counter in ``qslm.analysis.ops``). Only the running sum of
``x x^T`` is kept, in float64, so memory is cols^2 per unit, not the activations.

What is not recorded, and so has no Hessian (GPTQ refuses such a unit by name; a codebook falls back
to uniform weighting): embeddings (an index look-up has no float input), convolutions (their
unfolded inputs are not gathered), ``x @ W`` contracting the weight's first dimension (the stored
rows would be inputs, not outputs), einsum, and units never called on float inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import QslmError
from ..model_inputs import run_checked
from .quantizer import matrix_shape
from .units import matmul_ops, quantizable_units, unit_tensor, weight_view_ops


@dataclass
class UnitHessian:
    """Sum of ``x x^T`` (float64 [cols, cols]) over the ``samples`` input vectors a unit saw."""
    xtx: torch.Tensor
    samples: int

    @property
    def hessian(self) -> torch.Tensor:
        """GPTQ's ``H = 2 X X^T`` averaged over samples (float64)."""
        return self.xtx * (2.0 / max(self.samples, 1))

    def output_error(self, delta: torch.Tensor) -> float:
        """The mean over the recorded inputs x of ``||delta x||^2``, for a change ``delta`` of the weight
        (its [rows, cols] view): how far a quantized unit's outputs move on its calibration inputs."""
        d = delta.detach().reshape(matrix_shape(delta.shape)).to(device=self.xtx.device, dtype=torch.float64)
        return float(((d @ self.xtx) * d).sum()) / max(self.samples, 1)


class UnitInputRecorder(TorchFunctionMode):
    """Context manager: accumulate the input second moments of every float unit of ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        units = quantizable_units(model)
        self._columns = {name: matrix_shape(unit.shape)[1] for name, unit in units.items()}
        self._ids = {id(unit_tensor(model, unit)): name for name, unit in units.items() if unit.packed is None}
        # id(view) -> (unit, transposed, view): the view is kept alive so its id is not reused
        self._views: dict[int, tuple[str, bool, torch.Tensor]] = {}
        self._sums: dict[str, UnitHessian] = {}
        self._transparent = weight_view_ops()
        self._matmuls = matmul_ops()
        T = torch.Tensor
        self._swaps = frozenset([T.t, torch.t, T.transpose, torch.transpose, T.permute, torch.permute,
                                 T.T.__get__, T.mT.__get__])

    def __enter__(self) -> "UnitInputRecorder":
        self._views.clear()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._views.clear()

    def _unit_of(self, value) -> tuple[str, bool] | None:
        """(unit name, transposed) when ``value`` is a unit's weight or a 2-D view of it."""
        if not isinstance(value, torch.Tensor):
            return None
        if id(value) in self._ids:
            return self._ids[id(value)], False
        view = self._views.get(id(value))
        if view is None or view[2] is not value:
            return None
        return view[0], view[1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with torch.no_grad():
            self._see(func, args, kwargs, out)
        return out

    def _see(self, func, args, kwargs, out) -> None:
        if func in self._transparent:
            source = self._unit_of(args[0]) if args else None
            # Only 2-D views keep a known orientation (a transpose of a matrix swaps its two dims).
            swap = func in self._swaps
            if (source is not None and isinstance(out, torch.Tensor) and out.dim() == 2 and args[0].dim() == 2
                    and (swap or out.shape == args[0].shape)):
                self._views[id(out)] = (source[0], source[1] != swap, out)
            return
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            found = self._unit_of(weight)
            if found is not None and not found[1]:
                self._add(found[0], args[0] if args else kwargs.get("input"))
        elif func in self._matmuls and len(args) >= 2:
            a, b = args[0], args[1]
            right, left = self._unit_of(b), self._unit_of(a)
            if right is not None and right[1]:  # x @ W.t(): contracts the weight's columns
                self._add(right[0], a)
            elif left is not None and not left[1] and isinstance(b, torch.Tensor) and b.dim() >= 2:  # W @ x
                self._add(left[0], b.transpose(-1, -2))

    def _add(self, name: str, x) -> None:
        columns = self._columns[name]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.shape[-1] != columns:
            return
        rows = x.detach().reshape(-1, columns).to(torch.float32)
        entry = self._sums.get(name)
        if entry is None:
            entry = self._sums[name] = UnitHessian(torch.zeros(columns, columns, dtype=torch.float64), 0)
        # one call's product in float32 (a float64 product costs twice the time; spikes' products are exact
        # integers), summed over calls in float64
        entry.xtx += (rows.t() @ rows).to(device=entry.xtx.device, dtype=torch.float64)  # kept on the CPU
        entry.samples += rows.shape[0]

    def hessians(self) -> dict[str, UnitHessian]:
        """Unit name -> its accumulated inputs, for every unit that was called on float inputs."""
        return dict(self._sums)


@torch.no_grad()
def record_hessians(model: nn.Module, batches, reset: Callable[[nn.Module], object] | None = None
                    ) -> dict[str, UnitHessian]:
    """Run ``model`` on each batch (a model input: a tensor, a tuple of positional or a dict of keyword
    arguments; ``reset(model)`` before each, to clear neuron state) and return the Hessians. A batch the
    model fails on is named in the error (``Task.quantizer_calibration[3]`` for a Task's, else ``batches[3]``)."""
    with UnitInputRecorder(model) as recorder:
        seen = sum(1 for _ in run_checked(model, batches, reset, "batches"))
    if not seen:
        raise QslmError("no calibration batches were given, so no unit inputs were recorded")
    return recorder.hessians()
