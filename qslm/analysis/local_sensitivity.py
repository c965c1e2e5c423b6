"""Block-local sensitivity: the damage of quantizing units inside one block, measured by running that
block alone, so that measuring every unit costs time linear in the model's depth.

One forward and backward pass over the calibration inputs (float model) records, for every block, its
inputs, and the gradient at its output of a loss whose curvature measures the output damage (the
cross-entropy with the float model's own predictions for logits, the squared error to the float
outputs otherwise: ``OutputReference.surrogate_loss``; no labels are needed). Quantizing units of block ``i`` then re-runs
block ``i`` alone on its recorded inputs; the change ``d`` of its output is turned into a predicted
damage with the diagonal Fisher approximation used by BRECQ-style reconstruction:

    damage ~= 1/2 * sum((g * d)^2) / n        (g: loss gradient at the block output, n: output positions)

which, like the exact measure, is in nats per target and zero for an unchanged output. The exact
measure (``qslm.analysis.sensitivity``) runs the whole model once per (units, bit-width): with units
growing with depth and each forward pass too, it costs time quadratic in depth. This one costs one
block per measurement. Units outside every block (embedding, head) are few; callers measure them
exactly.

A block must be a function of its call arguments (no state carried between calls): re-running it on
its recorded inputs must give back its recorded output. That is checked once, and a block that fails
it is reported by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import QslmError
from ..model_inputs import call_model
from .sensitivity import OutputReference

# Re-running a block on its own inputs may differ from the recorded pass by float rounding (the
# autograd path and the inference path of an op can differ), which flips a few spikes at threshold.
REPLAY_TOLERANCE = 0.05  # relative L2 error between the replayed and the recorded float output


@dataclass
class BlockRecord:
    """What one calibration batch gave one block: call arguments, float output, loss gradient there."""
    args: tuple
    kwargs: dict
    output: torch.Tensor
    grad: torch.Tensor


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


class BlockLocalSensitivity:
    """Fisher-weighted output error of single blocks. ``damage(block)`` is measured under whatever
    (fake) quantization is applied to the model at the time of the call."""

    def __init__(self, model: nn.Module, block_names: list[str], reference: OutputReference,
                 block_units: dict[str, list[str]] | None = None):
        self.model = model
        # unit -> its block, to route a measurement (``block_holding``)
        self.block_of = {u: b for b, units in (block_units or {}).items() for u in units}
        self.calibration = reference
        modules = dict(model.named_modules())
        missing = [name for name in block_names if name not in modules]
        if missing:
            raise QslmError(f"no module {missing[0]!r} in the model; blocks are {block_names}")
        self.blocks = {name: modules[name] for name in block_names}
        self.records: dict[str, list[BlockRecord]] = {name: [] for name in block_names}
        self.count = 0
        self._record()
        self.reference = {name: self._replay(name) for name in block_names}
        self._check_replay()

    @classmethod
    def for_hierarchy(cls, model: nn.Module, hierarchy, reference: OutputReference) -> "BlockLocalSensitivity":
        return cls(model, [b.name for b in hierarchy.blocks], reference,
                   {b.name: list(b.modules) for b in hierarchy.blocks})

    def block_holding(self, units) -> str | None:
        """The block that holds all of ``units``, or None (units outside blocks, or in several)."""
        owners = {self.block_of.get(u) for u in units}
        return owners.pop() if len(owners) == 1 and None not in owners else None

    def _record(self) -> None:
        reference = self.calibration
        was_training = self.model.training
        self.model.eval()
        try:
            for index, item in enumerate(reference.inputs):
                captured: dict[str, tuple] = {}
                hooks = [block.register_forward_hook(self._capture(name, captured), with_kwargs=True)
                         for name, block in self.blocks.items()]
                try:
                    if reference.reset is not None:
                        reference.reset(self.model)
                    with torch.enable_grad():
                        loss = reference.surrogate_loss(call_model(self.model, item), index)
                        missing = [name for name in self.blocks if name not in captured]
                        if missing:
                            raise QslmError(f"block {missing[0]!r} did not run on the calibration inputs")
                        grads = torch.autograd.grad(loss, [captured[n][2] for n in self.blocks], allow_unused=True)
                finally:
                    for hook in hooks:
                        hook.remove()
                for name, grad in zip(self.blocks, grads):
                    args, kwargs, output = captured[name]
                    grad = torch.zeros_like(output) if grad is None else grad
                    self.records[name].append(BlockRecord(args, kwargs, output.detach(), grad.detach()))
            self.count = reference.positions if reference.measure == "kl" else 1
        finally:
            self.model.train(was_training)

    @staticmethod
    def _capture(name: str, captured: dict):
        def hook(module, args, kwargs, output):
            if not isinstance(output, torch.Tensor):
                raise QslmError(f"block {name!r} returns {type(output).__name__}, not a tensor: "
                                f"block-local sensitivity needs one output tensor per block")
            if name in captured:
                raise QslmError(f"block {name!r} ran twice in one forward pass; block-local sensitivity "
                                f"needs each block called once")
            captured[name] = (_detach(args), _detach(kwargs), output)
        return hook

    @torch.no_grad()
    def _replay(self, name: str) -> list[torch.Tensor]:
        block = self.blocks[name]
        return [block(*r.args, **r.kwargs) for r in self.records[name]]

    def _check_replay(self) -> None:
        for name, records in self.records.items():
            num = sum(float((out - r.output).pow(2).sum()) for out, r in zip(self.reference[name], records))
            den = sum(float(r.output.pow(2).sum()) for r in records)
            error = (num / den) ** 0.5 if den > 0 else num ** 0.5
            if error > REPLAY_TOLERANCE:
                raise QslmError(f"block {name!r} gives another output when re-run on its own inputs "
                                f"(relative error {error:.3f}): it keeps state between calls, so its "
                                f"sensitivity cannot be measured locally; use the exact method")

    @torch.no_grad()
    def damage(self, name: str) -> dict[str, float]:
        """Predicted damage of the block's current (quantized) weights (the Fisher estimate), in the units
        of the exact measure."""
        if name not in self.blocks:
            raise QslmError(f"no block {name!r}; blocks are {sorted(self.blocks)}")
        fisher = 0.0
        for out, ref, record in zip(self._replay(name), self.reference[name], self.records[name]):
            fisher += 0.5 * float((record.grad * (out - ref)).pow(2).sum())
        return {"damage": fisher / self.count, "measure": self.calibration.measure}


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation of two paired lists (no tie correction): how alike the local estimate and
    the exact measure order the same (unit, bit-width) pairs, which is all the tiered search uses."""
    def ranks(values: list[float]) -> torch.Tensor:
        out = torch.empty(len(values))
        out[sorted(range(len(values)), key=values.__getitem__)] = torch.arange(len(values), dtype=out.dtype)
        return out

    return float(torch.corrcoef(torch.stack([ranks(a), ranks(b)]))[0, 1])
