"""What the code of a model really executes, counted per quantizable unit while it runs.

    ops = measure_op_counts(model, run_calibration)        # run_calibration() returns #sequences it ran
    ops.units["blocks.0.att.key"].acs, ops.macs

**Operation counts** come from forward hooks on every quantizable unit (as ``qslm.quant.units``
defines them, packed stand-ins included) while the model runs on calibration data; they are averaged
per inference, **one inference being one input sequence** (the number ``run_fn`` returns):

* Linear / Conv whose input is binary on that call (spikes: every value in {0, 1}): accumulates
  ``ACs = dense MACs x nonzero fraction of the input``, which for a Linear is exactly
  ``nonzero inputs x out_features`` (fan-out); for a Conv it is the fan-out averaged over positions.
* Otherwise dense ``MACs = output elements x fan-in``; for a Linear ``input vectors x in x out``.
* Embedding (any unit called with integer indices): no arithmetic; it reads the rows it looks up
  (``lookups x embedding_dim`` weights).
* Weight reads of a Linear / Conv: every weight once per model forward (the weights of one forward
  stay in the compute array while it runs over all time steps; deployment batch size 1), so
  ``calls per forward x weight count`` per inference.

Run the calibration at batch size 1 for figures exact per sequence: a batched run also counts its
padding, and an index tensor shared by the batch (positions) is counted once per batch.

Bias additions, norms, neuron updates and the spike-matrix products of spiking attention are not
counted: they hold no quantizable weights, so no bit-width choice changes them.

Counts are measured once, on the float model: weight bit-widths change the cost of each operation,
not how many there are. Quantization can shift spike rates a little (fewer or more nonzero inputs);
to account for that, call ``measure_op_counts`` again on the quantized model.

Energy and latency follow from these counts: ``qslm.analysis.energy``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import QslmError
from ..quant.units import matmul_ops, quantizable_units, unit_tensor, weight_view_ops
from .neurons import is_binary


@dataclass
class UnitOps:
    """What one unit executes per inference (averaged over the calibration run)."""
    name: str
    kind: str  # module class name
    weights: int  # weight elements
    fan_in: int  # weights per output element (Linear: in_features; Embedding: embedding_dim)
    calls: float = 0.0  # per model forward
    input_elements: float = 0.0  # float inputs only
    nonzero_inputs: float = 0.0
    macs: float = 0.0
    acs: float = 0.0
    lookups: float = 0.0  # rows looked up (integer inputs)
    weight_reads: float = 0.0  # weight elements read
    spike_calls: float = 0.0  # calls (per model forward) whose input was binary

    @property
    def input(self) -> str:
        """'spikes', 'dense', 'mixed' (both seen), 'ids' (embedding lookups) or 'unused'."""
        if self.lookups:
            return "ids"
        if not self.calls:
            return "unused"
        if self.spike_calls == self.calls:
            return "spikes"
        return "dense" if not self.spike_calls else "mixed"

    @property
    def input_rate(self) -> float | None:
        """Fraction of nonzero input elements (the firing rate when the input is spikes)."""
        if not self.input_elements:
            return None
        return self.nonzero_inputs / self.input_elements

    def to_dict(self) -> dict:
        return {**asdict(self), "input": self.input, "input_rate": self.input_rate}


@dataclass
class OpCounts:
    inferences: int
    forwards: int  # model forward calls during the measurement
    units: dict[str, UnitOps]

    @property
    def macs(self) -> float:
        return sum(u.macs for u in self.units.values())

    @property
    def acs(self) -> float:
        return sum(u.acs for u in self.units.values())

    def to_dict(self) -> dict:
        return {"inferences": self.inferences, "forwards": self.forwards, "macs": self.macs, "acs": self.acs,
                "units": {name: u.to_dict() for name, u in self.units.items()}}

    @classmethod
    def from_dict(cls, raw: dict) -> "OpCounts":
        fields = set(UnitOps.__dataclass_fields__)
        units = {name: UnitOps(**{k: v for k, v in u.items() if k in fields}) for name, u in raw["units"].items()}
        return cls(int(raw["inferences"]), int(raw["forwards"]), units)


class OpCounter(TorchFunctionMode):
    """Context manager: count the operations of every unit of ``model`` while it runs. Call
    ``result(inferences)`` after the block for the per-inference ``OpCounts``.

    Every torch function call is seen (a ``TorchFunctionMode``), so a weight counts wherever the code
    uses it: an ``nn.Linear``, a bare parameter through ``F.linear``, ``@``, ``torch.matmul``,
    ``torch.einsum`` (two operands), ``F.embedding``, a convolution, ``F.bilinear``; views and casts of
    a weight (``.t()``, ``.T``, ``.to(dtype)``) keep its identity. A tied weight is one unit, whichever
    place it is used from."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.units = quantizable_units(model)
        self._ids: dict[int, str] = {}
        self._totals: dict[str, UnitOps] = {}
        self._forwards = 0
        self._handle = None
        self._transparent = weight_view_ops()
        self._matmuls = matmul_ops()

    def __enter__(self) -> "OpCounter":
        self._forwards = 0
        self._totals = {name: UnitOps(name, unit.kind, unit.numel, unit.numel // max(unit.shape[0], 1))
                        for name, unit in self.units.items()}
        # Float parameters are known by identity; a packed unit's dequantized weight carries its name.
        self._ids = {id(unit_tensor(self.model, unit)): name for name, unit in self.units.items()
                     if unit.packed is None}
        self._handle = self.model.register_forward_hook(self._count_forward)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _count_forward(self, module, inputs, output) -> None:
        self._forwards += 1

    def _unit_of(self, value) -> str | None:
        if not isinstance(value, torch.Tensor):
            return None
        return getattr(value, "qslm_unit", None) or self._ids.get(id(value))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with torch.no_grad():
            self._count(func, args, kwargs, out)
        return out

    def _count(self, func, args, kwargs, out) -> None:
        if func in self._transparent:
            name = self._unit_of(args[0]) if args else None
            if name is not None and isinstance(out, torch.Tensor):
                out.qslm_unit = name
            return
        if func is F.linear:
            self._dense(args[1] if len(args) > 1 else kwargs.get("weight"), args[0], out, contraction=None)
        elif func is F.embedding:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self._unit_of(weight)
            if name is not None:
                ops = self._totals[name]
                ops.calls += 1
                ops.lookups += args[0].numel()
        elif func in (F.conv1d, F.conv2d, F.conv3d):
            self._dense(args[1] if len(args) > 1 else kwargs.get("weight"), args[0], out, contraction=None)
        elif func in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            if self._unit_of(weight) is not None:
                self._record(self._unit_of(weight), args[0], args[0].numel() * weight[0].numel())
        elif func is F.bilinear:
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            if self._unit_of(weight) is not None:
                self._record(self._unit_of(weight), args[0], out.numel() * weight[0].numel())
        elif func in self._matmuls and len(args) >= 2:
            a, b = args[0], args[1]
            if self._unit_of(b) is not None:
                self._dense(b, a, out, contraction=a.shape[-1])
            elif self._unit_of(a) is not None:
                self._dense(a, b, out, contraction=a.shape[-1])
        elif func is torch.einsum:
            operands = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            named = [i for i, x in enumerate(operands) if self._unit_of(x) is not None]
            if len(operands) == 2 and len(named) == 1:
                letters = {}
                inputs = str(args[0]).replace(" ", "").split("->")[0].split(",")
                for spec, operand in zip(inputs, operands):
                    for letter, size in zip(spec.replace("...", ""), operand.shape[-len(spec.replace("...", "")):]):
                        letters[letter] = size
                batch = math.prod(operands[1 - named[0]].shape[:-len(inputs[1 - named[0]].replace("...", ""))]) \
                    if "..." in inputs[1 - named[0]] else 1
                self._record(self._unit_of(operands[named[0]]), operands[1 - named[0]],
                             batch * math.prod(letters.values()))

    def _dense(self, weight, x, out, contraction: int | None) -> None:
        name = self._unit_of(weight)
        if name is None or not isinstance(out, torch.Tensor):
            return
        fan_in = contraction if contraction is not None else weight[0].numel()
        self._record(name, x, out.numel() * fan_in)

    def _record(self, name: str, x, dense_macs: float) -> None:
        ops = self._totals[name]
        ops.calls += 1
        ops.weight_reads += ops.weights
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not x.numel():
            ops.macs += dense_macs
            return
        nonzero = float(torch.count_nonzero(x))
        ops.input_elements += x.numel()
        ops.nonzero_inputs += nonzero
        if is_binary(x):
            ops.spike_calls += 1
            ops.acs += dense_macs * nonzero / x.numel()
        else:
            ops.macs += dense_macs

    def result(self, inferences: int) -> OpCounts:
        if not isinstance(inferences, int) or isinstance(inferences, bool) or inferences <= 0:
            raise QslmError(f"the number of inferences must be a positive integer, got {inferences!r}")
        if not self._forwards:
            raise QslmError("the calibration run never called the model, so no operations were counted")
        units = {}
        for name, total in self._totals.items():
            unit = UnitOps(total.name, total.kind, total.weights, total.fan_in)
            for key in ("input_elements", "nonzero_inputs", "macs", "acs", "lookups"):
                setattr(unit, key, getattr(total, key) / inferences)
            # Calls, and so Linear/Conv weight reads, are per forward: at deployment batch size 1 a
            # forward runs one sequence, whatever batch the calibration run used.
            unit.calls = total.calls / self._forwards
            unit.spike_calls = total.spike_calls / self._forwards
            unit.weight_reads = total.weight_reads / self._forwards + unit.lookups * unit.fan_in
            units[name] = unit
        return OpCounts(inferences, self._forwards, units)


def measure_op_counts(model: nn.Module, run_fn: Callable[[], int], inferences: int | None = None) -> OpCounts:
    """Run ``run_fn()`` (the model on calibration data) and count operations per inference.

    ``run_fn`` returns how many inferences (input sequences) it ran, unless ``inferences`` is given.
    Measure on the float model (see the module docstring) or on a quantized one to re-measure spikes."""
    with OpCounter(model) as counter:
        returned = run_fn()
    if inferences is None:
        if isinstance(returned, bool) or not isinstance(returned, int):
            raise QslmError("run_fn must return how many inferences (input sequences) it ran, or pass "
                            f"inferences=N; it returned a {type(returned).__name__}")
        inferences = returned
    return counter.result(inferences)
