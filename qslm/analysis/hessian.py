"""Hessian-trace sensitivity (HAWQ-V2/V3): Hutchinson's estimator tr(H) ~ E_v[v^T H v] with Rademacher
vectors v, per unit, of the output-damage loss on the calibration inputs
(``OutputReference.surrogate_loss``: no labels needed). Hessian-vector products come from double backward,
which also runs through the LIF surrogate gradients."""
from __future__ import annotations

import torch
from torch import nn

from ..model_inputs import call_model
from .sensitivity import OutputReference


def hutchinson_traces(model: nn.Module, weights: dict[str, torch.Tensor], reference: OutputReference,
                      samples: int = 4, max_batches: int = 2, seed: int = 0) -> dict[str, float]:
    """Estimated Hessian trace of the damage loss w.r.t. each unit's weight (unit name -> parameter)."""
    names = list(weights)
    params = [weights[name] for name in names]
    requires = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    traces = {name: 0.0 for name in names}
    try:
        batches = reference.inputs[:max_batches]
        for index, item in enumerate(batches):
            if reference.reset is not None:
                reference.reset(model)
            loss = reference.surrogate_loss(call_model(model, item), index) / max(reference.positions_of(index), 1)
            # A unit the loss does not reach (e.g. an unused head) has no gradient: its trace stays 0.
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            for _ in range(samples if used else 0):
                vectors = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
                hv = torch.autograd.grad([grads[i] for i in used], [params[i] for i in used],
                                         grad_outputs=[vectors[i] for i in used], retain_graph=True, allow_unused=True)
                for i, h in zip(used, hv):
                    if h is not None:
                        traces[names[i]] += float((h * vectors[i]).sum())
        n = samples * len(batches)
        return {name: value / n for name, value in traces.items()}
    finally:
        for p, flag in zip(params, requires):
            p.requires_grad_(flag)
            p.grad = None
